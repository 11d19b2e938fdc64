"""`edge-saliency` command line: export, run, and the tools built on them.

Every user error ends as one line on stderr and a non-zero exit; set EDGE_SALIENCY_DEBUG=1 to
see the traceback of an unexpected failure.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from edge_saliency.cli.export import add_export_parser
from edge_saliency.errors import UserError

PROG = "edge-saliency"


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr and exit 2, like every other user error (argparse
    prints the whole usage first, which for `export` is 18 lines). `--help` still shows it all."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Real-time CNN saliency maps on small devices.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('edge_saliency').__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    add_export_parser(sub)
    for mod_name in ("edge_saliency.pipeline.live", "edge_saliency.serve.daemon", "edge_saliency.bench.runner", "edge_saliency.explain"):
        try:
            mod = __import__(mod_name, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        add = getattr(mod, "add_parser", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # the commands' default model: exported on first use, which needs torch (export/): the library
    # gets the function from here and never imports the command line or export/ itself
    from edge_saliency.cli.default_model import ensure_default_model

    args.default_model = ensure_default_model
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not the user's fault: still one line unless debugging
        if os.environ.get("EDGE_SALIENCY_DEBUG"):
            raise
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (EDGE_SALIENCY_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
