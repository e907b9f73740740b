"""Security properties: TLS + password auth with the spool, no listening sockets, no shell.

(Plain TLS with a private CA and username/password without TLS are covered in
test_outputs.py; this file adds what was missing: both at once, with the on-disk
spool, across a broker restart, and that no secret lands in the spool or the logs.)
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from brokers import Broker, make_tls_files

from edgesense.sinks.mqtt import MqttSink, mqtt_options_from_url
from edgesense.sinks.spool import DeliveryOptions, SpoolOptions
from edgesense.types import CommandEvent

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "samples"
SOURCE_DIRS = ("edge", "train", "quantize", "bench", "deploy")
PASSWORD = "s3cret-T0ken:/@"
TCP_LISTEN = "0A"


def test_spool_over_tls_with_password_survives_a_broker_restart(tmp_path, caplog):
    for tool in ("openssl", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    caplog.set_level(logging.DEBUG)  # every log line (--verbose shows INFO), not only the warnings
    ca, cert, key = make_tls_files(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge", PASSWORD], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "reader", "r3ader"], check=True)
    broker = Broker(tmp_path / "broker", ("allow_anonymous false", f"password_file {passwd}",
                                                  f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"))
    import paho.mqtt.client as mqtt

    got: list[float] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="secure-reader", clean_session=False)
    sub.username_pw_set("reader", "r3ader")
    sub.tls_set(ca_certs=str(ca))
    sub.reconnect_delay_set(1, 1)
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload)["t_ms"])
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    sub.subscribe("edgesense/command", qos=1)
    assert subscribed.wait(10)
    url = (f"mqtts://edge:{PASSWORD.replace(':', '%3A').replace('/', '%2F').replace('@', '%40')}"
           f"@{broker.host}:{broker.port}?ca_certs={ca}")
    options = mqtt_options_from_url(url, ha_discovery=False, spool_dir=str(tmp_path / "spool"),
                                    reconnect_max_delay_s=1)
    sink = MqttSink(options, spool_options=SpoolOptions(sync="normal"), delivery_options=DeliveryOptions())
    try:
        assert PASSWORD not in repr(sink.options)
        for i in range(5):
            sink.emit(CommandEvent(label="yes", score=0.9, t_ms=float(i), wall_time=0.0))
        broker.stop()
        for i in range(5, 15):
            sink.emit(CommandEvent(label="no", score=0.9, t_ms=float(i), wall_time=0.0))
        broker.start()
        deadline = time.monotonic() + 30
        while len(dict.fromkeys(got)) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(dict.fromkeys(got)) == [float(i) for i in range(15)]
        # The wrong password is refused over TLS too.
        with pytest.raises(RuntimeError, match="[Nn]ot authori[sz]ed"):
            MqttSink(mqtt_options_from_url(f"mqtts://edge:wrong@{broker.host}:{broker.port}?ca_certs={ca}"))
    finally:
        sink.close()
        sub.disconnect()
        sub.loop_stop()
        broker.stop()
    # No secret at rest or in the logs.
    for path in (tmp_path / "spool").iterdir():
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in caplog.text
    assert oct((tmp_path / "spool" / "spool.lock").stat().st_mode & 0o777) == "0o600"


# --------------------------------------------------------------------------- no listening sockets


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _listening(inodes: set[str]) -> list[str]:
    """Entries of /proc/net/{tcp,tcp6} in LISTEN state and bound UDP sockets that belong to ``inodes``."""
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode in inodes and (table.startswith("udp") or state == TCP_LISTEN):
                found.append(f"{table} {local} state {state}")
    return found


def _established(inodes: set[str]) -> int:
    count = 0
    for table in ("tcp", "tcp6"):
        for line in (Path("/proc/net") / table).read_text().splitlines()[1:]:
            cols = line.split()
            count += cols[9] in inodes and cols[3] == "01"
    return count


@pytest.mark.parametrize("with_mqtt", [False, True])
def test_edgesense_run_listens_on_no_port(tiny_model_path, tmp_path, with_mqtt):
    config = tmp_path / "device.yaml"
    config.write_text(f"device: {{name: port-check}}\nmodel: {{path: {tiny_model_path}}}\n"
                      "scenes: {heartbeat_ms: 300, min_hold_ms: 0}\n")
    cmd = [sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(config),
           "--video", str(SAMPLES / "scene.mp4"), "--audio", str(SAMPLES / "commands.wav"), "--headless",
           "--events", str(tmp_path / "e.jsonl")]
    broker = None
    if with_mqtt:
        broker = Broker(tmp_path / "broker", ("allow_anonymous true",))
        cmd += ["--mqtt", f"mqtt://{broker.host}:{broker.port}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        events = tmp_path / "e.jsonl"
        while not (events.exists() and events.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the loop gave no events in 60 s: the check would see no running loop"
            time.sleep(0.1)
        inodes = _socket_inodes(proc.pid)  # the loop is running: model loaded, sources and sinks open
        assert _listening(inodes) == []
        if with_mqtt:
            assert _established(inodes) >= 1, "the check must see the process's sockets at all"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        if broker is not None:
            broker.stop()
    assert proc.returncode == 0, err


# --------------------------------------------------------------------------- no shell


def _python_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20  # the scan really covers the code base
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


SHELL_FUNCTIONS = {"os.system", "os.popen", "commands.getoutput", "subprocess.getoutput",
                   "subprocess.getstatusoutput", "pty.spawn"}
#: Every os.exec* and os.spawn* (execv, execvp, spawnve, ... too: a list of them missed eight) and os.posix_spawn*.
SHELL_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn")
SUBPROCESS_FUNCTIONS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                        "subprocess.check_output"}


def test_no_configuration_value_can_reach_a_shell():
    problems = []
    for path in _python_files():
        text = path.read_text(encoding="utf-8")
        for needle in ("shell=True", "os.system(", "os.popen("):
            if needle in text.replace(" ", ""):
                problems.append(f"{path.relative_to(REPO)}: contains {needle}")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name in SHELL_FUNCTIONS or name.startswith(SHELL_PREFIXES):
                problems.append(f"{where}: {name}()")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where}: {name}(shell=...)")
            if name in SUBPROCESS_FUNCTIONS and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr,
                                                                                        ast.BinOp)):
                problems.append(f"{where}: {name}() with a command string (needs a list of arguments)")
            if name == "yaml.load" and not any(kw.arg == "Loader" for kw in node.keywords):
                problems.append(f"{where}: yaml.load() without a safe Loader")
            if name in ("eval", "exec"):
                problems.append(f"{where}: {name}()")
            if any(kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False)
                   for kw in node.keywords):
                problems.append(f"{where}: allow_pickle")
    assert not problems, "\n".join(problems)


def test_the_shell_scan_catches_what_it_should(tmp_path, monkeypatch):
    """The scanner itself flags each pattern docs/RELIABILITY.md names (so an empty result above means something):
    one per line of the bad file, each said with its line."""
    bad = tmp_path / "edge"
    bad.mkdir()
    patterns = {"os.system('ls')": "os.system()", "os.popen('ls')": "os.popen()", "os.execl(p, p)": "os.execl()",
                "os.execvp(p, [p])": "os.execvp()", "os.execve(p, [p], {})": "os.execve()",
                "os.spawnl(0, p, p)": "os.spawnl()", "os.spawnve(0, p, [p], {})": "os.spawnve()",
                "os.posix_spawn(p, [p], {})": "os.posix_spawn()", "subprocess.run(['ls'], shell=1)": "(shell=...)",
                "subprocess.run(f'espeak {w}')": "command string", "subprocess.Popen('ls ' + w)": "command string",
                "yaml.load(t)": "yaml.load()", "eval(t)": "eval()", "exec(t)": "exec()",
                "np.load(f, allow_pickle=True)": "allow_pickle"}
    (bad / "bad.py").write_text("import os, subprocess, yaml\n" + "".join(f"{call}\n" for call in patterns))
    for i in range(25):
        (bad / f"ok{i}.py").write_text("x = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "SOURCE_DIRS", ("edge",))
    with pytest.raises(AssertionError) as info:
        test_no_configuration_value_can_reach_a_shell()
    message = str(info.value)
    for line, (call, expected) in enumerate(patterns.items(), start=2):
        assert any(f"edge/bad.py:{line}: " in problem and expected in problem for problem in message.splitlines()), \
            (call, message)
