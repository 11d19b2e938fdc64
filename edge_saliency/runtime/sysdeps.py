"""What this machine's native libraries allow: a window, and one clear line when an import fails.

Headless devices (Raspberry Pi OS Lite, a Jetson over SSH, a container) install
``opencv-python-headless``: it has no GUI backend and needs no X libraries. The GUI build
(``opencv-python``, the ``gui`` extra) needs libxcb, libGL and friends; where they are missing
``import cv2`` fails with an ImportError about a shared object. Neither case may end in a
traceback: the CLI turns them into one line that says what to install (``import_error_line``),
and ``run`` asks ``window_unavailable`` before it opens a window.
"""
from __future__ import annotations

import os
import re
import sys

# the Python module -> the pip package that provides it, and what it is for
PACKAGES = {
    "cv2": ("opencv-python-headless", "OpenCV"),
    "onnxruntime": ("onnxruntime", "ONNX Runtime"),
    "openvino": ("openvino", "OpenVINO"),
    "numpy": ("numpy", "numpy"),
    "psutil": ("psutil", "psutil"),
    "prometheus_client": ("prometheus-client", "prometheus-client"),
}
_SHARED_OBJECT = re.compile(r"([\w.+-]+\.(?:so(?:\.[\w.]+)?|dylib|dll))")


def missing_library(exc: BaseException) -> str | None:
    """'libxcb.so.1' from "libxcb.so.1: cannot open shared object file: ...", else None."""
    m = _SHARED_OBJECT.search(str(exc))
    return m.group(1) if m else None


def _module_of(exc: BaseException) -> str | None:
    """Which of our native dependencies an import error came from (by name or by traceback)."""
    name = getattr(exc, "name", None)
    if name:
        top = name.split(".")[0]
        if top in PACKAGES:
            return top
    tb = exc.__traceback__
    found = None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        for mod in PACKAGES:
            if f"/{mod}/" in path or path.endswith(f"/{mod}.py"):
                found = mod
        tb = tb.tb_next
    return found


def import_error_line(exc: BaseException, module: str | None = None) -> str:
    """One line for an ImportError/OSError raised while importing a dependency."""
    module = module or _module_of(exc)
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    lib = missing_library(exc)
    if module is None:
        if isinstance(exc, ModuleNotFoundError) and getattr(exc, "name", None):
            return f"a required Python module is missing: {exc.name} (reinstall edge-saliency: pip install edge-saliency)"
        return f"cannot load a required library: {text}"
    package, what = PACKAGES[module]
    if isinstance(exc, ModuleNotFoundError) and (getattr(exc, "name", "") or "").split(".")[0] == module:
        return f"{what} is not installed: pip install {package}"
    if module == "cv2" and lib:
        if lib.startswith(("libxcb", "libX", "libGL", "libEGL", "libgthread", "libSM", "libICE", "libQt",
                           "libxkb", "libfontconfig", "libfreetype", "libdbus")):
            return (f"OpenCV cannot load {lib}: this is the GUI build of OpenCV (opencv-python) on a machine without "
                    f"X/GL libraries; on a headless device use the headless build: pip uninstall -y opencv-python "
                    f"&& pip install --force-reinstall opencv-python-headless (or install the library: "
                    f"apt-get install libgl1 libxcb1 libglib2.0-0)")
        return f"OpenCV cannot load the system library {lib} ({text}); install it with your package manager"
    if lib:
        return f"{what} cannot load the system library {lib} ({text}); install it with your package manager"
    return f"{what} failed to import: {text}"


def has_display() -> bool:
    """Whether a window could be shown at all (Qt aborts the process when it cannot, so ask first)."""
    return display_problem() is None


def display_problem() -> str | None:
    """Why there is no display to open a window on (one line), or None when there is one."""
    if os.environ.get("CI") or os.environ.get("EDGE_SALIENCY_HEADLESS"):
        return "headless mode forced by $CI / $EDGE_SALIENCY_HEADLESS"
    if not sys.platform.startswith("linux"):
        return None
    wayland, x11 = os.environ.get("WAYLAND_DISPLAY"), os.environ.get("DISPLAY")
    if not wayland and not x11:
        return "no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    if wayland and _wayland_socket_exists(wayland):
        return None
    if x11 and _x11_reachable(x11):
        return None
    return f"no display server answers at {'$WAYLAND_DISPLAY=' + wayland if wayland else '$DISPLAY=' + x11}"


def _wayland_socket_exists(name: str) -> bool:
    path = name if name.startswith("/") else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), name)
    return os.path.exists(path)


def _x11_reachable(display: str) -> bool:
    """':0', 'unix:0', ':0.0' -> the local socket exists; 'host:10' (ssh -X) -> its TCP port answers."""
    import socket

    m = re.fullmatch(r"(?:(.*?)/)?([^:]*):(\d+)(?:\.\d+)?", display)
    if not m:
        return True  # a form we do not know: let OpenCV try
    host, number = m.group(2), int(m.group(3))
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        if os.path.exists(path):
            return True
        try:  # Linux X servers also listen on the abstract socket of the same name
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect("\0" + path)
                return True
        except OSError:
            return False
    try:
        with socket.create_connection((host, 6000 + number), timeout=1.0):
            return True
    except OSError:
        return False


def gui_backend(build_information: str | None = None) -> str | None:
    """The HighGUI backend this cv2 was built with ('QT5', 'GTK3', 'WIN32UI', 'COCOA' ...), None if none.

    opencv-python-headless reports ``GUI: NONE``; builds older than 4.5 have no ``GUI:`` line and
    list ``QT: YES`` / ``GTK+: YES`` etc. instead."""
    if build_information is None:
        import cv2

        build_information = cv2.getBuildInformation()
    m = re.search(r"^[ \t]*GUI:[ \t]*(\S+)", build_information, re.MULTILINE)
    if m:
        return None if m.group(1).upper() == "NONE" else m.group(1)
    for key in ("QT", "GTK+ 3.x", "GTK+ 2.x", "GTK+", "Win32 UI", "Cocoa"):
        m = re.search(rf"^\s*{re.escape(key)}:\s*YES", build_information, re.MULTILINE)
        if m:
            return key
    return None


def window_unavailable(build_information: str | None = None) -> str | None:
    """Why no OpenCV window can open here (one line), or None when it can."""
    problem = display_problem()
    if problem is not None:
        return f"no window: {problem}"
    if gui_backend(build_information) is None:
        return ("no window: this OpenCV has no GUI backend (the headless build); for a window install the gui "
                "extra: pip install --force-reinstall --no-deps opencv-python==" + _cv2_version())
    return None


def _cv2_version() -> str:
    try:
        from importlib.metadata import version

        return version("opencv-python-headless")
    except Exception:
        import cv2

        return cv2.__version__
