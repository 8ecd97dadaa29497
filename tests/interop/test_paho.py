"""Interop with Python paho-mqtt 2.x, in MQTT 3.1.1 and 5.0."""

import queue
import subprocess
import sys
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

TIMEOUT = 10
PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5.0": mqtt.MQTTv5}


class Client:
    """A paho client whose events land in queues, so tests wait on events, not on sleeps."""

    def __init__(self, port, protocol, client_id=None, clean=True, expiry=None, will=None):
        self.protocol = protocol
        self.client_id = client_id or "t-" + uuid.uuid4().hex[:10]
        kwargs = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": self.client_id,
                  "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(**kwargs)
        self.messages = queue.Queue()
        self.events = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.events.put(("connect", flags, rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.events.put(("suback", mid, rcs))
        self.c.on_publish = lambda c, u, mid, rc, props: self.events.put(("puback", mid))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.events.put(("disconnect", rc))
        if will:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos=qos, retain=retain)
        connect_kwargs = {}
        if protocol == mqtt.MQTTv5:
            connect_kwargs["clean_start"] = clean
            if expiry is not None:
                p = Properties(PacketTypes.CONNECT)
                p.SessionExpiryInterval = expiry
                connect_kwargs["properties"] = p
        self.c.connect("127.0.0.1", port, keepalive=30, **connect_kwargs)
        self.c.loop_start()
        self.connack = self.expect("connect")

    def expect(self, kind):
        while True:
            ev = self.events.get(timeout=TIMEOUT)
            if ev[0] == kind:
                return ev

    def subscribe(self, topic, qos):
        _, mid = self.c.subscribe(topic, qos)
        ev = self.expect("suback")
        assert ev[1] == mid
        return ev[2]

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            info.wait_for_publish(timeout=TIMEOUT)
            assert info.is_published()

    def message(self):
        return self.messages.get(timeout=TIMEOUT)

    def disconnect(self):
        self.c.disconnect()
        self.expect("disconnect")
        self.c.loop_stop()


@pytest.mark.parametrize("version", PROTOCOLS)
def test_echo_retained_status_and_will_of_a_killed_client(broker, version):
    proto = PROTOCOLS[version]
    base = "interop/" + uuid.uuid4().hex[:8]
    status_a = base + "/a/status"
    a = Client(broker.port, proto, will=(status_a, "offline", 1, True))
    assert not a.connack[1].session_present

    # Subscribe QoS 1 to its own topic, publish QoS 1 and receive the echo.
    assert [int(rc.value) if hasattr(rc, "value") else rc for rc in a.subscribe(base + "/a/echo", 1)] == [1]
    a.publish(base + "/a/echo", b"ping", qos=1)
    msg = a.message()
    assert (msg.topic, msg.payload, msg.qos) == (base + "/a/echo", b"ping", 1)

    # A retained status, received by a later subscriber with the retain flag.
    a.publish(status_a, b"online", qos=1, retain=True)
    a.subscribe(base + "/+/status", 1)
    msg = a.message()
    assert (msg.topic, msg.payload, msg.retain) == (status_a, b"online", True)

    # A second client with a will, killed with SIGKILL: the first sees its will.
    status_b = base + "/b/status"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, str(broker.port), status_b, str(proto)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "connected"
        child.kill()
        child.wait(timeout=TIMEOUT)
        msg = a.message()
        assert (msg.topic, msg.payload, msg.qos) == (status_b, b"offline", 1)
    finally:
        if child.poll() is None:
            child.kill()

    # A clean disconnect does not publish A's will.
    a.disconnect()
    watcher = Client(broker.port, proto)
    watcher.subscribe(status_a, 1)
    msg = watcher.message()
    assert (msg.payload, msg.retain) == (b"online", True), "the will must not replace the retained status"
    watcher.disconnect()


KILLED_CLIENT = r"""
import sys, time, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, topic, proto = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="killed-" + topic.replace("/", "-"), protocol=proto)
c.will_set(topic, "offline", qos=1, retain=False)
done = threading.Event()
c.on_connect = lambda *a: done.set()
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
done.wait(10)
print("connected", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("version", PROTOCOLS)
def test_persistent_session_receives_messages_queued_while_away(broker, version):
    proto = PROTOCOLS[version]
    topic = "interop/persist/" + uuid.uuid4().hex[:8]
    sid = "persist-" + uuid.uuid4().hex[:8]
    sub = Client(broker.port, proto, client_id=sid, clean=False, expiry=3600)
    assert not sub.connack[1].session_present
    sub.subscribe(topic, 1)
    sub.disconnect()

    pub = Client(broker.port, proto)
    for i in range(5):
        pub.publish(topic, f"m{i}".encode(), qos=1)
    pub.disconnect()

    back = Client(broker.port, proto, client_id=sid, clean=False, expiry=3600)
    assert back.connack[1].session_present
    got = [back.message() for _ in range(5)]
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(5)]
    assert all(m.qos == 1 for m in got)
    back.disconnect()


@pytest.mark.parametrize("version", PROTOCOLS)
def test_qos2_round_trip(broker, version):
    proto = PROTOCOLS[version]
    topic = "interop/qos2/" + uuid.uuid4().hex[:8]
    c = Client(broker.port, proto)
    c.subscribe(topic, 2)
    for i in range(3):
        c.publish(topic, f"x{i}".encode(), qos=2)
    got = [c.message() for _ in range(3)]
    assert [(m.payload, m.qos) for m in got] == [(f"x{i}".encode(), 2) for i in range(3)]
    assert c.messages.empty()
    c.disconnect()
