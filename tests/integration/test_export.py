"""The export stage end to end: contract, predictions, parity, the general path, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

import archs
import graph_util as gu
from edge_saliency import contract, samples
from edge_saliency.errors import UserError
from edge_saliency.graph import builder
from edge_saliency.runtime.model import SaliencyModel
from export.build import export_module


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edge_saliency", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# ------------------------------------------------------------------ the default export
def test_contract_outputs_shapes_and_metadata(lite0_onnx):
    model = onnx.load(str(lite0_onnx))
    (inp,) = model.graph.input
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 224, 224, 3]
    assert [o.name for o in model.graph.output] == ["logits", "target_class", "smoe", "smoe_scales", "recipro_cam"]
    meta = contract.decode_metadata({p.key: p.value for p in model.metadata_props})
    for key in ("version", "arch", "labels", "input", "scales", "methods", "smoe"):
        assert key in meta, key
    assert meta["arch"] == "efficientnet_lite0"
    assert len(meta["labels"]) == 1000 and meta["labels"][285] == "Egyptian cat"
    assert meta["input"]["color"] == "BGR" and meta["input"]["size"] == [224, 224]
    assert meta["input"]["mean"] == [127.0] * 3 and meta["input"]["std"] == [128.0] * 3
    assert [s["resolution"] for s in meta["scales"]] == [[112, 112], [56, 56], [28, 28], [14, 14], [7, 7]]
    assert meta["smoe"]["normaliser"] == "gaussian_cdf" and meta["smoe"]["weights"] == [1.0] * 5
    assert meta["smoe"]["map_size"] == [56, 56]
    assert meta["methods"] == ["smoe", "recipro"]
    assert meta["export"]["opset"] == 17 and meta["export"]["dynamic_batch"] is True


@pytest.mark.parametrize("photo, label", [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_real_photos_are_classified_through_the_exported_file(lite0_model, photo, label):
    result = lite0_model.predict(samples.photo(photo))
    assert result.label == label
    assert result.score > 0.5
    assert result.smoe.shape == (56, 56) and result.smoe_scales.shape == (5, 56, 56)
    assert result.recipro_cam.shape == (7, 7)
    for m in (result.smoe, result.smoe_scales, result.recipro_cam):
        assert m.dtype == np.float32 and m.min() >= 0.0 and m.max() <= 1.0


def test_runtime_never_imports_torch(lite0_onnx):
    code = textwrap.dedent(f"""
        import sys
        from edge_saliency.runtime.model import SaliencyModel
        from edge_saliency import samples
        r = SaliencyModel({str(lite0_onnx)!r}).predict(samples.photo("chelsea"))
        assert r.label == "Egyptian cat"
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_maps_equal_numpy_reference_on_real_images(lite0_onnx, lite0_plain):
    """Trained weights, real photographs, batch 3: every map within 1e-4 of its numpy reference."""
    spec = builder.BuildSpec(mean=(127.0,) * 3, std=(128.0,) * 3)
    diffs = gu.reference_diffs(lite0_onnx, onnx.load(str(lite0_plain)), spec, builder.check_images((224, 224)))
    assert set(diffs) == {"smoe", "smoe_scales", "recipro_cam"}
    for name, diff in diffs.items():
        assert diff <= 1e-4, (name, diff)


def test_export_checks_are_recorded(lite0_onnx):
    """The file says what its checks measured: maps vs the numpy reference, logits vs torch."""
    model = onnx.load(str(lite0_onnx))
    meta = contract.decode_metadata({p.key: p.value for p in model.metadata_props})
    checks = meta["export"]["checks"]
    assert meta["smoe"]["eps"] == 1e-3 and meta["export"]["source"] == "torch"
    assert checks["batches"] == [1, 3] and checks["bit_exact_outputs"] == ["logits"]
    for name in ("smoe", "smoe_scales", "recipro_cam"):
        assert 0 < checks["max_abs_diff_vs_reference"][name] <= 1e-4, name
        assert checks["tolerance"][name] == 1e-4, name  # well conditioned: no widening
    assert checks["ill_conditioned"] == []
    assert 0 <= meta["export"]["logits_vs_torch"] <= 1e-4


def test_dynamic_batch_gives_the_same_result_per_image(lite0_model):
    frames = [samples.photo(n) for n in ("chelsea", "coffee", "rocket")]
    batch = lite0_model.predict_batch(frames)
    for frame, res in zip(frames, batch):
        single = lite0_model.predict(frame)
        assert single.class_index == res.class_index
        np.testing.assert_allclose(single.smoe, res.smoe, atol=1e-4)
        np.testing.assert_allclose(single.recipro_cam, res.recipro_cam, atol=1e-4)


