"""`edge-saliency export --onnx`: a finished ONNX classifier gets the contract without torch; the
command line's options and errors. (The maps themselves: test_builder.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

import archs
from edge_saliency import contract
from edge_saliency.cli import main as cli_main
from edge_saliency.graph.builder import check_images


def test_cli_writes_a_model_and_never_imports_torch(tmp_path):
    path = archs.helper_nhwc_flatten_matmul(tmp_path / "m.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(10)))
    out = tmp_path / "s.onnx"
    code = (
        "import sys; from edge_saliency.cli import main; "
        f"rc = main(['export', '--onnx', {str(path)!r}, '--out', {str(out)!r}, '--labels', {str(labels)!r}, "
        "'--mean', '127', '--std', '128', '--color', 'bgr', '--layout', 'nhwc', '--methods', 'all']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # 'all' asks for gradient CAMs: this head is an MLP
    assert "guided, gradcam, gradcampp in the graph need a head that is global average pooling" in proc.stderr
    code = code.replace("'--methods', 'all'", "'--methods', 'smoe,recipro'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "original outputs bit-for-bit equal: scores" in proc.stdout
    from edge_saliency.runtime.model import SaliencyModel

    model = SaliencyModel(out, provider="cpu", threads=1)
    assert model.labels[3] == "thing 3" and model.info.input_size == (32, 32)
    result = model.predict(check_images((32, 32))[0])
    assert result.smoe.shape == (8, 8) and result.recipro_cam.shape == (8, 8)
    meta = model.info.raw
    assert meta["input"]["model_input"] == {"name": "image", "layout": "NHWC", "color": "BGR"}
    assert meta["input"]["mean"] == [127.0] * 3 and meta["recipro"]["path"] == "masked_batch"
    assert [s["layer"] for s in meta["scales"]] == ["relu1", "pool1", "relu2"]


def _cli_error(args, capsys) -> str:
    assert cli_main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_errors_name_the_node_and_the_flag(tmp_path, capsys):
    path = archs.helper_nhwc_flatten_matmul(tmp_path / "m.onnx")
    out = str(tmp_path / "o.onnx")
    assert "ONNX file not found" in _cli_error(["--onnx", str(tmp_path / "missing.onnx"), "--out", out], capsys)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    assert "cannot read" in _cli_error(["--onnx", str(tmp_path / "junk.onnx"), "--out", out], capsys)
    err = _cli_error(["--onnx", str(path), "--out", out, "--target-node", "flatten"], capsys)
    assert "'flatten'" in err and "--target-node" in err and "4-D" in err
    err = _cli_error(["--onnx", str(path), "--out", out, "--scale-nodes", "relu1,nope"], capsys)
    assert "'nope'" in err and "--scale-nodes" in err
    assert "--weights does not apply to --onnx" in _cli_error(["--onnx", str(path), "--weights", "w.pth"], capsys)
    assert "--color wants rgb or bgr" in _cli_error(["--onnx", str(path), "--out", out, "--color", "hsv"], capsys)
    assert "--smoe-weights has 2 values for 3 scale ends" in _cli_error(
        ["--onnx", str(path), "--out", out, "--smoe-weights", "1,2"], capsys)
    assert not Path(out).exists()


def test_input_named_like_ours_and_outputs_kept(tmp_path):
    """The model's input is called 'image' (our input's name): it is renamed inside; its own output
    stays next to ours, equal to logits."""
    path = archs.helper_nhwc_flatten_matmul(tmp_path / "m.onnx")
    out = tmp_path / "s.onnx"
    assert cli_main(["export", "--onnx", str(path), "--out", str(out), "--methods", "smoe"]) == 0
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == [contract.INPUT]
    assert [o.name for o in model.graph.output] == ["logits", "target_class", "smoe", "smoe_scales", "scores"]
    import graph_util as gu

    got = gu.run(out, check_images((32, 32)))
    assert np.array_equal(got["scores"], got["logits"])
