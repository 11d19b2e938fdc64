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
# the modules that add a command, and the command each adds
COMMAND_MODULES = {"edge_saliency.cli.run": "run", "edge_saliency.cli.serve": "serve",
                   "edge_saliency.cli.bench": "bench", "edge_saliency.cli.explain": "explain"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Real-time CNN saliency maps on small devices.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('edge_saliency').__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    add_export_parser(sub)
    for mod_name, command in COMMAND_MODULES.items():
        try:
            mod = __import__(mod_name, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue
            _add_broken_command(sub, command, exc)
            continue
        except (ImportError, OSError) as exc:  # a native library is missing (libxcb, libGL, libgomp ...)
            _add_broken_command(sub, command, exc)
            continue
        add = getattr(mod, "add_parser", None)
        if add is not None:
            try:
                add(sub)
            except (ImportError, OSError) as exc:  # the command's options need a module that cannot load
                _add_broken_command(sub, command, exc)
    return parser


def _add_broken_command(sub, command: str, exc: BaseException) -> None:
    """The command's module cannot be imported here: the command stays listed and, when used, says
    why in one line instead of a traceback."""
    from edge_saliency.runtime.sysdeps import import_error_line

    line = import_error_line(exc)
    p = sub.choices.get(command)  # add_parser may have got this far before the failing import
    if p is None:
        p = sub.add_parser(command, help=f"(unavailable here: {line.split(':')[0][:80]}; run it for more)", add_help=False)
    else:
        for action in sub._choices_actions:
            if action.dest == command:
                action.help = f"(unavailable here: {line.split(':')[0][:80]}; run it for more)"

    def fail(args, line=line):
        raise UserError(f"{command}: {line}")

    fail.takes_anything = True  # main() passes it every argument unparsed
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(getattr(args, "func", None), "takes_anything", False):
        parser.parse_args(argv)  # the usual (one-line) usage error for unknown arguments
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
    except (ImportError, OSError) as exc:
        if isinstance(exc, OSError) and not _is_library_error(exc):
            return _unexpected(exc)
        from edge_saliency.runtime.sysdeps import import_error_line

        if os.environ.get("EDGE_SALIENCY_DEBUG"):
            raise
        print(f"{PROG}: error: {import_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not the user's fault: still one line unless debugging
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    if os.environ.get("EDGE_SALIENCY_DEBUG"):
        raise exc
    print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (EDGE_SALIENCY_DEBUG=1 shows the traceback)",
          file=sys.stderr)
    return 1


def _is_library_error(exc: OSError) -> bool:
    """An OSError from loading a shared library (ctypes, a DLL) rather than from a file the user named."""
    from edge_saliency.runtime.sysdeps import missing_library

    return exc.filename is None and missing_library(exc) is not None


if __name__ == "__main__":
    sys.exit(main())
