#!/bin/bash
# Check the device side on ARM64 as a Raspberry Pi OS (Debian 12, 64-bit) user would install it,
# on this x86 machine: a Debian bookworm arm64 root made with debootstrap, run under qemu-user.
#
#   sudo deploy/check_arm64.sh [FOLDER]        (default folder: /var/tmp/edge-saliency-arm64, kept as a cache)
#
# Inside the root, with Debian's python3 and a venv: `pip install <this checkout>` with no extras
# (PyPI's aarch64 wheels of onnxruntime, opencv-python-headless, numpy, psutil, prometheus-client;
# no torch), then:
#   1. the root has no X libraries (a Lite image) and torch is not installed
#   2. edge-saliency run --headless on a video for a few frames: the cat is recognised, per-frame time
#   3. run without --headless: one "no window" line, then headless (no display / dead display)
#   4. OpenCV's GUI build (opencv-python) on this X-less root: one line, no traceback
#   5. the serve smoke (deploy/smoke_serve.py): /healthz, /api/latest, one MJPEG frame, SIGTERM -> exit 0
#   6. edge-saliency bench --runs 10 (no scikit-image, no onnx: the synthetic frame, no plain baseline)
#   7. the device-side tests: pytest -m device tests/e2e/test_device_side.py
# The model is exported here on the host (torch) and copied in, as one copies it to a Pi.
#
# Times are under emulation (qemu-user, tens of times slower than a Pi): a functional check, not a
# speed claim. Exit status: 0 when every step passed, 1 otherwise. Takes 30-60 min the first time
# (debootstrap, wheels), less later. Environment: HOST_PYTHON (a python with torch for the export;
# default: .venv/bin/python of this checkout, else python3), FRAMES (default 6), MIRROR, QEMU_CPU
# (default cortex-a72, a Pi 4's core; cortex-a76 for a Pi 5's).
set -uo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
BASE=${1:-${EDGE_SALIENCY_ARM64_ROOT:-/var/tmp/edge-saliency-arm64}}
ROOT=$BASE/root
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FRAMES=${FRAMES:-6}
VENV=/opt/edge-saliency/venv
if [ -z "${HOST_PYTHON:-}" ]; then
    if [ -x "$HERE/.venv/bin/python" ]; then HOST_PYTHON=$HERE/.venv/bin/python; else HOST_PYTHON=python3; fi
fi

say() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { say "FAIL: $*"; exit 1; }
FAILED=()
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; FAILED+=("$1"); }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, binfmt): sudo $0"
[ "$(uname -s)" = Linux ] || die "needs Linux"

# ---------------------------------------------------------------- host tools
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -e /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
        || die "apt-get install ${need[*]} failed"
fi
if [ "$(uname -m)" != aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc (a container without it cannot run foreign binaries)"
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
        || die "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64)"
fi

# ---------------------------------------------------------------- the arm64 root (cached)
mkdir -p "$BASE"
if [ ! -e "$BASE/.root-ready" ]; then
    say "debootstrap bookworm arm64 into $ROOT (first run: 10-20 min)"
    rm -rf "$ROOT"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$ROOT" "$MIRROR" >"$BASE/debootstrap1.log" 2>&1 || die "debootstrap (first stage): see $BASE/debootstrap1.log"
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/" 2>/dev/null || true
    chroot "$ROOT" /debootstrap/debootstrap --second-stage >"$BASE/debootstrap2.log" 2>&1 \
        || die "debootstrap (second stage): see $BASE/debootstrap2.log"
    touch "$BASE/.root-ready"
fi

mounts=()
cleanup() {
    for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null; done
}
trap cleanup EXIT
for m in proc sys dev dev/pts; do
    mkdir -p "$ROOT/$m"
    if ! mountpoint -q "$ROOT/$m"; then
        case $m in
            proc) mount -t proc proc "$ROOT/proc" ;;
            sys) mount -t sysfs sys "$ROOT/sys" ;;
            dev) mount --bind /dev "$ROOT/dev" ;;
            dev/pts) mount -t devpts devpts "$ROOT/dev/pts" ;;
        esac && mounts+=("$ROOT/$m")
    fi
done
# qemu-user 7.2 (Debian 12's) does not emulate /proc/cpuinfo for aarch64 guests: they read the
# host's x86 one, and onnxruntime's CPU detection (the cpuinfo library) crashes on that at import
# (SIGSEGV). A real Pi has its own; here the root gets a Raspberry Pi 4's (4 x Cortex-A72), and
# QEMU_CPU=cortex-a72 gives the emulated CPU that core's instruction set (no SVE, no dot product).
if [ "$(uname -m)" != aarch64 ]; then
    cat >"$BASE/cpuinfo.pi4" <<'CPUINFO'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 2
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

processor	: 3
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

Hardware	: BCM2835
Revision	: c03114
Model		: Raspberry Pi 4 Model B Rev 1.4
CPUINFO
    if ! grep -q 'Raspberry Pi 4' "$ROOT/proc/cpuinfo" 2>/dev/null; then
        mount --bind "$BASE/cpuinfo.pi4" "$ROOT/proc/cpuinfo" && mounts+=("$ROOT/proc/cpuinfo")
    fi
