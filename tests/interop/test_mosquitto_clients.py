"""Interop with Debian's mosquitto_pub / mosquitto_sub (2.0.x), in MQTT 3.1.1 and 5.0."""

import subprocess
import uuid

import pytest

TIMEOUT = 15
VERSIONS = ["311", "5"]


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT, check=True)


class Sub:
    """mosquitto_sub in debug mode: its SUBACK line tells us the subscription is in place."""

    def __init__(self, port, *args):
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-p", str(port), "-h", "127.0.0.1", "-d", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines = []
        for line in self.proc.stdout:
            self.lines.append(line)
            if "received SUBACK" in line:
                return
        raise RuntimeError("mosquitto_sub did not subscribe: " + "".join(self.lines))

    def finish(self):
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        self.lines.extend(out.splitlines(keepends=True))
        assert self.proc.returncode == 0, "".join(self.lines)
        # Debug lines start with "Client " or "Subscribed"; the rest are messages.
        return [l.rstrip("\n") for l in self.lines
                if not l.startswith(("Client ", "Subscribed", " ")) and l.strip()]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip(broker, version, qos):
    topic = f"mosq/{uuid.uuid4().hex[:8]}"
    sub = Sub(broker.port, "-V", version, "-q", str(qos), "-t", topic, "-C", "3")
    for i in range(3):
        run("mosquitto_pub", "-p", str(broker.port), "-h", "127.0.0.1", "-V", version, "-q", str(qos),
            "-t", topic, "-m", f"hello-{i}")
    assert sub.finish() == [f"hello-{i}" for i in range(3)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained(broker, version):
    topic = f"mosq/retained/{uuid.uuid4().hex[:8]}"
    run("mosquitto_pub", "-p", str(broker.port), "-V", version, "-q", "1", "-r", "-t", topic, "-m", "kept")
    out = run("mosquitto_sub", "-p", str(broker.port), "-V", version, "-t", "mosq/retained/#", "-C", "1", "-v",
              "-W", "10")
    assert out.stdout.strip() == f"{topic} kept"
    # An empty retained payload deletes it: a new subscriber gets nothing (--retained-only exits
    # at the first non-retained message or times out; we publish a live marker to end it).
    run("mosquitto_pub", "-p", str(broker.port), "-V", version, "-r", "-t", topic, "-n")
    sub = Sub(broker.port, "-V", version, "-t", topic, "-C", "1")
    run("mosquitto_pub", "-p", str(broker.port), "-V", version, "-t", topic, "-m", "live")
    assert sub.finish() == ["live"]


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_with_c(broker, version):
    topic = f"mosq/persist/{uuid.uuid4().hex[:8]}"
    cid = "mosq-" + uuid.uuid4().hex[:8]
    extra = ["-x", "600"] if version == "5" else []
    # Subscribe with a persistent session, then leave (-E: exit once subscribed).
    run("mosquitto_sub", "-p", str(broker.port), "-V", version, "-c", "-i", cid, "-q", "1", "-t", topic, "-E",
        *extra)
    for i in range(3):
        run("mosquitto_pub", "-p", str(broker.port), "-V", version, "-q", "1", "-t", topic, "-m", f"queued-{i}")
    out = run("mosquitto_sub", "-p", str(broker.port), "-V", version, "-c", "-i", cid, "-q", "1", "-t", topic,
              "-C", "3", "-W", "10", *extra)
    assert out.stdout.split() == [f"queued-{i}" for i in range(3)]
