"""Security end to end: TLS, mTLS, certificate swap, WebSocket (ws and wss), a password file
written by Debian's `mosquitto_passwd`, the ACL paths, and SIGHUP reload, against a real
`tern serve` with paho-mqtt and Debian's mosquitto_pub / mosquitto_sub.

Certificates are made by the `openssl` command-line tool (ECDSA P-256, a test CA, a server
certificate for 127.0.0.1, client certificates with CN alice). Each test gets its own broker, so
failed logins in one test never trigger the per-address login throttling in another.
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from conftest import Broker

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None,
    reason="needs the openssl CLI and Debian's mosquitto_passwd (mosquitto package)",
)

WAIT = 10
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}

ACL = """\
# anonymous: nothing (they are refused anyway)
user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read public/#
topic write inbox/#

user bob
topic readwrite #

pattern readwrite devices/%c/#
"""

# Listener order in the config; Broker.listeners follows it.
CONFIG = """\
listen = ["127.0.0.1:0"]
password_file = "{passwd}"
acl_file = "{acl}"
sys_interval_secs = 0
durability = "none"

[admin]
enabled = false

[tls]
cert = "{cert}"
key = "{key}"
cafile = "{ca}"

[[listener]]
bind = "127.0.0.1:0"
transport = "tls"

[[listener]]
bind = "127.0.0.1:0"
transport = "tls"
require_certificate = true
use_identity_as_username = true

[[listener]]
bind = "127.0.0.1:0"
transport = "ws"

[[listener]]
bind = "127.0.0.1:0"
transport = "ws"
ws_path = "/mqtt"

[[listener]]
bind = "127.0.0.1:0"
transport = "wss"
"""


# ---------------------------------------------------------------------------------------------
# Certificates (openssl CLI)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_leaf(d, name, cn, serial, ext):
    extfile = d / f"{name}.ext"
    extfile.write_text(ext)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(serial), "-days", "2", "-out", f"{name}.crt",
            "-extfile", f"{name}.ext", cwd=d)


SERVER_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
CLIENT_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=tern test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    make_leaf(d, "server", "127.0.0.1", 1001, SERVER_EXT)
    make_leaf(d, "server2", "127.0.0.1", 1002, SERVER_EXT)
    make_leaf(d, "alice", "alice", 2001, CLIENT_EXT)
    return d


@pytest.fixture
def secure(tmp_path, pki):
    """A broker with every listener, a mosquitto_passwd password file and an ACL file."""
    for f in ("server.crt", "server.key"):
        shutil.copy(pki / f, tmp_path / f)
    passwd = tmp_path / "passwd"
    first = True
    for user, pw in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", *(["-c"] if first else []), "-b", str(passwd),
                        user, pw], check=True, capture_output=True)
        first = False
    os.chmod(passwd, 0o600)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    config = tmp_path / "tern.toml"
    config.write_text(CONFIG.format(passwd=passwd, acl=acl, cert=tmp_path / "server.crt",
                                    key=tmp_path / "server.key", ca=pki / "ca.crt"))
    b = Broker(tmp_path, "--admin-listen", "off", config=config)
    b.dir = tmp_path
    b.passwd = passwd
    b.ca = pki / "ca.crt"
    b.pki = pki
    b.tls = b.port_of("TLS", 0)
    b.mtls = b.port_of("TLS", 1)
    b.ws = b.port_of("WebSocket", 0)
    b.ws_mqtt = b.port_of("WebSocket", 1)
    b.wss = b.port_of("secure WebSocket", 0)
    yield b
    b.stop()


# ---------------------------------------------------------------------------------------------
# paho helpers


class Client:
    """A paho client that records CONNACK, SUBACK, PUBACK reason codes and messages."""

    def __init__(self, port, user=None, password=None, v5=False, transport="tcp", path="/mqtt",
                 tls=None, client_id=None):
        self.v5 = v5
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path=path)
        if tls is not None:
            self.c.tls_set(**tls)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.connack = None
        self.connected = threading.Event()
        self.suback = {}
        self.puback = {}
        self.messages = []
        self.got = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.port = port

    def _on_connect(self, client, userdata, flags, rc, props):
        self.connack = rc
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self.got:
            self.suback[mid] = [r.value for r in rcs]
            self.got.notify_all()

    def _on_publish(self, client, userdata, mid, rc, props):
        with self.got:
            self.puback[mid] = rc.value
            self.got.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.got:
            self.messages.append((msg.topic, msg.payload))
            self.got.notify_all()

    def connect(self):
        """Connects; returns the CONNACK reason code value (0 is success)."""
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        self.c.connect("127.0.0.1", self.port, keepalive=30, properties=props)
        self.c.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"
        return self.connack.value

    def wait_for(self, pred, timeout=WAIT):
        with self.got:
            return self.got.wait_for(pred, timeout)

    def subscribe(self, topic, qos=1):
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == 0
        assert self.wait_for(lambda: mid in self.suback), "no SUBACK"
        return self.suback[mid]

    def publish(self, topic, payload, qos=1):
        info = self.c.publish(topic, payload, qos=qos)
        if qos == 0:
            return None
        assert self.wait_for(lambda: info.mid in self.puback), "no PUBACK"
        return self.puback[info.mid]

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def round_trip(sub, pub, topic, payload):
    """`sub` subscribes to `topic`, `pub` publishes, `sub` receives it."""
    assert sub.subscribe(topic) == [1]
    pub.publish(topic, payload)
    assert sub.wait_for(lambda: (topic, payload) in sub.messages), sub.messages


def mosq(tool, *args, timeout=WAIT):
    return subprocess.run([tool, "-h", "127.0.0.1", *args], capture_output=True, text=True,
                          timeout=timeout)


def served_cert(port, ca):
    """The DER of the certificate the broker presents on `port`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def der_of(pem_file):
    return ssl.PEM_cert_to_DER_cert(pem_file.read_text())


