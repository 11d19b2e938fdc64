"""Writing ONNX files safely: refuse early where the output cannot be written, and never leave
a half-written file (write to a temporary file in the same folder, then rename). No torch here:
the ONNX surgery path uses it too."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from edge_saliency.errors import UserError


def check_writable(out: Path) -> None:
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UserError(f"cannot write {out}: directory {parent} does not exist")
    if out.is_dir():
        raise UserError(f"cannot write {out}: it is a directory")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"cannot write {out}: permission denied")


def write_atomic(model: onnx.ModelProto, out: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