def test_class_index_input_explains_a_chosen_class(lite0_class_input_onnx):
    m = SaliencyModel(lite0_class_input_onnx, provider="cpu")
    frame = samples.photo("chelsea")
    top = m.predict(frame)
    tabby = m.class_index("tabby")
    chosen = m.predict(frame, class_index=tabby)
    assert top.class_index == 285 and chosen.class_index == tabby
    assert not np.allclose(top.recipro_cam, chosen.recipro_cam, atol=1e-3)
    np.testing.assert_allclose(top.smoe, chosen.smoe)  # SMOE is class-agnostic
    with pytest.raises(UserError, match="no class named"):
        m.class_index("unicorn")


def test_model_without_class_input_refuses_a_class(lite0_model):
    with pytest.raises(UserError, match="--class-input"):
        lite0_model.predict(samples.photo("coffee"), class_index=3)


# ------------------------------------------------------------------ other architectures
@pytest.mark.parametrize("arch", ["resnet", "vgg", "mobilenetv2"])
def test_export_of_test_architectures(tmp_path, arch):
    model = {"resnet": archs.TinyResNet, "vgg": archs.TinyVGG, "mobilenetv2": archs.TinyMobileNetV2}[arch]()
    archs.confident(archs.randomise_bn(model))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(10)))
    spec = builder.BuildSpec(input_size=(64, 64), mean=(120.0,) * 3, std=(60.0,) * 3, map_fraction=4,
                             recipro_score="softmax", labels=str(labels))
    report = export_module(model, spec, tmp_path / "m.onnx", arch, log=lambda m: None)
    assert report["logits_vs_torch"] <= 1e-4
    m = SaliencyModel(tmp_path / "m.onnx", provider="cpu")
    r = m.predict(cv2.resize(samples.photo("astronaut"), (64, 64)))
    assert m.labels[4] == "thing 4"
    assert r.smoe_scales.shape == (len(report["scale_ends"]), 16, 16)
    assert r.recipro_cam.shape == tuple(m.info.raw["recipro"]["map_size"])
    x = torch.from_numpy(builder.preprocess(cv2.resize(samples.photo("astronaut"), (64, 64))[None],
                                            (120.0,) * 3, (60.0,) * 3, "rgb", "nchw"))
    with torch.no_grad():
        assert r.class_index == int(model(x).argmax())


# ------------------------------------------------------------------ CLI and errors
def test_cli_export_writes_a_checked_file(tmp_path):
    out = tmp_path / "m.onnx"
    run = cli("export", "--out", str(out), "--methods", "smoe", "--input-size", "160")
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and out.is_file()
    m = SaliencyModel(out, provider="cpu")
    assert m.info.input_size == (160, 160) and m.outputs == ["logits", "target_class", "smoe", "smoe_scales"]
    assert m.predict(samples.photo("chelsea")).label in ("Egyptian cat", "tabby", "tiger cat")


