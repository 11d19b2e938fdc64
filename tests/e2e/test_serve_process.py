"""`edge-saliency serve` as a process: config errors are one line naming the key (exit 78), and under a
systemd-like NOTIFY_SOCKET it says READY=1, feeds WATCHDOG=1, says STOPPING=1 on SIGTERM and exits 0
before the unit's TimeoutStopSec; SIGHUP reloads without killing it."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from serve_util import env_for, serve, serve_config_error
from waiting import PATIENCE_S, wait_for

ROOT = Path(__file__).resolve().parents[2]
UNIT = (ROOT / "deploy" / "edge-saliency.service").read_text()


def unit_seconds(key: str) -> float:
    """A time setting of the systemd unit (TimeoutStopSec=10 -> 10.0): the bounds systemd enforces."""
    return float(re.search(rf"^{key}=(\d+)$", UNIT, re.M).group(1))


class Lines:
    """Reads a pipe line by line in a thread, so a test can wait for a line without blocking."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self._t = threading.Thread(target=lambda: [self.lines.append(ln) for ln in pipe], daemon=True)
        self._t.start()

    def count(self, words: str) -> int:
        return sum(words in ln for ln in list(self.lines))

    def text(self) -> str:
        self._t.join(timeout=PATIENCE_S)
        return "".join(self.lines)