fi
QEMU_CPU=${QEMU_CPU:-cortex-a72}
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# the CAs this host trusts beyond Debian's (a TLS-inspecting proxy's): the root trusts them too
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    sum=$(cat /usr/local/share/ca-certificates/*.crt | sha256sum | cut -c1-16)
    if [ "$(cat "$BASE/.extra-ca" 2>/dev/null)" != "$sum" ]; then  # slow under emulation: only when they change
        mkdir -p "$ROOT/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        if chroot "$ROOT" update-ca-certificates >/dev/null 2>&1; then echo "$sum" >"$BASE/.extra-ca"
        else say "note: update-ca-certificates failed in the root"; fi
    fi
fi

# everything inside runs as a login-less shell of the root, with the venv first on PATH
inside() { chroot "$ROOT" /usr/bin/env -i QEMU_CPU=$QEMU_CPU HOME=/root PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
               OMP_NUM_THREADS=2 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 EDGE_SALIENCY_HOME=/root/.cache/edge-saliency "$@"; }
say "root: Debian $(inside cat /etc/debian_version) $(inside uname -m) ($(inside python3 --version)), emulated CPU: $QEMU_CPU"

# ---------------------------------------------------------------- the project, as a user installs it
say "copying this checkout into the root (/opt/src)"
rm -rf "$ROOT/opt/src" && mkdir -p "$ROOT/opt/src" "$ROOT/opt/work"
(cd "$HERE" && git ls-files -co --exclude-standard -z | tar --null -T - -cf - 2>/dev/null) | tar -x -C "$ROOT/opt/src" \
    || die "cannot copy the checkout"
[ -x "$ROOT$VENV/bin/python" ] || inside python3 -m venv "$VENV" || die "python3 -m venv"
t0=$(date +%s)
say "pip install /opt/src (no extras; wheels come from PyPI) and pytest"
if inside pip install -q /opt/src pytest >"$BASE/pip.log" 2>&1; then
    pass "pip install of the project without extras ($(( $(date +%s) - t0 )) s)"
else
    tail -20 "$BASE/pip.log"; die "pip install failed: see $BASE/pip.log"
fi
inside pip list --format=freeze 2>/dev/null | grep -i -E '^(onnxruntime|opencv|numpy|psutil|prometheus|torch|edge)' \
    | sed 's/^/    /'

# 1. a Lite-like root: no X libraries, no torch
if ! ls "$ROOT"/usr/lib/aarch64-linux-gnu/libxcb.so.1* >/dev/null 2>&1 \
   && ! ls "$ROOT"/usr/lib/aarch64-linux-gnu/libGL.so.1* >/dev/null 2>&1; then
    pass "no libxcb / libGL in the root (as on Raspberry Pi OS Lite)"
else
    fail "root-has-x-libraries"
fi
if inside python -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)"; then
    pass "torch is not installed"
else
    fail "torch-installed"
fi
inside python -c "import cv2, sys; from edge_saliency.runtime.sysdeps import gui_backend; print('    cv2', cv2.__version__, 'GUI backend:', gui_backend())"

# ---------------------------------------------------------------- model and video from the host
MODEL=$BASE/efficientnet_lite0.onnx
if [ ! -s "$MODEL" ]; then
    say "exporting the model on the host with torch ($HOST_PYTHON)"
    (cd "$HERE" && PYTHONPATH=$HERE "$HOST_PYTHON" -m edge_saliency export --out "$MODEL") >"$BASE/export.log" 2>&1 \
        || { tail -5 "$BASE/export.log"; die "export on the host failed (HOST_PYTHON needs torch)"; }
fi
VIDEO=$BASE/demo.mp4
if [ ! -s "$VIDEO" ]; then
    (cd "$HERE" && PYTHONPATH=$HERE "$HOST_PYTHON" -c "
from edge_saliency.pipeline.sources import DemoSource
s = DemoSource('demo'); s.open(); s.write_video('$VIDEO', 24)") || die "cannot write the demo video on the host"
fi
mkdir -p "$ROOT/opt/edge-saliency/models"
cp "$MODEL" "$ROOT/opt/edge-saliency/models/" && cp "$VIDEO" "$ROOT/opt/work/demo.mp4"
M=/opt/edge-saliency/models/$(basename "$MODEL")
say "model $(basename "$MODEL") ($(du -h "$MODEL" | cut -f1)), video demo.mp4 (24 frames; the cat first)"

# ---------------------------------------------------------------- 2. headless run
t0=$(date +%s)
out=$(cd "$ROOT/opt/work" && inside sh -c "cd /opt/work && edge-saliency run --model $M --source demo.mp4 --headless --fast \
      --max-frames $FRAMES --threads 2 --log-json run.jsonl --record run.mp4" 2>&1)
rc=$?
echo "$out" | sed 's/^/    /'
if [ $rc = 0 ] && ! grep -q Traceback <<<"$out"; then
    labels=$(inside python -c "
import json
recs = [json.loads(l) for l in open('/opt/work/run.jsonl')]
print(len(recs), ' | '.join(f\"{r['label']} {r['score']:.2f} {r['timings_ms']['inference']:.0f}ms\" for r in recs))")
    n=${labels%% *}
    per_frame=$(grep -o 'inference [0-9.]* ms' <<<"$out" | head -1)
    say "    frames: $labels"
    if [ "$n" = "$FRAMES" ] && grep -qi 'cat' <<<"$labels"; then
        pass "run --headless: $FRAMES frames, the cat recognised; $per_frame per frame under emulation ($(( $(date +%s) - t0 )) s in all)"
    else
        fail "run-headless-results"
    fi
else
    fail "run-headless (rc $rc)"
fi

# ---------------------------------------------------------------- 3. no window to be had
out=$(inside sh -c "cd /opt/work && edge-saliency run --model $M --source demo.mp4 --max-frames 1 --threads 2" 2>&1); rc=$?
line=$(grep '^no window:' <<<"$out")
if [ $rc = 0 ] && [ -n "$line" ] && ! grep -q Traceback <<<"$out"; then pass "run with no display: '$line'"; else
    echo "$out" | sed 's/^/    /'; fail "run-no-display"; fi
out=$(inside env DISPLAY=:0 sh -c "cd /opt/work && edge-saliency run --model $M --source demo.mp4 --max-frames 1 --threads 2" 2>&1); rc=$?
line=$(grep '^no window:' <<<"$out")
if [ $rc = 0 ] && [ -n "$line" ] && ! grep -q Traceback <<<"$out"; then pass "run with DISPLAY=:0 and no X server: '$line'"; else
    echo "$out" | sed 's/^/    /'; fail "run-dead-display"; fi

# ---------------------------------------------------------------- 4. the GUI build of OpenCV on a root without X
CV_VER=$(inside python -c "from importlib.metadata import version; print(version('opencv-python-headless'))")
if [ ! -d "$ROOT/opt/gui-cv2/cv2" ]; then
    inside pip install -q --no-deps --target /opt/gui-cv2 "opencv-python==$CV_VER" >>"$BASE/pip.log" 2>&1 \
        || say "    (could not fetch opencv-python==$CV_VER for aarch64: step 4 skipped)"
fi
if [ -d "$ROOT/opt/gui-cv2/cv2" ]; then
    out=$(inside env PYTHONPATH=/opt/gui-cv2 edge-saliency run --model $M --source /opt/work/demo.mp4 --headless --max-frames 1 2>&1); rc=$?
    echo "$out" | sed 's/^/    /'
    if [ $rc != 0 ] && [ "$(grep -c . <<<"$out")" = 1 ] && grep -q 'opencv-python-headless' <<<"$out" && ! grep -q Traceback <<<"$out"; then
        pass "opencv-python (GUI build) without X libraries: one line, exit $rc"
    else
        fail "gui-opencv-message"
    fi
fi

# ---------------------------------------------------------------- 5. serve smoke
t0=$(date +%s)
if inside python /opt/src/deploy/smoke_serve.py --model $M --source /opt/work/demo.mp4 --timeout 600 --extra "--threads 2" \
        2>&1 | sed 's/^/    /'; [ "${PIPESTATUS[0]}" = 0 ]; then
    pass "serve smoke: healthz, latest, MJPEG, SIGTERM ($(( $(date +%s) - t0 )) s)"
else
    fail "serve-smoke"
fi

# ---------------------------------------------------------------- 6. bench
t0=$(date +%s)
out=$(inside sh -c "cd /opt/work && edge-saliency bench --model $M --provider cpu --threads 2 --precision fp32 --runs 10 \
      --warmup 1 --json bench.json" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
if [ $rc = 0 ] && grep -q 'cpu/2t/fp32/saliency *✓' <<<"$out" && ! grep -q Traceback <<<"$out"; then
    pass "bench --runs 10 ($(( $(date +%s) - t0 )) s)"
else
    fail "bench (rc $rc)"
fi

# ---------------------------------------------------------------- 7. device-side tests
t0=$(date +%s)
inside sh -c "cd /opt/src && EDGE_SALIENCY_TEST_MODEL=$M python -m pytest -q -p no:cacheprovider -m device tests/e2e/test_device_side.py" \
    2>&1 | tail -15 | sed 's/^/    /'
if [ "${PIPESTATUS[0]}" = 0 ]; then pass "pytest -m device ($(( $(date +%s) - t0 )) s)"; else fail "device-tests"; fi

# ---------------------------------------------------------------- verdict
if [ ${#FAILED[@]} -eq 0 ]; then
    say "ARM64 CHECK PASSED (Debian $(inside cat /etc/debian_version) arm64 under qemu-user; times are emulated)"
    exit 0
fi
say "ARM64 CHECK FAILED: ${FAILED[*]}"
exit 1
