"""MQTT 5.0 features through paho-mqtt 2.x (v5 mode) and mosquitto_sub -V 5 / mosquitto_rr."""

import queue
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 10


class V5:
    def __init__(self, port, client_id=None, clean=True, expiry=None, topic_alias_max=None):
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=client_id or "v5-" + uuid.uuid4().hex[:8], protocol=mqtt.MQTTv5)
        self.messages = queue.Queue()
        self.events = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.events.put(("connect", flags, rc, props))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.events.put(("suback", mid, rcs))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.events.put(("disconnect", rc))
        props = Properties(PacketTypes.CONNECT)
        if expiry is not None:
            props.SessionExpiryInterval = expiry
        if topic_alias_max is not None:
            props.TopicAliasMaximum = topic_alias_max
        self.c.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=props)
        self.c.loop_start()
        _, self.flags, self.rc, self.connack_props = self.expect("connect")

    def expect(self, kind):
        while True:
            ev = self.events.get(timeout=TIMEOUT)
            if ev[0] == kind:
                return ev

    def subscribe(self, topic, qos=1, **opts):
        _, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **opts))
        return [rc.value for rc in self.expect("suback")[2]]

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos:
            info.wait_for_publish(timeout=TIMEOUT)

    def message(self):
        return self.messages.get(timeout=TIMEOUT)

    def none(self, wait=0.3):
        try:
            m = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message {m.topic} {m.payload}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_connack_properties(broker):
    c = V5(broker.port)
    assert c.rc.value == 0
    assert c.connack_props.ReceiveMaximum > 0
    assert c.connack_props.MaximumPacketSize > 0
    assert c.connack_props.TopicAliasMaximum > 0
    c.close()


def test_properties_forwarded_unaltered_and_in_order(broker):
    sub = V5(broker.port)
    topic = "v5/props/" + uuid.uuid4().hex[:6]
    sub.subscribe(topic)
    pub = V5(broker.port)
    p = Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    p.ContentType = "application/json"
    p.ResponseTopic = "v5/reply"
    p.CorrelationData = b"\x00\x01corr"
    p.UserProperty = [("b", "2"), ("a", "1"), ("b", "3")]
    pub.publish(topic, b'{"x":1}', props=p)
    m = sub.message()
    got = m.properties
    assert got.PayloadFormatIndicator == 1
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == "v5/reply"
    assert got.CorrelationData == b"\x00\x01corr"
    assert got.UserProperty == [("b", "2"), ("a", "1"), ("b", "3")]
    sub.close()
    pub.close()


def test_topic_alias_from_client(broker):
    sub = V5(broker.port)
    topic = "v5/alias/" + uuid.uuid4().hex[:6]
    sub.subscribe(topic)
    pub = V5(broker.port)
    p = Properties(PacketTypes.PUBLISH)
    p.TopicAlias = 1
    pub.publish(topic, b"first", props=p)
    pub.publish("", b"second", props=p)
    assert [sub.message().payload for _ in range(2)] == [b"first", b"second"]
    sub.close()
    pub.close()


def test_topic_alias_to_client(broker):
    sub = V5(broker.port, topic_alias_max=5)
    topic = "v5/alias-out/" + uuid.uuid4().hex[:6]
    sub.subscribe(topic)
    pub = V5(broker.port)
    for i in range(3):
        pub.publish(topic, f"m{i}".encode())
    got = [sub.message() for _ in range(3)]
    # paho-mqtt 2.x does not resolve incoming aliases itself; it shows what arrived: the topic
    # with alias 1 on the first message, then an empty topic with alias 1.
    assert [m.topic for m in got] == [topic, "", ""]
    assert [m.properties.TopicAlias for m in got] == [1, 1, 1]
    assert [m.payload for m in got] == [b"m0", b"m1", b"m2"]
    sub.close()
    pub.close()


def test_message_expiry_on_queued_messages(broker):
    cid = "v5-exp-" + uuid.uuid4().hex[:6]
    topic = "v5/exp/" + uuid.uuid4().hex[:6]
    sub = V5(broker.port, client_id=cid, clean=True, expiry=300)
    sub.subscribe(topic)
    sub.close()
    pub = V5(broker.port)
    short = Properties(PacketTypes.PUBLISH)
    short.MessageExpiryInterval = 1
    long = Properties(PacketTypes.PUBLISH)
    long.MessageExpiryInterval = 300
    pub.publish(topic, b"short", props=short)
    pub.publish(topic, b"long", props=long)
    pub.close()
    # Expiry is measured in seconds; waiting past it is the point of this test.
    time.sleep(2.1)
    sub = V5(broker.port, client_id=cid, clean=False, expiry=300)
    assert sub.flags.session_present
    m = sub.message()
    assert m.payload == b"long"
    assert 295 <= m.properties.MessageExpiryInterval <= 299
    sub.none()
    sub.close()


