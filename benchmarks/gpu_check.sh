#!/bin/bash
# The GPU path on a machine with an NVIDIA GPU: onnxruntime-gpu in its own venv, the gpu-marked
# tests, and the bench with CPU, CUDA and TensorRT rows (twice for TensorRT: the engine build, then
# the cached engine).
#
#   benchmarks/gpu_check.sh [OUT_DIR]          (default OUT_DIR: benchmarks/results/gpu)
#
# Environment:
#   MODEL=file.onnx     the model (default: exported here with HOST_PYTHON, which needs torch)
#   HOST_PYTHON=python  a python with torch for that export (default: .venv/bin/python, else python3)
#   GPU_VENV=dir        the venv (default: /var/tmp/edge-saliency-gpu-venv; reused)
#   ORT_GPU=spec        the onnxruntime-gpu requirement (default: "onnxruntime-gpu[cuda,cudnn]", which
#                       brings CUDA 12 and cuDNN as pip wheels)
#   TENSORRT=0          skip installing TensorRT (pip tensorrt-cu12-libs); TensorRT rows then say why
#   RUNS=300            measured frames per bench row
# On a Jetson use NVIDIA's onnxruntime-gpu wheel for your JetPack instead (deploy/JETSON.md):
#   ORT_GPU=/path/onnxruntime_gpu-...-linux_aarch64.whl TENSORRT=0 benchmarks/gpu_check.sh
# Exit: 0 when the tests pass and the CUDA row ran on the GPU; 2 when there is no NVIDIA GPU here.
set -uo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$HERE/benchmarks/results/gpu}
VENV=${GPU_VENV:-/var/tmp/edge-saliency-gpu-venv}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu[cuda,cudnn]}
RUNS=${RUNS:-300}
if [ -z "${HOST_PYTHON:-}" ]; then
    if [ -x "$HERE/.venv/bin/python" ]; then HOST_PYTHON=$HERE/.venv/bin/python; else HOST_PYTHON=python3; fi
fi
mkdir -p "$OUT"
LOG=$OUT/gpu_check.txt
exec > >(tee "$LOG") 2>&1
say() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    say "no NVIDIA GPU here (nvidia-smi -L fails): nothing to check. The gpu tests skip on such machines:"
    say "  python -m pytest -m gpu tests/integration/test_providers.py -rs"
    exit 2
fi
nvidia-smi -L
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# ---------------------------------------------------------------- the venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { say "python3 -m venv failed"; exit 1; }
fi
PY=$VENV/bin/python
say "installing the project, then $ORT_GPU in place of the CPU onnxruntime (both provide the module onnxruntime)"
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "$HERE" pytest onnx onnxconverter-common || { say "pip install of the project failed"; exit 1; }
$PY -m pip uninstall -q -y onnxruntime >/dev/null 2>&1
$PY -m pip install -q --force-reinstall "$ORT_GPU" || { say "pip install $ORT_GPU failed"; exit 1; }
if [ "${TENSORRT:-1}" != 0 ]; then
    $PY -m pip install -q tensorrt-cu12-libs || say "note: could not install tensorrt-cu12-libs: TensorRT rows will say why"
fi
# CUDA/cuDNN/TensorRT from pip wheels: put their lib folders on the loader path
LIBS=$($PY - <<'EOF'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pat in ("nvidia/*/lib", "tensorrt_libs", "tensorrt_cu12_libs"):
        dirs.update(d for d in glob.glob(os.path.join(sp, pat)) if os.path.isdir(d))
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH=${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
$PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_device(), o.get_available_providers())"

# ---------------------------------------------------------------- the model
MODEL=${MODEL:-$OUT/efficientnet_lite0.onnx}
if [ ! -s "$MODEL" ]; then
    say "exporting the model with $HOST_PYTHON (torch)"
    (cd "$HERE" && PYTHONPATH=$HERE "$HOST_PYTHON" -m edge_saliency export --out "$MODEL") \
        || { say "export failed: pass MODEL=file.onnx"; exit 1; }
fi
export EDGE_SALIENCY_HOME=$OUT/home   # bench variants and the TensorRT cache, kept with the results

# ---------------------------------------------------------------- tests
say "gpu tests"
(cd "$HERE" && EDGE_SALIENCY_TEST_MODEL=$MODEL $PY -m pytest -q -rs -p no:cacheprovider -m gpu tests/integration/test_providers.py)
TESTS=$?

# ---------------------------------------------------------------- bench
rm -rf "$EDGE_SALIENCY_HOME/tensorrt"   # the first TensorRT row includes the engine build
say "bench: cpu, cuda, tensorrt (first start: the TensorRT engine is built)"
$PY -m edge_saliency bench --model "$MODEL" --provider cpu,cuda,tensorrt --runs "$RUNS" --trt-fp16 \
    --json "$OUT/gpu_bench.json"
BENCH=$?
say "bench: tensorrt again (the engine from the cache: compare Load(s))"
$PY -m edge_saliency bench --model "$MODEL" --provider tensorrt --precision fp32 --runs 50 --no-plain --trt-fp16 \
    --json "$OUT/gpu_bench_trt_cached.json"
ls -la "$EDGE_SALIENCY_HOME/tensorrt" 2>/dev/null
CUDA_OK=$($PY -c "
import json; r = json.load(open('$OUT/gpu_bench.json'))
print(int(any(v['provider'] == 'cuda' and v['status'] == 'ok' for v in r['variants'])))" 2>/dev/null)
say "tests exit $TESTS, bench exit $BENCH, CUDA row ran: ${CUDA_OK:-0}; results in $OUT"
[ "$TESTS" = 0 ] && [ "$BENCH" = 0 ] && [ "${CUDA_OK:-0}" = 1 ]
