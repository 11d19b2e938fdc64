"""The default pretrained model: exported on first use (this needs torch: the only place outside
`edge-saliency export` where the command line reaches into export/)."""
from __future__ import annotations

from pathlib import Path

from edge_saliency.errors import UserError


def _built_by(path: Path) -> str | None:
    """The edge-saliency version that wrote ``path`` (from its metadata), or None."""
    import json

    from edge_saliency.runtime.engines import quiet_cpu_session

    try:
        props = quiet_cpu_session(str(path), optimise=False).get_modelmeta().custom_metadata_map
        return json.loads(props.get("edge_saliency.export", "{}")).get("edge_saliency")
    except Exception:
        return None


def ensure_default_model(log_fn=print) -> Path:
    """The default pretrained model: exported on first use where torch is installed, and again
    when the cached file was written by another release (whose maps may differ)."""
    import edge_saliency
    from edge_saliency.runtime.model import default_model_path

    path = default_model_path()
    if path.is_file():
        built = _built_by(path)
        if built == edge_saliency.__version__:
            return path
        try:
            import export.build  # noqa: F401
        except ImportError:
            log_fn(f"note: {path} was written by edge-saliency {built or 'unknown'}, this is "
                   f"{edge_saliency.__version__}; no torch here to export it again, using it as it is")
            return path
        log_fn(f"note: {path} was written by edge-saliency {built or 'unknown'}; exporting it again")
    try:
        from export.build import ExportOptions, export_from_options
    except ImportError as exc:
        raise UserError(
            f"no default model at {path} and no torch here to export it: run `edge-saliency export "
            f"--out {path}` on a machine with pip install 'edge-saliency[export]', copy it here, "
            "or pass --model"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    log_fn(f"first run: exporting the default model to {path}")
    export_from_options(ExportOptions(out=str(path)), log=log_fn)
    return path