# ---------------------------------------------------------------------------------------------
# TLS and mTLS


def test_mosquitto_tls_with_cafile(secure):
    port = str(secure.tls)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "--cafile", str(secure.ca),
         "-u", "bob", "-P", "bob-pw", "-t", "tls/t", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    deadline = time.time() + WAIT
    # Publish until the subscriber (whose SUBACK we cannot see) has it.
    while sub.poll() is None and time.time() < deadline:
        r = mosq("mosquitto_pub", "-p", port, "--cafile", str(secure.ca), "-u", "bob",
                 "-P", "bob-pw", "-t", "tls/t", "-m", "over tls", "-q", "1")
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)
    out, err = sub.communicate(timeout=WAIT)
    assert sub.returncode == 0, err
    assert out.strip() == "over tls"


def test_mosquitto_tls_wrong_ca_refused(secure, tmp_path):
    # A CA that did not sign the server certificate: the client refuses the handshake.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "other.key", "-out",
                    "other.crt", "-days", "1", "-subj", "/CN=other"], cwd=tmp_path, check=True,
                   capture_output=True)
    r = mosq("mosquitto_pub", "-p", str(secure.tls), "--cafile", str(tmp_path / "other.crt"),
             "-u", "bob", "-P", "bob-pw", "-t", "x", "-m", "y")
    assert r.returncode != 0