def test_cli_module_export(tmp_path):
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        import torch
        def build():
            return torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4))
        def not_a_cnn():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    """))
    import importlib.util
    spec = importlib.util.spec_from_file_location("mynets", tmp_path / "mynets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.build().state_dict(), tmp_path / "net.pth")
    ok = cli("export", "--module", "mynets:build", "--weights", "net.pth", "--input-size", "32", "--out", "n.onnx",
             cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    meta = SaliencyModel(tmp_path / "n.onnx", provider="cpu").info
    assert meta.labels == ["class_0", "class_1", "class_2", "class_3"] and meta.raw["recipro"]["path"] == "gap_linear"

    bad = cli("export", "--module", "mynets:not_a_cnn", "--input-size", "32", "--out", "x.onnx", cwd=tmp_path)
    assert bad.returncode == 2 and "not a CNN" in bad.stderr
    wrong = cli("export", "--module", "mynets:build", "--weights", "net.pth", "--input-size", "32",
                "--out", "y.onnx", "--scale-layers", "5", cwd=tmp_path)
    assert wrong.returncode == 2 and "node '/5/Flatten' outputs [1, 16], not a 4-D float feature map" in wrong.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--arch", "resnet9000"], "unknown arch 'resnet9000'"),
    (["--weights", "/nonexistent/w.pth"], "weights file not found: /nonexistent/w.pth"),
    (["--out", "/nonexistent-dir/m.onnx"], "cannot write /nonexistent-dir/m.onnx"),
    (["--methods", "scorecam"], "unknown method 'scorecam'"),
    (["--module", "no_such_pkg.nets:build"], "cannot import 'no_such_pkg.nets'"),
    (["--module", "justaname"], "--module wants 'package.module:callable'"),
    (["--input-size", "abc"], "--input-size wants N or HxW"),
    (["--smoe-weights", "1,2"], "--smoe-weights has 2 values for 5 scale ends"),
])
def test_cli_export_errors_are_one_line(tmp_path, args, message):
    run = cli("export", *args, cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], run.stderr


def test_weights_that_do_not_fit(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "bad.pth")
    run = cli("export", "--weights", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "m.onnx"))
    assert run.returncode == 2 and "do not fit the model" in run.stderr and "Traceback" not in run.stderr
    (tmp_path / "corrupt.pth").write_bytes(b"not a pickle")
    run = cli("export", "--weights", str(tmp_path / "corrupt.pth"), "--out", str(tmp_path / "m.onnx"))
    assert run.returncode == 2 and "cannot read weights" in run.stderr


NOBODY = 65534  # a throwaway uid (Debian's nobody): owns nothing here


def as_unprivileged(argv, cwd):
    """Run argv as an unprivileged uid, so that file permissions apply: as root (how this suite runs
    here and in CI) through setpriv or runuser with uid/gid 65534 and no supplementary groups; as
    any other user, directly. Skips, saying exactly what is missing, only where that user cannot
    run this checkout's Python at all."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "HOME": cwd,
           "EDGE_SALIENCY_HOME": cwd}
    if os.geteuid() != 0:
        prefix = []
    elif shutil.which("setpriv"):
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    elif shutil.which("runuser"):
        prefix = ["runuser", "-u", "nobody", "--"]
    else:
        pytest.skip("running as root without setpriv or runuser: cannot drop to an unprivileged uid")
    probe = subprocess.run([*prefix, sys.executable, "-c", "import edge_saliency.cli, export.build"], cwd=cwd,
                           env=env, capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"uid {NOBODY} cannot import this checkout with {sys.executable} (the venv or {root} is not "
                    f"readable/traversable by it): {last}")
    return subprocess.run([*prefix, sys.executable, "-m", "edge_saliency", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def shared_tmp():
    """A folder under /tmp that the unprivileged uid can traverse (pytest's tmp_path is root's, 0700)."""
    d = tempfile.mkdtemp(prefix="edge-saliency-perm-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unwritable_output_directory_is_one_line_as_an_unprivileged_user(shared_tmp):
    ro = shared_tmp / "ro"
    ro.mkdir(mode=0o755)  # owned by the suite's user: others may enter it, not write
    if os.geteuid() != 0:
        ro.chmod(0o555)
    run = as_unprivileged(["export", "--out", str(ro / "m.onnx")], cwd=str(shared_tmp))
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert lines == [f"edge-saliency: error: cannot write {ro / 'm.onnx'}: permission denied"], run.stderr
    assert list(ro.iterdir()) == []  # refused before any work: no half-written file


def test_unwritable_existing_output_file_is_one_line_as_an_unprivileged_user(shared_tmp):
    """The folder is the unprivileged user's, the file in it is not theirs and read-only."""
    mine = shared_tmp / "mine"
    mine.mkdir(mode=0o755)
    out = mine / "m.onnx"
    out.write_bytes(b"someone else's model")
    out.chmod(0o444)
    if os.geteuid() == 0:
        os.chown(mine, NOBODY, NOBODY)
    run = as_unprivileged(["export", "--out", str(out)], cwd=str(shared_tmp))
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert lines == [f"edge-saliency: error: cannot write {out}: permission denied"], run.stderr
    assert out.read_bytes() == b"someone else's model"


@pytest.mark.parametrize("content, message", [
    (b"garbage bytes, not protobuf", "cannot load"),
    (None, "model file not found"),
])
def test_runtime_rejects_bad_model_files(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        SaliencyModel(path)


def test_runtime_rejects_plain_onnx_without_contract(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(UserError, match="not an edge-saliency model"):
        SaliencyModel(path)


@pytest.mark.parametrize("frame", [
    np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.uint16), None,
])
def test_preprocess_rejects_odd_frames(lite0_model, frame):
    with pytest.raises(ValueError, match="expected a BGR uint8 frame"):
        lite0_model.preprocess(frame)


def test_odd_frame_shapes_are_resized(lite0_model):
    for shape in [(1, 1, 3), (17, 1000, 3), (2000, 33, 3)]:
        r = lite0_model.predict(np.full(shape, 127, np.uint8))
        assert r.smoe.shape == (56, 56)
        assert np.isfinite(r.smoe).all() and np.isfinite(r.recipro_cam).all()


def test_export_metadata_is_plain_json(lite0_onnx):
    model = onnx.load(str(lite0_onnx))
    for p in model.metadata_props:
        if p.key.startswith("edge_saliency."):
            json.loads(p.value)
