"""The command line's own promises: an argument error is one line and exit 2 for every command;
an unexpected failure is one line and exit 1, with the traceback only under EDGE_SALIENCY_DEBUG."""
from __future__ import annotations

import pytest

from edge_saliency import cli


@pytest.mark.parametrize("argv, message", [
    (["export", "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["export", "--map-fraction", "two"], "argument --map-fraction: invalid int value: 'two'"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench", "--runs", "x"], "--runs"),
    (["serve", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["eval", "--images"], "argument --images"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
])
def test_argument_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit, match=r"^2$") as exc:  # SystemExit's text is its exit code
        cli.main(argv)
    assert exc.value.code == 2
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("edge-saliency"), out.err
    assert out.out == ""


def _boom(args):
    raise RuntimeError("a bug, not the user's fault")


def test_an_unexpected_failure_is_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.delenv("EDGE_SALIENCY_DEBUG", raising=False)
    monkeypatch.setattr(cli, "build_parser", _parser_with(_boom))
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "edge-saliency: error: unexpected RuntimeError: a bug, not the user's fault "
        "(EDGE_SALIENCY_DEBUG=1 shows the traceback)"]


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("EDGE_SALIENCY_DEBUG", "1")
    monkeypatch.setattr(cli, "build_parser", _parser_with(_boom))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["boom"])


def test_a_user_error_is_one_line_with_its_exit_code(monkeypatch, capsys):
    from edge_saliency.errors import UserError

    def user_error(args):
        raise UserError("camera 3 is not there")

    monkeypatch.setattr(cli, "build_parser", _parser_with(user_error))
    assert cli.main(["boom"]) == 2
    assert capsys.readouterr().err.strip() == "edge-saliency: error: camera 3 is not there"


def _parser_with(func):
    real = cli.build_parser

    def build():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        sub.add_parser("boom").set_defaults(func=func)
        return parser
    return build
