"""What more than one command's parser takes: the settings commands' parser (run, bench: the
table's flags plus --config), parsers of numbers, sizes and per-channel values."""
from __future__ import annotations

from edge_saliency import settings
from edge_saliency.errors import UserError


def add_settings_command(sub, command: str, func, **parser_args):
    """A command whose options are the settings table's for it (settings.py), plus --config FILE."""
    p = sub.add_parser(command, **parser_args)
    p.add_argument("--config", metavar="FILE", help="TOML file with any of the settings below (keys: the flag names "
                                                    "with _ for -); flags override it")
    settings.add_flags(p, command)
    p.set_defaults(func=func)
    return p


def _floats(text: str, n: int | None = None, what: str = "value") -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} wants comma-separated numbers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise UserError(f"{what} wants {n} comma-separated numbers, got {text!r}")
    return vals


def channel_values(text: str | None, what: str, positive: bool = False) -> tuple[float, float, float] | None:
    """'127' or '123.7,116.3,103.5' -> three per-channel values (one value is used for all three)."""
    if not text:
        return None
    vals = _floats(text, None, what)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise UserError(f"{what} wants 1 or 3 comma-separated numbers, got {text!r}")
    if positive and min(vals) <= 0:
        raise UserError(f"{what} values must be positive")
    return vals[0], vals[1], vals[2]


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise UserError(f"--input-size wants N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16:
        raise UserError(f"--input-size wants N or HxW with sides of at least 16, got {text!r}")
    return parts[0], parts[1]
