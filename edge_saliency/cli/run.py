"""`edge-saliency run`: flags (or a TOML file with the same keys) -> pipeline/live.run_live."""
from __future__ import annotations

from edge_saliency import settings


def add_parser(sub) -> None:
    from edge_saliency.pipeline.render import VIEWS

    p = sub.add_parser(
        "run", help="live overlay: camera/video/demo -> saliency maps on screen, in a file, or in a log",
        description="Show where the model looks, live: capture -> infer -> render -> window/recording/log. "
                    "Keys in the window: 1-6 views (" + ", ".join(VIEWS) + "), v next view, h HUD, +/- alpha, "
                    "s snapshot, ? key help, q/Esc quit.")
    p.add_argument("--config", metavar="FILE", help="TOML file with any of the settings below (keys: the flag names "
                                                    "with _ for -); flags override it")
    settings.add_flags(p, "run")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from edge_saliency.pipeline.live import run_live

    return run_live(settings.resolve("run", args), args.default_model)
