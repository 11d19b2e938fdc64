"""`edge-saliency bench`: flags (or a TOML file with the same keys) -> bench/runner.run_bench."""
from __future__ import annotations

from edge_saliency import settings
from edge_saliency.cli.args import add_settings_command


def add_parser(sub) -> None:
    from edge_saliency.bench import runner

    add_settings_command(sub, "bench", cmd_bench, description=runner.__doc__.split("\n\n")[0],
                         help="latency, FPS, CPU and memory of the model with and without saliency maps")


def cmd_bench(args) -> int:
    from edge_saliency.bench.runner import run_bench

    return run_bench(settings.resolve("bench", args), args.default_model)