def test_mtls_client_certificate_accepted(secure):
    pki = secure.pki
    # use_identity_as_username: the certificate's CN (alice) is the user; no password needed.
    r = mosq("mosquitto_pub", "-p", str(secure.mtls), "--cafile", str(secure.ca),
             "--cert", str(pki / "alice.crt"), "--key", str(pki / "alice.key"),
             "-t", "alice/mtls", "-m", "hi", "-q", "1", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PUBACK" in r.stdout or "PUBACK" in r.stderr


def test_mtls_without_certificate_refused(secure):
    r = mosq("mosquitto_pub", "-p", str(secure.mtls), "--cafile", str(secure.ca),
             "-u", "bob", "-P", "bob-pw", "-t", "x", "-m", "y", "-q", "1")
    assert r.returncode != 0
    # paho too: the handshake (or the first read after it, with TLS 1.3) fails.
    c = Client(secure.mtls, "bob", "bob-pw", tls={"ca_certs": str(secure.ca)})
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        c.c.connect("127.0.0.1", secure.mtls)
        c.c.loop_start()
        assert c.connected.wait(3) and c.connack.value == 0
    c.c.loop_stop()


def test_paho_tls_set_round_trip(secure):
    tls = {"ca_certs": str(secure.ca)}
    sub = Client(secure.tls, "alice", "alice-pw", tls=tls)
    pub = Client(secure.tls, "bob", "bob-pw", tls=tls, v5=True)
    assert sub.connect() == 0 and pub.connect() == 0
    round_trip(sub, pub, "alice/tls", b"paho over tls")
    # And with a client certificate on the mTLS listener (paho tls_set certfile/keyfile).
    m = Client(secure.mtls, tls={"ca_certs": str(secure.ca),
                                 "certfile": str(secure.pki / "alice.crt"),
                                 "keyfile": str(secure.pki / "alice.key")})
    assert m.connect() == 0
    round_trip(m, pub, "alice/mtls", b"paho over mtls")
    for c in (sub, pub, m):
        c.stop()


def test_certificate_swap_keeps_connections(secure):
    tls = {"ca_certs": str(secure.ca)}
    old = der_of(secure.dir / "server.crt")
    assert served_cert(secure.tls, secure.ca) == old
    stay = Client(secure.tls, "bob", "bob-pw", tls=tls)
    assert stay.connect() == 0
    # Swap: new certificate and key (same CA), each written whole and renamed into place.
    for f in ("server.key", "server.crt"):
        tmp = secure.dir / (f + ".new")
        shutil.copy(secure.pki / f.replace("server", "server2"), tmp)
        os.replace(tmp, secure.dir / f)
    new = der_of(secure.dir / "server.crt")
    assert new != old
    # The broker checks the files every 5 s.
    deadline = time.time() + 20
    seen = old
    while time.time() < deadline:
        seen = served_cert(secure.tls, secure.ca)
        if seen == new:
            break
        time.sleep(0.5)
    assert seen == new, "new connections still get the old certificate"
    # The wss listener shares the [tls] files: it serves the new one too.
    assert served_cert(secure.wss, secure.ca) == new
    # The connection made before the swap keeps working, and a new one works as well.
    fresh = Client(secure.tls, "alice", "alice-pw", tls=tls)
    assert fresh.connect() == 0
    round_trip(stay, fresh, "alice/after-swap", b"still here")
    assert stay.c.is_connected()
    stay.stop()
    fresh.stop()


# ---------------------------------------------------------------------------------------------
# WebSocket


@pytest.mark.parametrize("path", ["/mqtt", "/ws"])
def test_paho_websockets(secure, path):
    sub = Client(secure.ws, "alice", "alice-pw", transport="websockets", path=path)
    pub = Client(secure.ws, "bob", "bob-pw", transport="websockets", path=path, v5=True)
    assert sub.connect() == 0 and pub.connect() == 0
    round_trip(sub, pub, "alice/ws", b"over websocket " + path.encode())
    sub.stop()
    pub.stop()


def test_ws_path_restricted(secure):
    ok = Client(secure.ws_mqtt, "bob", "bob-pw", transport="websockets", path="/mqtt")
    assert ok.connect() == 0
    ok.stop()
    wrong = Client(secure.ws_mqtt, "bob", "bob-pw", transport="websockets", path="/ws")
    with pytest.raises((mqtt.WebsocketConnectionError, OSError, AssertionError)):
        wrong.connect()
    wrong.c.loop_stop()


def test_paho_secure_websockets(secure):
    tls = {"ca_certs": str(secure.ca)}
    sub = Client(secure.wss, "alice", "alice-pw", transport="websockets", tls=tls)
    pub = Client(secure.tls, "bob", "bob-pw", tls=tls)
    assert sub.connect() == 0 and pub.connect() == 0
    round_trip(sub, pub, "alice/wss", b"over wss")
    sub.stop()
    pub.stop()


# ---------------------------------------------------------------------------------------------
# Passwords (a file written by Debian's mosquitto_passwd, used as is)


def test_mosquitto_passwd_file_as_is(secure):
    assert secure.passwd.read_text().startswith("alice:$7$")
    for v5 in (False, True):
        c = Client(secure.port, "alice", "alice-pw", v5=v5)
        assert c.connect() == 0
        c.stop()
    r = mosq("mosquitto_pub", "-p", str(secure.port), "-u", "bob", "-P", "bob-pw",
             "-t", "any/topic", "-m", "x", "-q", "1")
    assert r.returncode == 0, r.stderr


# paho 2 reports a 3.1.1 CONNACK return code as the MQTT 5 reason code it maps to (4 -> 0x86,
# 5 -> 0x87); mosquitto_pub's message shows the 3.1.1 code on the wire.


def test_wrong_password_refused(secure):
    c = Client(secure.port, "alice", "nope")
    assert c.connect() == 0x86  # 3.1.1 return code 4: bad user name or password
    c.c.loop_stop()
    c = Client(secure.port, "alice", "nope", v5=True)
    assert c.connect() == 0x86
    c.c.loop_stop()
    r = mosq("mosquitto_pub", "-p", str(secure.port), "-u", "mallory", "-P", "x", "-t", "x",
             "-m", "x")
    assert r.returncode != 0
    assert "bad user name or password" in r.stderr.lower(), r.stderr


def test_anonymous_refused(secure):
    c = Client(secure.port)
    assert c.connect() == 0x87  # 3.1.1 return code 5: not authorized
    c.c.loop_stop()
    c = Client(secure.port, v5=True)
    assert c.connect() == 0x87
    c.c.loop_stop()
    r = mosq("mosquitto_pub", "-p", str(secure.port), "-t", "x", "-m", "x")
    assert r.returncode != 0
    assert "not authori" in r.stderr.lower(), r.stderr


def test_sighup_reloads_password_file(secure):
    stay = Client(secure.port, "alice", "alice-pw")
    assert stay.connect() == 0
    new = Client(secure.port, "carol", "carol-pw")
    assert new.connect() == 0x86
    new.c.loop_stop()
    subprocess.run(["mosquitto_passwd", "-b", str(secure.passwd), "carol", "carol-pw"],
                   check=True, capture_output=True)
    secure.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + WAIT
    while not any("SIGHUP" in line for line in secure.log) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the reload runs on a blocking thread
    new = Client(secure.port, "carol", "carol-pw")
    assert new.connect() == 0
    new.stop()
    # The connection made before the reload is still up and working.
    bob = Client(secure.port, "bob", "bob-pw")
    assert bob.connect() == 0
    round_trip(stay, bob, "alice/after-hup", b"still up")
    stay.stop()
    bob.stop()


# ---------------------------------------------------------------------------------------------
# ACL


def test_acl_publish_allowed_and_denied_v311(secure):
    bob = Client(secure.port, "bob", "bob-pw")
    alice = Client(secure.port, "alice", "alice-pw")
    assert bob.connect() == 0 and alice.connect() == 0
    assert bob.subscribe("#") == [1]
    # Allowed: readwrite alice/#, write inbox/#.
    assert alice.publish("alice/ok", b"1") == 0
    assert alice.publish("inbox/x", b"2") == 0
    # Denied (read-only public/#, deny alice/secret/#, not granted other/): 3.1.1 acknowledges
    # and drops.
    for topic in ("public/news", "alice/secret/x", "other/x"):
        assert alice.publish(topic, b"denied") == 0
    assert alice.publish("alice/last", b"3") == 0
    assert bob.wait_for(lambda: ("alice/last", b"3") in bob.messages)
    time.sleep(0.3)
    topics = [t for t, _ in bob.messages]
    assert "alice/ok" in topics and "inbox/x" in topics
    for topic in ("public/news", "alice/secret/x", "other/x"):
        assert topic not in topics
    bob.stop()
    alice.stop()


def test_acl_publish_denied_v5_reason(secure):
    alice = Client(secure.port, "alice", "alice-pw", v5=True)
    assert alice.connect() == 0
    assert alice.publish("alice/ok", b"1") == 0
    assert alice.publish("public/news", b"x") == 0x87
    assert alice.publish("alice/secret/x", b"x") == 0x87
    assert alice.publish("other/x", b"x") == 0x87
    alice.stop()


def test_acl_subscribe_denied(secure):
    a3 = Client(secure.port, "alice", "alice-pw")
    a5 = Client(secure.port, "alice", "alice-pw", v5=True)
    assert a3.connect() == 0 and a5.connect() == 0
    for topic in ("other/#", "#", "inbox/#", "alice/secret/#", "$SYS/#"):
        assert a3.subscribe(topic) == [0x80], topic
        assert a5.subscribe(topic) == [0x87], topic
    assert a3.subscribe("public/#") == [1]
    assert a5.subscribe("alice/+/x") == [1]
    a3.stop()
    a5.stop()


def test_acl_wildcard_subscription_is_read_filtered(secure):
    alice = Client(secure.port, "alice", "alice-pw")
    bob = Client(secure.port, "bob", "bob-pw")
    assert alice.connect() == 0 and bob.connect() == 0
    # alice/# overlaps the denied alice/secret/#: granted, the denied topics filtered.
    assert alice.subscribe("alice/#") == [1]
    bob.publish("alice/secret/plan", b"hidden")
    bob.publish("alice/open", b"visible")
    assert alice.wait_for(lambda: ("alice/open", b"visible") in alice.messages)
    time.sleep(0.3)
    assert ("alice/secret/plan", b"hidden") not in alice.messages
    # Retained messages sent on subscribe are filtered too.
    bob.c.publish("alice/secret/retained", b"r-hidden", qos=1, retain=True).wait_for_publish(WAIT)
    bob.c.publish("alice/retained", b"r-visible", qos=1, retain=True).wait_for_publish(WAIT)
    again = Client(secure.port, "alice", "alice-pw")
    assert again.connect() == 0
    assert again.subscribe("alice/#") == [1]
    assert again.wait_for(lambda: ("alice/retained", b"r-visible") in again.messages)
    time.sleep(0.3)
    assert ("alice/secret/retained", b"r-hidden") not in again.messages
    for c in (alice, bob, again):
        c.stop()


def test_acl_pattern_client_id(secure):
    dev = Client(secure.port, "alice", "alice-pw", client_id="dev42")
    bob = Client(secure.port, "bob", "bob-pw")
    assert dev.connect() == 0 and bob.connect() == 0
    round_trip(dev, bob, "devices/dev42/cmd", b"on")
    assert dev.publish("devices/dev42/state", b"ok") == 0
    # Someone else's device: denied.
    assert dev.subscribe("devices/dev43/#") == [0x80]
    dev.stop()
    bob.stop()
