"""The other OpenCV build, put first on a subprocess's PYTHONPATH: the project installs
opencv-python-headless, so the window tests run `edge-saliency run` with the GUI build
(opencv-python, same version) found first; and the "headless build" message is tested with the
headless one where the GUI build is installed. The wheel is installed once per machine (pip
--target, nothing in the venv changes) under $EDGE_SALIENCY_TEST_CACHE or /var/tmp."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = {"gui": "opencv-python", "headless": "opencv-python-headless"}


def cv2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in PACKAGES.values():
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    import cv2

    return cv2.__version__


def opencv_first(kind: str, scratch: Path) -> Path:
    """A folder holding the `kind` ('gui' | 'headless') build of this cv2's version; skips (saying why)
    when pip cannot install it here."""
    ver = cv2_version()
    target = Path(os.environ.get("EDGE_SALIENCY_TEST_CACHE", "/var/tmp/edge-saliency-test-cache")) / f"cv2-{kind}-{ver}"
    if not (target / "cv2").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(scratch),
                            f"{PACKAGES[kind]}=={ver}"], capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            pytest.skip(f"cannot install {PACKAGES[kind]}=={ver}: {p.stderr.strip().splitlines()[-1:]}")
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(scratch), str(target))
    return target


def gui_backend_in(folder: Path | None) -> str | None:
    """The GUI backend of the cv2 a subprocess imports with `folder` first on its path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(folder) if folder else "", os.environ.get("PYTHONPATH", "")) if p))
    code = "import cv2, re; m = re.search(r'^\\s*GUI:\\s*(\\S*)', cv2.getBuildInformation(), re.M); print(m.group(1) if m else '')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout.strip()
    return None if out.upper() in ("", "NONE", "NO") else out
