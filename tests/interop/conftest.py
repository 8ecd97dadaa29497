"""Shared fixtures: a real `tern serve` process on an ephemeral loopback port."""

import os
import queue
import re
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERN_BIN = os.environ.get("TERN_BIN", str(ROOT / "target" / "debug" / "tern"))
ADDR_RE = re.compile(r"listening for MQTT over TCP addr=127\.0\.0\.1:(\d+)")
# Every listener's line, in the order of `listen` then `[[listener]]`: "TCP", "TLS",
# "WebSocket", "secure WebSocket".
LISTENER_RE = re.compile(r"listening for MQTT over (.+?) addr=127\.0\.0\.1:(\d+)")


class Broker:
    """`tern serve --listen 127.0.0.1:0`, its port read from its own start-up log line."""

    def __init__(self, tmp_path, *extra, config=None):
        """`extra`: more `tern serve` flags; `config`: a TOML config file (its `listen` is
        replaced by 127.0.0.1:0 unless `extra` has a --listen; its `[[listener]]` ports are in
        `self.listeners` as (kind, port), kind "TCP", "TLS", "WebSocket" or "secure WebSocket")."""
        self.log = []
        self.listeners = []
        self.all_up = threading.Event()
        args = [TERN_BIN, "serve"]
        if config is not None:
            args += ["--config", str(config)]
        if "--listen" not in extra:
            args += ["--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [*args, "--data-dir", str(tmp_path / "data"), "--log-level", "info", *extra],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        self.port = None
        started = queue.Queue()
        # Drain the log for the broker's whole life so it never blocks on a full pipe; the first
        # line naming the listener gives the port.
        threading.Thread(target=self._drain, args=(started,), daemon=True).start()
        try:
            self.port = started.get(timeout=30)
        except queue.Empty:
            pass
        if self.port is None or not self.all_up.wait(timeout=30):
            self.proc.kill()
            raise RuntimeError("tern did not start:\n" + "".join(self.log))

    def port_of(self, kind, nth=0):
        """The port of the `nth` listener of `kind` ("TLS", "WebSocket", ...)."""
        return [p for k, p in self.listeners if k == kind][nth]

    def _drain(self, started):
        for line in self.proc.stderr:
            self.log.append(line)
            m = LISTENER_RE.search(line)
            if m and not self.all_up.is_set():
                self.listeners.append((m.group(1), int(m.group(2))))
            if "tern started" in line:
                self.all_up.set()
            m = ADDR_RE.search(line)
            if m and self.port is None:
                started.put(int(m.group(1)))
        started.put(None)
        self.all_up.set()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()
