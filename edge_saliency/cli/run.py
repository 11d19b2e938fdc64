"""`edge-saliency run`: flags (or a TOML file with the same keys) -> pipeline/live.run_live."""
from __future__ import annotations

from edge_saliency import settings
from edge_saliency.cli.args import add_settings_command


def add_parser(sub) -> None:
    from edge_saliency.pipeline.render import VIEWS

    add_settings_command(
        sub, "run", cmd_run,
        help="live overlay: camera/video/demo -> saliency maps on screen, in a file, or in a log",
        description="Show where the model looks, live: capture -> infer -> render -> window/recording/log. "
                    "Keys in the window: 1-6 views (" + ", ".join(VIEWS) + "), v next view, h HUD, +/- alpha, "
                    "s snapshot, ? key help, q/Esc quit.")


def cmd_run(args) -> int:
    from edge_saliency.pipeline.live import run_live

    return run_live(settings.resolve("run", args), args.default_model)