def test_shared_subscription_is_a_work_queue(broker):
    topic = "v5/jobs/" + uuid.uuid4().hex[:6]
    workers = [V5(broker.port) for _ in range(2)]
    for w in workers:
        assert w.subscribe(f"$share/workers/{topic}") == [1]
    pub = V5(broker.port)
    for i in range(10):
        pub.publish(topic, f"job{i}".encode())
    got = []
    for w in workers:
        for _ in range(5):
            got.append(w.message().payload)
        w.none()
    assert sorted(got) == sorted(f"job{i}".encode() for i in range(10))
    for c in workers + [pub]:
        c.close()


def test_shared_subscription_for_a_311_client(broker):
    topic = "v311/jobs/" + uuid.uuid4().hex[:6]
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="s311-" + uuid.uuid4().hex[:6],
                    protocol=mqtt.MQTTv311)
    got = queue.Queue()
    subscribed = queue.Queue()
    c.on_message = lambda cl, u, m: got.put(m)
    c.on_subscribe = lambda cl, u, mid, rcs, props: subscribed.put(rcs)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.subscribe(f"$share/g/{topic}", 1)
    subscribed.get(timeout=TIMEOUT)
    pub = V5(broker.port)
    pub.publish(topic, b"work")
    assert got.get(timeout=TIMEOUT).payload == b"work"
    c.disconnect()
    c.loop_stop()
    pub.close()


def test_request_response_with_paho(broker):
    responder = V5(broker.port)
    req_topic = "v5/service/" + uuid.uuid4().hex[:6]
    responder.subscribe(req_topic)
    requester = V5(broker.port)
    resp_topic = "v5/replies/" + uuid.uuid4().hex[:6]
    requester.subscribe(resp_topic)
    p = Properties(PacketTypes.PUBLISH)
    p.ResponseTopic = resp_topic
    p.CorrelationData = b"req-42"
    requester.publish(req_topic, b"ping", props=p)
    req = responder.message()
    r = Properties(PacketTypes.PUBLISH)
    r.CorrelationData = req.properties.CorrelationData
    responder.publish(req.properties.ResponseTopic, b"pong", props=r)
    resp = requester.message()
    assert (resp.payload, resp.properties.CorrelationData) == (b"pong", b"req-42")
    responder.close()
    requester.close()


def test_no_local_and_retain_as_published(broker):
    c = V5(broker.port)
    topic = "v5/nl/" + uuid.uuid4().hex[:6]
    c.subscribe(topic, noLocal=True)
    c.publish(topic, b"mine")
    c.none()
    o = V5(broker.port)
    o.subscribe(topic, retainAsPublished=True)
    c.publish(topic, b"kept", retain=True)
    assert o.message().retain
    c.close()
    o.close()


def test_mosquitto_sub_v5_and_mosquitto_rr(broker):
    port = str(broker.port)
    topic = "v5/rr/" + uuid.uuid4().hex[:6]
    # A responder: mosquitto_sub prints the request; we answer with mosquitto_pub using the
    # response topic mosquitto_rr put in the request.
    responder = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-p", port, "-V", "5", "-t", topic, "-C", "1", "-d",
         "-F", "%R|%C|%p"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in responder.stdout:
        if "received SUBACK" in line:
            break
    rr = subprocess.Popen(["mosquitto_rr", "-p", port, "-t", topic, "-e", topic + "/reply", "-m", "question",
                           "-W", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request = None
    for line in responder.stdout:
        if "|" in line and not line.startswith("Client"):
            request = line.strip()
            break
    assert request is not None
    response_topic, correlation, payload = request.split("|")
    assert payload == "question"
    assert response_topic == topic + "/reply"
    pub = V5(broker.port)
    r = Properties(PacketTypes.PUBLISH)
    # %C prints correlation data as text; mosquitto_rr sends printable data.
    r.CorrelationData = correlation.encode()
    pub.publish(response_topic, b"answer", props=r)
    out, err = rr.communicate(timeout=TIMEOUT)
    assert rr.returncode == 0, err
    assert out.strip() == "answer"
    responder.wait(timeout=TIMEOUT)
    pub.close()
