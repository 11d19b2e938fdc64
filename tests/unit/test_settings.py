"""One settings table for run, serve and bench (edge_saliency/settings.py): the flags and the TOML
keys come from the same declaration, a file's unknown key gets a "did you mean", a key of another
command says which one takes it, and a bad value is one line (exit 2 for run/bench, 78 for serve)."""
from __future__ import annotations

import argparse

import pytest

from edge_saliency import settings
from edge_saliency.cli import OneLineParser, main
from edge_saliency.errors import UserError


def parse(command: str, argv: list[str]):
    p = OneLineParser(prog=f"edge-saliency {command}")
    p.add_argument("--config")
    settings.add_flags(p, command)
    return settings.resolve(command, p.parse_args(argv))


def test_every_setting_is_a_flag_and_a_key_of_the_commands_that_take_it():
    for command in settings.COMMANDS:
        p = argparse.ArgumentParser()
        settings.add_flags(p, command)
        flags = {s for a in p._actions for s in a.option_strings}
        for name, o in settings.for_command(command).items():
            assert (o.flag_name in flags) == o.flag, (command, name)
    # the shared ones are declared once and taken by all three
    assert {"model", "gpu_device", "trt_fp16"} <= set(settings.for_command("bench")) & set(settings.for_command("run")) \
        & set(settings.for_command("serve"))
    assert settings.for_command("serve")["token"].flag is False  # a secret on the command line shows in `ps`


def test_defaults_per_command_file_then_flags(tmp_path):
    assert parse("run", []).topk == 3 and parse("run", []).realtime is None  # run: realtime follows the window
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('view = "lovi"\nalpha = 0.25\nmax_frames = 40\nhud = false\n')
    cfg = parse("run", ["--config", str(cfg_file), "--alpha", "0.75", "--fast"])
    assert (cfg.view, cfg.alpha, cfg.max_frames, cfg.hud, cfg.realtime) == ("lovi", 0.75, 40, False, False)
    assert cfg.origin["view"] == str(cfg_file) and cfg.origin["alpha"] == "command line" and cfg.origin["topk"] == "default"


@pytest.mark.parametrize("toml, message", [
    ('veiw = "lovi"\n', "unknown key 'veiw' (did you mean 'view'?)"),
    ('jpeg_quality = 70\n', "'jpeg_quality' is a setting of serve, not of run"),
    ('runs = 50\n', "'runs' is a setting of bench, not of run"),
    ('alpha = "half"\n', "key 'alpha': must be a number, got 'half'"),
    ('max_frames = 0\n', "key 'max_frames': must be at least 1, got 0"),
    ('view = \n', "not valid TOML"),
])
def test_a_bad_run_config_is_one_line_exit_2(tmp_path, capsys, toml, message):
    (tmp_path / "run.toml").write_text(toml)
    assert main(["run", "--config", str(tmp_path / "run.toml"), "--headless"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bench_lists_are_checked_item_by_item():
    with pytest.raises(SystemExit, match="^2$"):
        parse("bench", ["--precision", "fp32,fp8"])
    with pytest.raises(SystemExit, match="^2$"):
        parse("bench", ["--threads", "1,two"])
    cfg = parse("bench", ["--precision", "fp32,int8", "--threads", "1,2", "--no-plain"])
    assert (cfg.precision, cfg.threads, cfg.plain, cfg.runs) == ("fp32,int8", "1,2", False, 300)


def test_serve_takes_the_same_declarations_and_its_config_errors_exit_78(tmp_path):
    from edge_saliency.serve.config import load_config

    cfg = load_config(None, cli={"view": "lovi", "topk": "4"}, env={})
    assert (cfg.view, cfg.topk, cfg.alpha) == ("lovi", 4, 0.5)
    (tmp_path / "c.toml").write_text("max_frames = 10\n")
    with pytest.raises(UserError, match="'max_frames' is a setting of run, not of serve") as exc:
        load_config(tmp_path / "c.toml", env={})
    assert exc.value.exit_code == 78
