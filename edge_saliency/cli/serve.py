"""`edge-saliency serve`: flags and the TOML config (serve/config.py) -> the daemon (serve/daemon.py)."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from edge_saliency.serve.config import add_arguments

    p = sub.add_parser(
        "serve", help="long-running daemon: live saliency stream, results API, metrics, health (systemd-ready)",
        description="Serve live saliency over HTTP: a web page, MJPEG streams per view, the newest result as JSON, "
                    "explanations on request, Prometheus metrics and a health check. Every option can also be set "
                    "in a TOML file (--config); flags override it. The bearer token comes from the config key "
                    "'token' or $EDGE_SALIENCY_TOKEN.")
    p.add_argument("--config", metavar="FILE", help="TOML file with any of the options below (keys: the flag names "
                                                    "with _ for -)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from edge_saliency.serve.config import cli_values, load_config
    from edge_saliency.serve.daemon import serve_forever

    def load():
        return load_config(Path(args.config) if args.config else None, cli=cli_values(args))

    return serve_forever(load, default_model=getattr(args, "default_model", None),
                         verbose=getattr(args, "verbose", False))
