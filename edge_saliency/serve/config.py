"""The daemon's settings: one TOML file with every flag, CLI flags on top of it.

    cfg = load_config(Path("/etc/edge-saliency/config.toml"), cli={"listen": "0.0.0.0:8080"})
    cfg.listen, cfg.model, cfg.view ...

Keys are the `edge-saliency serve` flags with '_' for '-' (`--jpeg-quality` -> `jpeg_quality`),
all top-level (see deploy/config.example.toml). An unknown key, a table, a value of the wrong type
or out of range is rejected at start with the key named, as one line (UserError). The bearer token
may also come from $EDGE_SALIENCY_TOKEN, which wins over the file (keep secrets out of files you
share).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from edge_saliency import settings
from edge_saliency.settings import TOKEN_ENV, ConfigError, Option, coerce, read_file

Config = settings.Settings  # the daemon's merged settings (`cfg.listen`, `cfg["class"]`, `cfg.origin`)

# Tables beside the top-level keys: name -> (default, parser(raw table, where, env=...) -> value). Their
# keys are checked like the top-level ones (check_table); the parsers live with what they configure.
TABLES: dict[str, tuple[Any, Callable[[dict, str], Any]]] = {}


def tables() -> dict[str, tuple[Any, Callable[[dict, str], Any]]]:
    if not TABLES:
        from edge_saliency.serve.cameras import parse_cameras_table
        from edge_saliency.serve.mqtt import parse_mqtt_table

        TABLES.update({"mqtt": (None, parse_mqtt_table), "cameras": ({}, parse_cameras_table)})
    return TABLES


def options() -> dict[str, Option]:
    """serve's top-level keys (edge_saliency/settings.py declares them with run's and bench's)."""
    return settings.for_command("serve")


def check_secret_permissions(path: str | os.PathLike, what: str = "the token") -> None:
    """A config file that holds a secret (the token, the MQTT password) must not be readable by every
    user (refused), nor by its group (a warning)."""
    import logging
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        moves = ([f"the token to ${TOKEN_ENV} or a systemd credential"] if "token" in what else []) + \
            (["the password to $EDGE_SALIENCY_MQTT_PASSWORD"] if "MQTT" in what else [])
        raise ConfigError(f"{path} holds {what} and is readable by every user (mode {stat.S_IMODE(mode):04o}): "
                          f"chmod 600 {path}, or move {' and '.join(moves)}")
    if mode & stat.S_IRGRP:
        logging.getLogger("edge_saliency").warning("%s holds %s and is readable by its group (mode %04o); "
                                                   "chmod 600 it", path, what, stat.S_IMODE(mode))


def credential_token(env) -> tuple[str, str] | None:
    """(path, token) from systemd's LoadCredential=token:... ($CREDENTIALS_DIRECTORY/token), if there."""
    d = env.get("CREDENTIALS_DIRECTORY")
    if not d:
        return None
    p = Path(d) / "token"
    try:
        return str(p), p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def load_config(path: str | os.PathLike | None = None, cli: dict | None = None, env=None) -> Config:
    """Defaults < config file < credential `token` < $EDGE_SALIENCY_TOKEN (token only) < command-line flags."""
    opts = options()
    env = os.environ if env is None else env
    values, origin = settings.defaults("serve")
    for name, (default, _) in tables().items():
        values[name], origin[name] = default, "default"
    if path is not None:
        raw = read_file(path)
        for key, value in raw.items():
            if key in tables():
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: {key!r} must be a table ([{key}]), got {value!r:.60}")
                values[key] = tables()[key][1](value, f"{path}: [{key}]", env=env)
                origin[key] = str(path)
        settings.apply_file(values, origin, raw, "serve", path, ConfigError, skip=tuple(tables()))
    if path is not None:
        secrets = [w for w, there in (("the token", "token" in raw),
                                      ("the MQTT password", isinstance(raw.get("mqtt"), dict)
                                       and raw["mqtt"].get("password") is not None)) if there]
        if secrets:
            check_secret_permissions(path, " and ".join(secrets))
    cred = credential_token(env)
    if cred is not None:
        values["token"] = coerce(opts["token"], cred[1], f"credential {cred[0]}", from_text=True)
        origin["token"] = "credential"
    token = env.get(TOKEN_ENV)
    if token is not None:
        values["token"] = coerce(opts["token"], token, f"${TOKEN_ENV}", from_text=True)
        origin["token"] = "environment"
    settings.apply_cli(values, origin, cli or {}, "serve", ConfigError)
    return Config(values, origin, "serve")


def add_arguments(parser) -> None:
    """serve's flags: the table's, checked when the config is loaded (a bad value exits 78)."""
    settings.add_flags(parser, "serve", convert=False)


def cli_values(args) -> dict:
    """The options given on the command line (argparse namespace -> {key: value})."""
    return settings.given(args, "serve")
