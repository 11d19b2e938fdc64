"""`edge-saliency bench`: flags (or a TOML file with the same keys) -> bench/runner.run_bench."""
from __future__ import annotations

from edge_saliency import settings


def add_parser(sub) -> None:
    from edge_saliency.bench import runner

    p = sub.add_parser("bench", help="latency, FPS, CPU and memory of the model with and without saliency maps",
                       description=runner.__doc__.split("\n\n")[0])
    p.add_argument("--config", metavar="FILE", help="TOML file with any of the settings below (keys: the flag names "
                                                    "with _ for -); flags override it")
    settings.add_flags(p, "bench")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from edge_saliency.bench.runner import run_bench

    return run_bench(settings.resolve("bench", args), args.default_model)
