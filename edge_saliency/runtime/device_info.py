"""What machine a benchmark ran on, so a slow result can be explained.

Small parsers over what Linux, Raspberry Pi OS and Jetson Linux expose, each taking text (so the
tests feed them fakes), and ``collect()`` that reads the real files and commands. Nothing here
fails: what cannot be read is left out.

- every machine: CPU model, cores, VNNI / dot-product flags (int8 speed), onnxruntime version
  and providers, thermal zones (/sys/class/thermal)
- Raspberry Pi: ``vcgencmd get_throttled`` (under-voltage, frequency capping, throttling, now and
  since boot) and ``vcgencmd measure_temp``
- Jetson: power mode (``nvpmodel -q``) and the thermal zones (CPU/GPU/SOC temperatures)
- NVIDIA GPU: ``nvidia-smi`` name, driver and memory
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

# vcgencmd get_throttled bits (Raspberry Pi documentation)
THROTTLED_BITS = {
    0: "under-voltage now", 1: "arm frequency capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage has occurred", 17: "arm frequency capping has occurred",
    18: "throttling has occurred", 19: "soft temperature limit has occurred",
}
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def read_text(path: str | os.PathLike) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def run_command(cmd: list[str], timeout: float = 3.0) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


# ------------------------------------------------------------------ parsers (tested with fakes)
def parse_cpuinfo(text: str) -> dict:
    """/proc/cpuinfo -> model name, logical cores, int8-relevant flags (x86 'flags', ARM 'Features')."""
    model, cores, flags, hardware = None, 0, set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            cores += 1
        elif key in ("model name", "cpu model") and not model:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("hardware", "model") and value and not value.isdigit():
            hardware = hardware or value
    return {"model": model or hardware, "logical_cores": cores or None,
            "int8_flags": sorted(f for f in INT8_FLAGS if f in flags)}


def parse_device_tree_model(text: str | None) -> dict:
    """/proc/device-tree/model ('Raspberry Pi 4 Model B Rev 1.4\\0') -> board kind."""
    model = (text or "").replace("\x00", "").strip()
    kind = None
    if model.lower().startswith("raspberry pi"):
        kind = "raspberry_pi"
    elif "jetson" in model.lower() or "nvidia" in model.lower():
        kind = "jetson"
    return {"board": model or None, "kind": kind}


def parse_throttled(text: str | None) -> dict | None:
    """'throttled=0x50005' -> {'value': '0x50005', 'flags': [...], 'ok': False}."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", text or "")
    if not m:
        return None
    value = int(m.group(1), 16)
    flags = [name for bit, name in THROTTLED_BITS.items() if value >> bit & 1]
    return {"value": m.group(1), "flags": flags, "ok": value == 0}


def parse_vcgencmd_temp(text: str | None) -> float | None:
    """"temp=48.3'C" -> 48.3"""
    m = re.search(r"temp=([-\d.]+)", text or "")
    return float(m.group(1)) if m else None


def parse_nvpmodel(text: str | None) -> dict | None:
    """'NV Power Mode: MAXN\\n0' -> {'name': 'MAXN', 'id': 0}."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    if not m:
        return None
    ids = re.findall(r"^\s*(\d+)\s*$", text, flags=re.M)
    return {"name": m.group(1), "id": int(ids[0]) if ids else None}


def parse_nvidia_smi(text: str | None) -> list[dict]:
    """`nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader` lines."""
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def thermal_zones(root: str | os.PathLike = "/sys/class/thermal") -> dict[str, float]:
    """{zone type: temperature °C} from /sys/class/thermal/thermal_zone*/{type,temp} (millidegrees)."""
    zones = {}
    base = Path(root)
    if not base.is_dir():
        return zones
    for zone in sorted(base.glob("thermal_zone*")):
        kind, temp = read_text(zone / "type"), read_text(zone / "temp")
        try:
            value = int(temp.strip()) / 1000.0 if temp else None
        except ValueError:
            value = None
        if value is not None:
            name = (kind or zone.name).strip()
            while name in zones:
                name += "'"
            zones[name] = value
    return zones


# ------------------------------------------------------------------ the real machine
def cpu_model(root: str | os.PathLike = "/") -> str:
    """The CPU's name from /proc/cpuinfo (model name, or the board's hardware line on ARM)."""
    model = parse_cpuinfo(read_text(Path(root) / "proc/cpuinfo") or "")["model"]
    return model or platform.processor() or platform.machine()


def collect(root: str = "/", run=run_command) -> dict:
    """Everything above for this machine (root and run are for tests)."""
    r = Path(root)
    cpu = parse_cpuinfo(read_text(r / "proc/cpuinfo") or "")
    board = parse_device_tree_model(read_text(r / "proc/device-tree/model"))
    if board["kind"] is None and (r / "etc/nv_tegra_release").exists():
        board["kind"] = "jetson"
    info = {
        "cpu": cpu_model(root),
        "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "logical_cores": cpu.get("logical_cores") or os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "int8_flags": cpu["int8_flags"], "board": board["board"], "kind": board["kind"] or "generic",
        "thermal_zones": thermal_zones(r / "sys/class/thermal"),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    if board["kind"] == "raspberry_pi":
        info["throttled"] = parse_throttled(run(["vcgencmd", "get_throttled"]))
        info["temperature_c"] = parse_vcgencmd_temp(run(["vcgencmd", "measure_temp"]))
    if board["kind"] == "jetson":
        info["power_mode"] = parse_nvpmodel(run(["nvpmodel", "-q"]))
    gpus = parse_nvidia_smi(run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                 "--format=csv,noheader"])) if board["kind"] != "raspberry_pi" else []
    if gpus:
        info["gpus"] = gpus
    return info


def summary(info: dict) -> str:
    """One line for the table's header."""
    parts = [f"{info.get('cpu')} ({info.get('usable_cores')}/{info.get('logical_cores')} cores usable)"]
    if info.get("board"):
        parts.append(info["board"])
    parts.append(f"int8 dot-product: {', '.join(info['int8_flags']) or 'none'}")
    if info.get("gpus"):
        parts.append("GPU " + ", ".join(g["name"] for g in info["gpus"]))
    if info.get("power_mode"):
        parts.append(f"power mode {info['power_mode']['name']}")
    if info.get("throttled"):
        t = info["throttled"]
        parts.append("not throttled" if t["ok"] else "THROTTLING: " + ", ".join(t["flags"]))
    temps = info.get("thermal_zones") or {}
    if info.get("temperature_c") is not None:
        parts.append(f"{info['temperature_c']:.1f}°C")
    elif temps:
        parts.append(f"max zone {max(temps.values()):.1f}°C")
    parts.append(f"onnxruntime {info.get('onnxruntime')}")
    return "; ".join(parts)