@pytest.mark.parametrize("toml,args,env,words", [
    ('jpeg_qualty = 80\n', [], {}, "unknown key 'jpeg_qualty' (did you mean 'jpeg_quality'?)"),
    ('[server]\nlisten = "127.0.0.1:8080"\n', [], {}, "unknown table 'server'"),
    ('alpha = 2\n', [], {}, "key 'alpha': must be at most 1.0, got 2"),
    ('listen = "everywhere"\n', [], {}, "key 'listen': must be HOST:PORT"),
    ('threads = true\n', [], {}, "key 'threads': must be an integer"),
    ('view = "xray"\n', [], {}, "key 'view': must be one of"),
    ('realtime = "yes"\n', [], {}, "key 'realtime': must be true or false"),
    ('stream_fps = nan\n', [], {}, "key 'stream_fps': must be a finite number"),
    ('topk = 3\nlisten = \n', [], {}, "not valid TOML"),
    ('', ["--jpeg-quality", "0"], {}, "--jpeg-quality: must be at least 1, got '0'"),
    ('', ["--max-viewers", "many"], {}, "--max-viewers: must be an integer"),
    ('', [], {"EDGE_SALIENCY_TOKEN": "short"}, "$EDGE_SALIENCY_TOKEN: must be at least 8 characters"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, toml, args, env, words):
    (tmp_path / "config.toml").write_text(toml)
    p = serve(["--config", "config.toml", *args], tmp_path, env)
    assert p.returncode == 78  # EX_CONFIG: the unit's RestartPreventExitStatus=
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert words in lines[0], lines[0]


def test_missing_config_file_and_model_are_one_line(tmp_path):
    p = serve(["--config", "nope.toml"], tmp_path)
    assert p.returncode == 78 and p.stderr.strip() == "edge-saliency: error: config file not found: nope.toml"
    (tmp_path / "c.toml").write_text('model = "missing.onnx"\nsource = "synthetic"\n')
    p = serve(["--config", "c.toml"], tmp_path)
    assert p.returncode == 78 and p.stderr.strip().splitlines() == ["edge-saliency: error: model file not found: missing.onnx"]


def test_cli_flags_override_the_file():
    from edge_saliency.serve.config import load_config

    path = ROOT / "deploy" / "config.example.toml"
    cfg = load_config(path, cli={"view": "lovi", "realtime": "false"}, env={})
    assert cfg.view == "lovi" and cfg.realtime is False
    assert cfg.origin["view"] == "command line" and cfg.origin["listen"] == str(path)
    assert cfg.listen == "127.0.0.1:8080"  # the example keeps the safe default
    cfg = load_config(path, env={"EDGE_SALIENCY_TOKEN": "from-the-environment"})
    assert cfg.token == "from-the-environment" and cfg.origin["token"] == "environment"


def test_sd_notify_ready_watchdog_stopping_and_sigterm_exit(lite0_onnx, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    (tmp_path / "c.toml").write_text(f'model = "{lite0_onnx}"\nsource = "synthetic"\nlisten = "127.0.0.1:0"\n'
                                     'threads = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "serve", "--config", "c.toml"], cwd=tmp_path,
                            env=env_for({"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    messages = []

    def receive_until(want, timeout):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            try:
                messages.extend(sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                continue
            if want in messages:
                return True
        return False

    try:
        # READY=1 must come before systemd gives up on the start (TimeoutStartSec=300: the first
        # start may compile an engine); on a working machine it comes within seconds
        assert receive_until("READY=1", unit_seconds("TimeoutStartSec")), (messages, proc.poll())
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), line
        assert receive_until("WATCHDOG=1", PATIENCE_S), messages  # a guard: it is due every 0.2 s
        with urllib.request.urlopen(url + "/healthz", timeout=PATIENCE_S) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        # SIGTERM must stop serve before systemd's TimeoutStopSec=10 runs out and it SIGKILLs the
        # daemon (a recording or a job cut off, a core dump): that is the bound, not a speed figure
        stop_s = unit_seconds("TimeoutStopSec")
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = proc.wait(timeout=stop_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {stop_s:g} s after SIGTERM: systemd would SIGKILL it (TimeoutStopSec)")
        elapsed = time.monotonic() - t0
        assert receive_until("STOPPING=1", 1), messages  # sent before it exited: already in the socket
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    err = proc.stderr.read()
    assert rc == 0, err
    assert elapsed < stop_s, f"took {elapsed:.2f} s to exit after SIGTERM"
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
    assert messages.index("READY=1") < messages.index("WATCHDOG=1") < messages.index("STOPPING=1")


def test_example_config_lists_every_key_and_the_unit_is_systemd_ready():
    import re

    from edge_saliency.serve.config import options, read_file

    path = ROOT / "deploy" / "config.example.toml"
    text = path.read_text()
    mentioned = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.M))
    assert set(options()) - {"token"} <= mentioned | set(read_file(path))
    assert "token" in text
    unit = (ROOT / "deploy" / "edge-saliency.service").read_text()
    for line in ("Type=notify", "Restart=always", "RestartPreventExitStatus=78", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "SupplementaryGroups=video", "DeviceAllow=char-video4linux rw",
                 "ExecStart=/opt/edge-saliency/venv/bin/edge-saliency serve --config %d/config.toml",
                 "LoadCredential=config.toml:/etc/edge-saliency/config.toml", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+$", unit, re.M)


def test_sighup_reloads_and_the_daemon_keeps_serving(lite0_onnx, tmp_path):
    (tmp_path / "c.toml").write_text(f'model = "{lite0_onnx}"\nsource = "synthetic"\nlisten = "127.0.0.1:0"\n'
                                     'threads = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "edge_saliency", "serve", "--config", "c.toml"], cwd=tmp_path,
                            env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = Lines(proc.stderr)
    reloaded = "SIGHUP: reloaded the allowed host names"
    try:
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), (line, proc.poll())
        for n in (1, 2):
            proc.send_signal(signal.SIGHUP)
            # each reload is waited for (its log line), so the second signal is not merged into the first
            assert wait_for(lambda: stderr.count(reloaded) >= n or proc.poll() is not None), stderr.lines
            assert proc.poll() is None, "SIGHUP killed the daemon"
            with urllib.request.urlopen(url + "/api/latest", timeout=PATIENCE_S) as r:
                assert r.status in (200, 503)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=unit_seconds("TimeoutStopSec"))  # the bound systemd enforces on a stop
    finally:
        if proc.poll() is None:
            proc.kill()
    err = stderr.text()
    assert rc == 0, err
    assert err.count("SIGHUP: reloaded the allowed host names") == 2 and "Traceback" not in err


def test_a_config_holding_the_token_must_not_be_world_readable(tmp_path, caplog):
    import logging

    from edge_saliency.serve.config import load_config

    path = tmp_path / "c.toml"
    line = serve_config_error(tmp_path, 'token = "a-secret-token-123"\nsource = "synthetic"\n', mode=0o644)
    assert "holds the token and is readable by every user (mode 0644): chmod 600" in line
    assert "a-secret-token-123" not in line
    path.chmod(0o640)
    caplog.set_level(logging.WARNING, logger="edge_saliency")
    assert load_config(path, env={}).token == "a-secret-token-123"
    assert any("readable by its group (mode 0640)" in r.getMessage() for r in caplog.records)
    path.chmod(0o600)
    caplog.clear()
    assert load_config(path, env={}).token == "a-secret-token-123" and not caplog.records


def test_a_config_holding_the_mqtt_password_must_not_be_world_readable_either(tmp_path):
    """issue-16's rule for the token applied to issue-15's other secret in the file."""
    from edge_saliency.serve.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    line = serve_config_error(tmp_path, 'source = "synthetic"\n[mqtt]\nhost = "b"\nusername = "cam"\n'
                              'password = "mqtt-secret-77"\n', mode=0o644)
    assert "holds the MQTT password and is readable by every user (mode 0644): chmod 600" in line
    assert "$EDGE_SALIENCY_MQTT_PASSWORD" in line and "mqtt-secret-77" not in line
    path.chmod(0o600)
    assert load_config(path, env={}).mqtt["password"] == "mqtt-secret-77"
    path.write_text('source = "synthetic"\n[mqtt]\nhost = "b"\nusername = "cam"\n')  # no secret: any mode
    path.chmod(0o644)
    assert load_config(path, env={"EDGE_SALIENCY_MQTT_PASSWORD": "x"}).mqtt["password"] == "x"
    with pytest.raises(ConfigError, match="holds the token and the MQTT password"):
        path.write_text('token = "t-123456789012"\n[mqtt]\nhost = "b"\nusername = "c"\npassword = "p"\n')
        load_config(path, env={})


def test_the_token_from_a_systemd_credential(tmp_path):
    from edge_saliency.serve.config import load_config

    (tmp_path / "token").write_text("from-a-credential-42\n")
    cfg = load_config(None, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.token == "from-a-credential-42" and cfg.origin["token"] == "credential"
    cfg = load_config(None, env={"CREDENTIALS_DIRECTORY": str(tmp_path), "EDGE_SALIENCY_TOKEN": "from-the-env-99"})
    assert cfg.token == "from-the-env-99"
