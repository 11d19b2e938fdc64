"""Declared settings: an option (name, type, default, help, check), its coercion from TOML or
command-line text, and a table of them checked with "did you mean" for unknown keys. The daemon's
config (config.py) and the tables of its parts (cameras, mqtt) are declared with these."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from edge_saliency.errors import UserError


EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus= so a bad config is not restarted forever


class ConfigError(UserError):
    """A bad key or value in the config file or on the command line (names the key). Exit 78
    (EX_CONFIG), so that systemd does not restart a daemon whose configuration cannot work."""

    exit_code = EX_CONFIG


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # str, int, float, bool
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # value -> problem (None if fine)
    nullable: bool = False  # may be left unset (None): "automatic"


def in_range(lo=None, hi=None):
    def check(v):
        if lo is not None and v < lo:
            return f"must be at least {lo}"
        if hi is not None and v > hi:
            return f"must be at most {hi}"
        return None
    return check


def one_of(choices):
    choices = tuple(choices)

    def check(v):
        return None if v in choices else f"must be one of: {', '.join(choices)}"
    return check


def coerce(opt: Option, value, where: str, from_text: bool):
    """A raw value (TOML-typed, or text from the command line) -> the option's type, checked."""
    original = value

    def bad(why: str):
        v = original
        shown = repr(v) if not isinstance(v, str) or len(v) < 80 else repr(v[:77] + "...")
        return ConfigError(f"{where}: {why}, got {shown}")

    if value is None:
        if opt.nullable:
            return None
        raise bad("must be set")
    kind = opt.kind
    if from_text and isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                value = low in ("true", "1", "yes", "on")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = float(text)
        except ValueError:
            raise bad(f"must be {'true or false' if kind is bool else 'an integer' if kind is int else 'a number'}") from None
    if kind is bool and not isinstance(value, bool):
        raise bad("must be true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("must be an integer")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("must be a number")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("must be a finite number")
    if kind is str:
        if opt.name == "class" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise bad("must be a string")
        if opt.nullable and value == "" and opt.name != "token":
            return None
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            raise bad(problem)
    return value


def check_table(raw: dict, opts: dict[str, Option], where: str) -> dict:
    """A table's keys checked like the top-level ones: {key: value} with every option (defaults filled in)."""
    out = {name: o.default for name, o in opts.items()}
    for key, value in raw.items():
        if key not in opts:
            what = "table" if isinstance(value, dict) else "key"
            close = difflib.get_close_matches(key.replace("-", "_").lower(), list(opts), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown {what} {key!r}{hint}; known keys: {', '.join(opts)}")
        out[key] = coerce(opts[key], value, f"{where} key {key!r}", from_text=False)
    return out
