"""A latency probe (QoS 0, 1,000 msg/s through the broker) while a storm of first logins
(distinct users, each checked against an Argon2id password file) hits the same broker."""
import socket, struct, sys, threading, time

HOST, PORT = "127.0.0.1", int(sys.argv[1])
USERS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
THREADS = int(sys.argv[3]) if len(sys.argv) > 3 else 8

def s(b): return struct.pack(">H", len(b)) + b
def rl(n):
    out = b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n: return out
def connect_pkt(cid, user=None, pw=None):
    flags = 0x02 | (0x80 if user else 0) | (0x40 if pw else 0)
    body = s(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + s(cid)
    if user: body += s(user)
    if pw: body += s(pw)
    return bytes([0x10]) + rl(len(body)) + body
def recv_exact(sock, n):
    b = b""
    while len(b) < n:
        d = sock.recv(n - len(b))
        if not d: raise EOFError
        b += d
    return b
def read_packet(sock):
    h = recv_exact(sock, 1)[0]
    mult, n = 1, 0
    while True:
        d = recv_exact(sock, 1)[0]
        n += (d & 127) * mult; mult *= 128
        if not d & 128: break
    return h, recv_exact(sock, n)
def client(cid, user=None, pw=None):
    c = socket.create_connection((HOST, PORT)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(connect_pkt(cid, user, pw))
    h, body = read_packet(c)
    assert h == 0x20, h
    return c, body[1]

sub, rc = client(b"probe-sub"); assert rc == 0
sub.sendall(bytes([0x82]) + rl(2 + 2 + 5 + 1) + struct.pack(">H", 1) + s(b"probe") + b"\x00")
assert read_packet(sub)[0] == 0x90
pub, rc = client(b"probe-pub"); assert rc == 0
lat = []  # (send time, latency)
stop = False
def reader():
    while not stop:
        try:
            h, body = read_packet(sub)
        except (EOFError, OSError):
            return
        if h >> 4 == 3:
            t = struct.unpack(">d", body[7:15])[0]
            now = time.perf_counter()
            lat.append((t, now - t))
threading.Thread(target=reader, daemon=True).start()
def publisher():
    nxt = time.perf_counter()
    while not stop:
        nxt += 0.001
        d = nxt - time.perf_counter()
        if d > 0: time.sleep(d)
        pkt = s(b"probe") + struct.pack(">d", time.perf_counter())
        pub.sendall(bytes([0x30]) + rl(len(pkt)) + pkt)
threading.Thread(target=publisher, daemon=True).start()

time.sleep(2)
storm_start = time.perf_counter()
results = []
def stormer(k):
    for i in range(k + 1, USERS + 1, THREADS):
        c, rc = client(b"storm-%d" % i, b"user%d" % i, b"pw%d" % i)
        results.append(rc)
        c.close()
ts = [threading.Thread(target=stormer, args=(k,)) for k in range(THREADS)]
for t in ts: t.start()
for t in ts: t.join()
storm_end = time.perf_counter()
time.sleep(1)
stop = True
time.sleep(0.1)
def q(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")
base = [l for t, l in lat if t < storm_start]
during = [l for t, l in lat if storm_start <= t < storm_end]
print(f"logins: {len(results)} ok={results.count(0)} in {storm_end - storm_start:.2f} s")
for name, xs in (("before", base), ("during", during)):
    print(f"probe {name}: n={len(xs)} p50={q(xs, .5):.3f} ms p99={q(xs, .99):.3f} ms max={max(xs) * 1000 if xs else 0:.1f} ms")
