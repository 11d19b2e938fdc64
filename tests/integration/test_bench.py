"""edge-saliency bench: device detection (with fake files and command output), statistics, the
plain (no saliency) baseline, variant planning, and the command end to end on a tiny run."""
from __future__ import annotations

import argparse
import io
import json

import numpy as np
import onnx
import pytest

from edge_saliency.bench import runner as bench
from edge_saliency import contract
from edge_saliency.runtime import device_info
from edge_saliency.errors import UserError

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
processor\t: 1
Features\t: fp asimd evtstrm crc32 cpuid
processor\t: 2
processor\t: 3
Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_parse_cpuinfo_x86_and_pi():
    x86 = device_info.parse_cpuinfo(X86_CPUINFO)
    assert x86 == {"model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "logical_cores": 2, "int8_flags": ["avx512_vnni"]}
    pi = device_info.parse_cpuinfo(PI4_CPUINFO)
    assert pi["logical_cores"] == 4 and pi["int8_flags"] == [] and pi["model"] == "BCM2835"


def test_parse_throttled_bits():
    t = device_info.parse_throttled("throttled=0x50005\n")
    assert t["ok"] is False
    assert t["flags"] == ["under-voltage now", "throttled now", "under-voltage has occurred", "throttling has occurred"]
    assert device_info.parse_throttled("throttled=0x0") == {"value": "0x0", "flags": [], "ok": True}
    assert device_info.parse_throttled("VCHI initialization failed") is None
    assert device_info.parse_throttled(None) is None


def test_parse_temperatures_and_power_mode():
    assert device_info.parse_vcgencmd_temp("temp=48.3'C\n") == 48.3
    assert device_info.parse_vcgencmd_temp("") is None
    assert device_info.parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert device_info.parse_nvpmodel("NV Power Mode: 15W\n2") == {"name": "15W", "id": 2}
    assert device_info.parse_nvpmodel("command not found") is None
    assert device_info.parse_nvidia_smi("NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB\n") == [
        {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB"}]


def _fake_root(tmp_path, cpuinfo, model=None, zones=(), tegra=False):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    if model is not None:
        (tmp_path / "proc" / "device-tree").mkdir()
        (tmp_path / "proc" / "device-tree" / "model").write_text(model)
    for i, (kind, milli) in enumerate(zones):
        z = tmp_path / "sys" / "class" / "thermal" / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")
    if tegra:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1")
    return str(tmp_path)


def test_collect_raspberry_pi_with_fakes(tmp_path):
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        return {("vcgencmd", "get_throttled"): "throttled=0x20002\n",
                ("vcgencmd", "measure_temp"): "temp=71.5'C\n"}.get(tuple(cmd))

    root = _fake_root(tmp_path, PI4_CPUINFO, "Raspberry Pi 4 Model B Rev 1.4\x00", [("cpu-thermal", 71540)])
    info = device_info.collect(root, run=fake_run)
    assert info["kind"] == "raspberry_pi" and info["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert info["throttled"]["flags"] == ["arm frequency capped now", "arm frequency capping has occurred"]
    assert info["temperature_c"] == 71.5
    assert info["thermal_zones"] == {"cpu-thermal": 71.54}
    assert ["nvpmodel", "-q"] not in calls and ["vcgencmd", "get_throttled"] in calls
    line = device_info.summary(info)
    assert "THROTTLING: arm frequency capped now" in line and "71.5°C" in line


def test_collect_jetson_with_fakes(tmp_path):
    def fake_run(cmd):
        return "NV Power Mode: 15W\n2\n" if cmd == ["nvpmodel", "-q"] else None

    root = _fake_root(tmp_path, PI4_CPUINFO.replace("Raspberry Pi 4 Model B Rev 1.4", "Jetson"),
                      "NVIDIA Jetson Orin Nano Developer Kit\x00",
                      [("CPU-therm", 45500), ("GPU-therm", 44000), ("CPU-therm", 46000)], tegra=True)
    info = device_info.collect(root, run=fake_run)
    assert info["kind"] == "jetson"
    assert info["power_mode"] == {"name": "15W", "id": 2}
    assert info["thermal_zones"] == {"CPU-therm": 45.5, "GPU-therm": 44.0, "CPU-therm'": 46.0}
    assert "throttled" not in info
    assert "power mode 15W" in device_info.summary(info)


def test_collect_generic_machine_reads_nothing_missing(tmp_path):
    info = device_info.collect(_fake_root(tmp_path, X86_CPUINFO), run=lambda cmd: None)
    assert info["kind"] == "generic" and info["cpu"].startswith("Intel(R) Xeon(R) Gold")
    assert info["int8_flags"] == ["avx512_vnni"] and info["thermal_zones"] == {}
    assert "gpus" not in info


def test_latency_stats_match_numpy():
    s = np.arange(1, 101) / 1e3  # 1..100 ms
    st = bench.latency_stats(s)
    assert st["p50"] == pytest.approx(50.5) and st["p90"] == pytest.approx(90.1)
    assert st["p99"] == pytest.approx(99.01) and st["max"] == pytest.approx(100.0) and st["n"] == 100
    assert bench.latency_stats([]) == {}


def test_progress_bar_writes_to_its_stream():
    out = io.StringIO()
    p = bench.Progress(4, "bench", stream=out, force=True, width=8)
    for i in range(1, 5):
        p.update(i)
    text = out.getvalue()
    assert "bench [########] 4/4\n" in text and text.startswith("\rbench [")
    quiet = io.StringIO()
    bench.Progress(4, "bench", stream=quiet).update(4)  # not a terminal, not forced
    assert quiet.getvalue() == ""


def test_plain_variant_drops_saliency_and_keeps_logits(lite0_onnx, tmp_path):
    from edge_saliency.runtime.model import SaliencyModel

    out = tmp_path / "plain.onnx"
    bench.prune_to_plain(lite0_onnx, out)
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == [contract.LOGITS, contract.TARGET]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Log", "Erf"}  # the SMOE subgraph is gone
    full = onnx.load(str(lite0_onnx))
    assert len(model.graph.node) < len(full.graph.node) - 50
    a, b = SaliencyModel(lite0_onnx, "cpu", 1), SaliencyModel(out, "cpu", 1)
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    ra, rb = a.run(batch), b.run(batch)
    np.testing.assert_allclose(rb[contract.LOGITS], ra[contract.LOGITS], atol=1e-4)
    np.testing.assert_array_equal(rb[contract.TARGET], ra[contract.TARGET])
    assert b.info.methods == []


def _args(**kw):
    base = dict(provider=None, threads=None, precision=None, plain=True, engine="onnxruntime")
    base.update(kw)
    return argparse.Namespace(**base)


def test_plan_default_skips_fp16_on_cpu_and_pairs_plain():
    variants, skipped = bench.plan(_args(threads="1,2"), ["CPUExecutionProvider"], can_make=True)
    names = [v.name for v in variants]
    assert names == ["cpu/1t/fp32/saliency", "cpu/1t/fp32/plain", "cpu/2t/fp32/saliency", "cpu/2t/fp32/plain",
                     "cpu/1t/int8/saliency", "cpu/1t/int8/plain", "cpu/2t/int8/saliency", "cpu/2t/int8/plain"]
    assert any("fp16 is for GPU providers" in s for s in skipped)


def test_plan_gpu_gets_fp16_and_without_onnx_only_fp32():
    variants, _ = bench.plan(_args(), ["CUDAExecutionProvider", "CPUExecutionProvider"], can_make=True)
    assert {(v.provider, v.precision) for v in variants} >= {("CUDAExecutionProvider", "fp16")}
    assert ("CPUExecutionProvider", "fp16") not in {(v.provider, v.precision) for v in variants}
    variants, skipped = bench.plan(_args(threads="2"), ["CPUExecutionProvider"], can_make=False)
    assert [v.name for v in variants] == ["cpu/2t/fp32/saliency"]
    assert any("int8" in s and "onnx package" in s for s in skipped)
    assert any("plain" in s for s in skipped)


def test_plan_with_openvino_adds_its_variants(monkeypatch):
    monkeypatch.setattr(bench.engines, "available_engines", lambda: ["onnxruntime", "openvino"])
    variants, _ = bench.plan(_args(engine="onnxruntime,openvino", threads="2", precision="fp32"),
                             ["CPUExecutionProvider"], can_make=True)
    assert [(v.name, v.engine) for v in variants] == [
        ("cpu/2t/fp32/saliency", "onnxruntime"), ("cpu/2t/fp32/plain", "onnxruntime"),
        ("openvino-cpu/2t/fp32/saliency", "openvino"), ("openvino-cpu/2t/fp32/plain", "openvino")]
    only, _ = bench.plan(_args(engine="openvino", threads="1", precision="int8", plain=False),
                         ["CPUExecutionProvider"], can_make=True)
    assert [v.name for v in only] == ["openvino-cpu/1t/int8/saliency"]


def test_plan_engine_errors(monkeypatch):
    monkeypatch.setattr(bench.engines, "available_engines", lambda: ["onnxruntime"])
    with pytest.raises(UserError, match="unknown engine 'tvm'"):
        bench.plan(_args(engine="tvm"), ["CPUExecutionProvider"], True)
    with pytest.raises(UserError, match=r"the openvino engine is not installed: pip install 'edge-saliency\[openvino\]'"):
        bench.plan(_args(engine="openvino"), ["CPUExecutionProvider"], True)


def test_plan_rejects_bad_flags():
    with pytest.raises(UserError, match="unknown precision"):
        bench.plan(_args(precision="fp8"), ["CPUExecutionProvider"], True)
    with pytest.raises(UserError, match="positive integers"):
        bench.plan(_args(threads="0"), ["CPUExecutionProvider"], True)
    with pytest.raises(UserError, match="unknown provider 'tpu'"):
        bench.plan(_args(provider="tpu"), ["CPUExecutionProvider"], True)
    # a GPU provider this onnxruntime lacks is a row that says so (tests/integration/test_providers.py), not the end of the run
    variants, _ = bench.plan(_args(provider="cuda", precision="fp32"), ["CPUExecutionProvider"], True)
    assert [v.status.split(":")[0] for v in variants] == ["unavailable"]


def test_bench_command_end_to_end(lite0_onnx, tmp_path, capsys):
    from edge_saliency.cli import main

    js = tmp_path / "b.json"
    rc = main(["bench", "--model", str(lite0_onnx), "--provider", "cpu", "--threads", "1", "--precision", "fp32",
               "--runs", "10", "--warmup", "1", "--cache", str(tmp_path / "cache"), "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cpu/1t/fp32/saliency" in out and "cpu/1t/fp32/plain" in out and "base" in out
    report = json.loads(js.read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    sal, plain = rows["cpu/1t/fp32/saliency"], rows["cpu/1t/fp32/plain"]
    assert sal["status"] == plain["status"] == "ok"
    assert sal["inference_ms"]["n"] == 10 and len(report["raw_inference_ms"]["cpu/1t/fp32/saliency"]) == 10
    assert sal["overhead"] == pytest.approx(sal["inference_ms"]["p50"] / plain["inference_ms"]["p50"])
    assert sal["inference_ms"]["p50"] <= sal["inference_ms"]["p90"] <= sal["inference_ms"]["p99"] <= sal["inference_ms"]["max"]
    assert sal["render_ms_p50"] is not None and plain["render_ms_p50"] is None
    assert report["device"]["onnxruntime"] and "CPUExecutionProvider" in report["device"]["providers"]


def test_bench_user_errors(tmp_path, capsys):
    from edge_saliency.cli import main

    assert main(["bench", "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^2$"):  # an argument error: argparse's one line, exit 2
        main(["bench", "--model", str(tmp_path / "nope.onnx"), "--runs", "3"])
    assert capsys.readouterr().err.strip() == ("edge-saliency bench: error: argument --runs: must be at least 10, "
                                               "got '3' (--help lists the options)")
    assert main(["bench", "--json", str(tmp_path / "missing" / "o.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


class _R:
    def __init__(self, cls, maps):
        self.class_index, self._maps = cls, maps

    def map(self, name):
        return self._maps.get(name)


def test_map_correlation_and_agreement_with_fp32():
    rng = np.random.default_rng(0)
    m = rng.random((7, 7))
    assert bench.map_correlation(m, m) == pytest.approx(1.0)
    assert bench.map_correlation(m, -m) == pytest.approx(-1.0)
    assert bench.map_correlation(m, 3 * m + 1) == pytest.approx(1.0)  # scale and offset do not matter
    assert bench.map_correlation(np.ones((7, 7)), np.ones((7, 7))) == 1.0
    assert bench.map_correlation(np.ones((7, 7)), m) == 0.0
    noisy = m + 0.5 * rng.random((7, 7))
    assert 0.3 < bench.map_correlation(m, noisy) < 0.99
    with pytest.raises(ValueError, match="shapes differ"):
        bench.map_correlation(m, np.ones((3, 3)))
    ref = {"a": _R(1, {"smoe": m, "fastcam": m}), "b": _R(2, {"smoe": m, "fastcam": m})}
    var = {"a": _R(1, {"smoe": m, "fastcam": noisy}), "b": _R(5, {"smoe": -m, "fastcam": m})}
    acc = bench.agreement(ref, var)
    assert acc["images"] == 2 and acc["top1_matches"] == 1 and acc["top1_agreement"] == 0.5
    assert acc["top1_differs_on"] == ["b"]
    assert set(acc["maps"]) == {"smoe", "fastcam"}  # recipro: not in these results
    assert acc["maps"]["smoe"]["min"] == pytest.approx(-1.0) and acc["maps"]["smoe"]["mean"] == pytest.approx(0.0)
    assert acc["maps"]["fastcam"]["min"] == pytest.approx(bench.map_correlation(m, noisy))
    assert acc["map_r_min"] == pytest.approx(-1.0)
    plain = bench.agreement(ref, {"a": _R(1, {}), "b": _R(2, {})})
    assert plain["top1_agreement"] == 1.0 and plain["maps"] == {} and plain["map_r_min"] is None


def test_bench_rows_report_accuracy_against_fp32_and_batch_throughput(lite0_onnx, tmp_path, capsys):
    from edge_saliency.cli import main

    js = tmp_path / "b.json"
    rc = main(["bench", "--model", str(lite0_onnx), "--engine", "onnxruntime", "--provider", "cpu", "--threads", "1",
               "--precision", "fp32,fp16", "--runs", "10", "--warmup", "1", "--no-plain", "--batch", "3", "--cache", str(tmp_path / "cache"),
               "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Top1=fp32" in out and "img/s@3" in out and "MLPerf Offline" in out
    report = json.loads(js.read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    fp32, fp16 = rows["cpu/1t/fp32/saliency"]["accuracy"], rows["cpu/1t/fp16/saliency"]["accuracy"]
    assert fp32["images"] == fp16["images"] == 10  # 5 photographs and their mirror images
    assert fp32["top1_agreement"] == 1.0 and fp32["map_r_min"] == pytest.approx(1.0)
    assert set(fp32["maps"]) == {"smoe", "recipro", "fastcam"}
    # fp16 is close to fp32 but not identical
    assert fp16["top1_agreement"] >= 0.8 and 0.9 < fp16["map_r_min"] < 1.0
    assert fp16["map_r_min"] <= fp16["map_r_mean"] <= 1.0
    assert fp16["maps"]["smoe"]["min"] == min(fp16["maps"]["smoe"]["per_image"].values())
    for r in rows.values():
        b = r["batch"]
        assert b["size"] == 3 and b["runs"] == 5 and b["images_per_s"] > 0 and b["latency_ms_p50"] > 0
    assert report["batch"] == {"size": 3, "runs": 5}
    assert report["accuracy"]["reference"] == "cpu/fp32 (onnxruntime)"
