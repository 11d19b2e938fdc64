"""Shared fixtures: models are exported once per test session into a temp folder (never committed).

The tests mirror the package's levels: unit/ (one part, no model file), integration/ (parts
together with a real exported model and engine, in one process), e2e/ (the command line and the
daemon as processes, with a real browser, MQTT broker, X server). The helpers beside this file
(archs, graph_util, serve_util, waiting, debian_tools) are importable from all three
(pyproject.toml: pythonpath = ["tests"])."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def lite0_onnx(tmp_path_factory):
    """The default export: pretrained EfficientNet-Lite0, SMOE + Recipro-CAM.

    $EDGE_SALIENCY_TEST_MODEL: use this file instead (made by `edge-saliency export` elsewhere):
    how the device-side tests run where there is no torch (deploy/check_arm64.sh)."""
    given = os.environ.get("EDGE_SALIENCY_TEST_MODEL")
    if given:
        if not os.path.isfile(given):
            pytest.fail(f"$EDGE_SALIENCY_TEST_MODEL={given}: no such file")
        from pathlib import Path

        return Path(given)
    try:
        from export.build import ExportOptions, export_from_options
    except ImportError as exc:
        pytest.skip(f"exporting the test model needs torch ({exc}); or set $EDGE_SALIENCY_TEST_MODEL")

    out = tmp_path_factory.mktemp("models") / "efficientnet_lite0.onnx"
    export_from_options(ExportOptions(out=str(out)), log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def lite0_class_input_onnx(tmp_path_factory):
    """Default export plus the optional class_index input."""
    from export.build import ExportOptions, export_from_options

    out = tmp_path_factory.mktemp("models") / "efficientnet_lite0_cls.onnx"
    export_from_options(ExportOptions(out=str(out), class_input=True), log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def lite0_model(lite0_onnx):
    from edge_saliency.runtime.model import SaliencyModel

    return SaliencyModel(lite0_onnx, provider="cpu", threads=1)


@pytest.fixture(scope="session")
def lite0_plain(tmp_path_factory):
    """The pretrained EfficientNet-Lite0 as torch exports it plainly (dynamic batch): no saliency."""
    import archs
    from export import zoo

    model = zoo.get("efficientnet_lite0").build(True, (224, 224))
    return archs.plain_export(model, (224, 224), tmp_path_factory.mktemp("models") / "lite0_plain.onnx")
