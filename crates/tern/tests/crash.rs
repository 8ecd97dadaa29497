//! Crash test: `tern serve` as a child process, persistent subscribers (online and offline) and
//! publishers at QoS 1 and 2, the broker killed with SIGKILL at random moments and restarted on
//! the same data directory. Checks that every message whose PUBACK / PUBCOMP a publisher got
//! reaches every persistent subscriber (QoS 1 at least once, QoS 2 exactly once), in order per
//! publisher, and that the retained store holds the last acknowledged retained publish (or a
//! later one that was sent but not yet acknowledged when the broker died).
//!
//! `TERN_CRASH_TRIALS` sets the number of kills (default 3); `scripts/crash-soak` runs many and
//! prints the totals this test reports on stderr.

mod child;

use child::ChildBroker;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tern_client::{Connection, builder};
use tern_codec::{Ack, Packet, ProtocolVersion, QoS};

const V: ProtocolVersion = ProtocolVersion::V3_1_1;
const WAIT: Duration = Duration::from_secs(10);

/// `tern serve` as a child process, killed with SIGKILL.
struct Broker(ChildBroker);

fn start(dir: &std::path::Path) -> Broker {
    // The offline subscriber's queue must hold everything published during the test: a full
    // queue drops new messages by design (counted, documented), which is not what this test
    // is about. A small queue memory budget: the offline subscriber's queue is paged out to
    // the spool and rebuilt (and paged out again) after every kill.
    let config = dir.join("crash-test.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_queued_messages = 10000000\nqueue_memory = 65536\n",
    )
    .unwrap();
    Broker(ChildBroker::start(
        &config,
        &dir.join("data"),
        &[],
        "TERN_CRASH_VERBOSE",
    ))
}

impl Broker {
    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    fn kill(mut self) {
        self.0.kill();
    }
}

/// A persistent subscriber that keeps its own QoS 2 receiver state across reconnects, as a
/// real client library does.
struct Subscriber {
    id: String,
    conn: Option<Connection>,
    /// (publisher, seq) -> times delivered to the application.
    got: HashMap<(String, u64), u32>,
    /// First-delivery order per publisher.
    order: HashMap<String, Vec<u64>>,
    /// QoS 2 packet ids received and PUBREC'd but not yet released.
    unreleased: HashSet<u16>,
}

impl Subscriber {
    fn new(id: &str) -> Self {
        Self {
            id: id.into(),
            conn: None,
            got: HashMap::new(),
            order: HashMap::new(),
            unreleased: HashSet::new(),
        }
    }

    async fn connect(&mut self, addr: SocketAddr, subscribe: bool) {
        let mut c = Connection::connect(addr, V).await.unwrap();
        c.send(&Packet::Connect(Box::new(builder::connect(
            V, &self.id, false, 60,
        ))))
        .await
        .unwrap();
        match c.recv_timeout(WAIT).await.unwrap() {
            Packet::ConnAck(a) => assert_eq!(a.code, 0),
            other => panic!("{other:?}"),
        }
        if subscribe {
            c.send(&builder::subscribe(
                1,
                &[
                    ("crash/q1/#", QoS::AtLeastOnce),
                    ("crash/q2/#", QoS::ExactlyOnce),
                ],
            ))
            .await
            .unwrap();
            loop {
                if let Packet::SubAck(_) = c.recv_timeout(WAIT).await.unwrap() {
                    break;
                }
            }
        }
        self.conn = Some(c);
    }

    /// Handles the next packet, if one arrives within `until`.
    async fn pump(&mut self, until: Duration) -> Pumped {
        let Some(c) = self.conn.as_mut() else {
            return Pumped::Closed;
        };
        let packet = match c.recv_timeout(until).await {
            Ok(p) => p,
            Err(tern_client::ClientError::Timeout) => return Pumped::Idle,
            Err(_) => {
                self.conn = None;
                return Pumped::Closed;
            }
        };
        match packet {
            Packet::Publish(p) => {
                let payload = String::from_utf8_lossy(&p.payload).to_string();
                let (publisher, seq) = payload.split_once(':').unwrap();
                let key = (publisher.to_string(), seq.parse::<u64>().unwrap());
                let pid = p.packet_id.unwrap_or(0);
                let deliver = match p.qos {
                    QoS::ExactlyOnce => self.unreleased.insert(pid),
                    _ => true,
                };
                if deliver {
                    let n = self.got.entry(key.clone()).or_insert(0);
                    if *n == 0 {
                        self.order.entry(key.0.clone()).or_default().push(key.1);
                    }
                    *n += 1;
                }
                let ack = match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(Ack::new(pid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(Ack::new(pid))),
                };
                if let Some(a) = ack
                    && c.send(&a).await.is_err()
                {
                    self.conn = None;
                }
            }
            Packet::PubRel(a) => {
                self.unreleased.remove(&a.packet_id);
                if c.send(&Packet::PubComp(Ack::new(a.packet_id)))
                    .await
                    .is_err()
                {
                    self.conn = None;
                }
            }
            _ => {}
        }
        if self.conn.is_some() {
            Pumped::Got
        } else {
            Pumped::Closed
        }
    }
}

#[derive(PartialEq, Eq)]
enum Pumped {
    Got,
    Idle,
    Closed,
}

/// A publisher with a clean session: what it does not see acknowledged before a crash, it
/// forgets (it was never promised).
struct Publisher {
    name: String,
    qos: QoS,
    retain: bool,
    next: u64,
    acked: BTreeSet<u64>,
    sent: BTreeSet<u64>,
}

impl Publisher {
    /// Publishes until the connection dies or `deadline`; a window of unacknowledged messages
    /// is kept in flight.
    async fn run(&mut self, addr: SocketAddr, deadline: Instant) {
        let Ok(mut c) = Connection::connect(addr, V).await else {
            return;
        };
        let id = format!("pub-{}", self.name);
        if c.send(&Packet::Connect(Box::new(builder::connect(
            V, &id, true, 60,
        ))))
        .await
        .is_err()
        {
            return;
        }
        if !matches!(c.recv_timeout(WAIT).await, Ok(Packet::ConnAck(_))) {
            return;
        }
        let topic = if self.retain {
            "crash/retained".to_string()
        } else {
            format!("crash/q{}/{}", self.qos as u8, self.name)
        };
        let mut pending: BTreeMap<u16, u64> = BTreeMap::new();
        let mut pid: u16 = 0;
        while Instant::now() < deadline {
            while pending.len() < 16 {
                pid = pid % 60000 + 1;
                let seq = self.next;
                self.next += 1;
                let payload = format!("{}:{}", self.name, seq);
                if c.send(&builder::publish(
                    &topic,
                    payload,
                    self.qos,
                    self.retain,
                    Some(pid),
                ))
                .await
                .is_err()
                {
                    return;
                }
                self.sent.insert(seq);
                pending.insert(pid, seq);
            }
            match c.recv_timeout(Duration::from_secs(2)).await {
                Ok(Packet::PubAck(a)) => {
                    if let Some(seq) = pending.remove(&a.packet_id) {
                        self.acked.insert(seq);
                    }
                }
                Ok(Packet::PubRec(a)) => {
                    if c.send(&Packet::PubRel(Ack::new(a.packet_id)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Packet::PubComp(a)) => {
                    if let Some(seq) = pending.remove(&a.packet_id) {
                        self.acked.insert(seq);
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

#[derive(Default, Debug)]
struct Totals {
    trials: u64,
    acknowledged: u64,
    lost: u64,
    duplicated_qos2: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    let trials: u64 = std::env::var("TERN_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut rng_state: u64 = std::env::var("TERN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234);
    let mut rand = move |n: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % n
    };

    let mut online = [
        Subscriber::new("sub-online-1"),
        Subscriber::new("sub-online-2"),
    ];
    let mut offline = Subscriber::new("sub-offline");
    let mut publishers = vec![
        Publisher {
            name: "p1".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            next: 1,
            acked: BTreeSet::new(),
            sent: BTreeSet::new(),
        },
        Publisher {
            name: "p2".into(),
            qos: QoS::ExactlyOnce,
            retain: false,
            next: 1,
            acked: BTreeSet::new(),
            sent: BTreeSet::new(),
        },
        Publisher {
            name: "r".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            next: 1,
            acked: BTreeSet::new(),
            sent: BTreeSet::new(),
        },
    ];

    let mut broker = start(dir.path());
    // The offline subscriber makes its persistent session and leaves.
    offline.connect(broker.addr(), true).await;
    offline.conn = None;
    for s in online.iter_mut() {
        s.connect(broker.addr(), true).await;
    }
    let mut totals = Totals::default();
    for trial in 0..trials {
        totals.trials += 1;
        let run_for = Duration::from_millis(100 + rand(400));
        let deadline = Instant::now() + run_for;
        let addr = broker.addr();
        // Publishers and online subscribers run concurrently until the kill.
        let pubs = std::mem::take(&mut publishers);
        let pub_tasks: Vec<_> = pubs
            .into_iter()
            .map(|mut p| {
                tokio::spawn(async move {
                    p.run(addr, deadline + Duration::from_secs(60)).await;
                    p
                })
            })
            .collect();
        let subs = std::mem::replace(&mut online, [Subscriber::new("x"), Subscriber::new("y")]);
        let sub_tasks: Vec<_> = subs
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    while s.pump(Duration::from_millis(200)).await != Pumped::Closed {}
                    s
                })
            })
            .collect();
        tokio::time::sleep_until(deadline.into()).await;
        broker.kill();
        for t in pub_tasks {
            publishers.push(t.await.unwrap());
        }
        let mut back = Vec::new();
        for t in sub_tasks {
            back.push(t.await.unwrap());
        }
        online = [back.remove(0), back.remove(0)];
        eprintln!("trial {trial}: killed after {run_for:?}");
        broker = start(dir.path());
        for s in online.iter_mut() {
            s.connect(broker.addr(), false).await;
        }
    }

    // Final drain: everyone comes back and receives what is owed.
    offline.connect(broker.addr(), false).await;
    let mut all = online.into_iter().collect::<Vec<_>>();
    all.push(offline);
    for s in all.iter_mut() {
        let owed: Vec<(String, u64)> = publishers
            .iter()
            .filter(|p| !p.retain)
            .flat_map(|p| p.acked.iter().map(move |seq| (p.name.clone(), *seq)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while owed.iter().any(|k| !s.got.contains_key(k)) && Instant::now() < deadline {
            if s.pump(Duration::from_millis(500)).await == Pumped::Closed {
                break;
            }
        }
        // Let any duplicates that are coming arrive: the session is drained once it goes quiet.
        while s.pump(Duration::from_millis(300)).await == Pumped::Got {}
        for key in &owed {
            totals.acknowledged += 1;
            match s.got.get(key) {
                None => totals.lost += 1,
                Some(n) if *n > 1 && key.0 == "p2" => totals.duplicated_qos2 += 1,
                _ => {}
            }
        }
        for (publisher, seqs) in &s.order {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{}: order of {publisher} broken: {seqs:?}",
                s.id
            );
        }
    }

    // Retained: the last acknowledged retained publish, or a later one that was sent.
    let r = publishers.iter().find(|p| p.retain).unwrap();
    if let Some(&last_acked) = r.acked.iter().next_back() {
        let mut c = Connection::connect(broker.addr(), V).await.unwrap();
        c.send(&Packet::Connect(Box::new(builder::connect(
            V,
            "retained-check",
            true,
            60,
        ))))
        .await
        .unwrap();
        c.recv_timeout(WAIT).await.unwrap();
        c.send(&builder::subscribe(
            1,
            &[("crash/retained", QoS::AtMostOnce)],
        ))
        .await
        .unwrap();
        let value = loop {
            match c.recv_timeout(WAIT).await.unwrap() {
                Packet::Publish(p) => break String::from_utf8_lossy(&p.payload).to_string(),
                _ => continue,
            }
        };
        let seq: u64 = value.split_once(':').unwrap().1.parse().unwrap();
        assert!(
            seq >= last_acked && r.sent.contains(&seq),
            "retained {seq}, last acknowledged {last_acked}"
        );
    }
    broker.kill();
    eprintln!(
        "crash totals: trials={} acknowledged={} lost={} duplicated_qos2={}",
        totals.trials, totals.acknowledged, totals.lost, totals.duplicated_qos2
    );
    assert!(
        totals.acknowledged > 0,
        "the test must actually acknowledge messages"
    );
    assert_eq!(totals.lost, 0, "acknowledged messages lost: {totals:?}");
    assert_eq!(
        totals.duplicated_qos2, 0,
        "QoS 2 delivered twice: {totals:?}"
    );
}

/// CONNECT as `user` with the client id "sensor-1"; returns the connection and CONNACK.
async fn connect_as(
    addr: SocketAddr,
    user: &str,
    clean: bool,
) -> (Connection, tern_codec::ConnAck) {
    let mut c = Connection::connect(addr, V).await.unwrap();
    let mut connect = builder::connect(V, "sensor-1", clean, 60);
    connect.username = Some(user.into());
    c.send(&Packet::Connect(Box::new(connect))).await.unwrap();
    match c.recv_timeout(WAIT).await.unwrap() {
        Packet::ConnAck(a) => (c, a),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_owner_across_kill_9() {
    // A session belongs to the user who made it: its durable record names the user, so after
    // a restart another user who comes with its client id is still refused (0x02, identifier
    // rejected) and the owner still resumes it, queued message included.
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let (mut alice, ack) = connect_as(broker.addr(), "alice", false).await;
    assert_eq!(ack.code, 0);
    alice
        .send(&builder::subscribe(1, &[("alice/inbox", QoS::AtLeastOnce)]))
        .await
        .unwrap();
    assert!(matches!(
        alice.recv_timeout(WAIT).await.unwrap(),
        Packet::SubAck(_)
    ));
    alice.drop_connection().await;
    let mut p = Connection::connect(broker.addr(), V).await.unwrap();
    p.send(&Packet::Connect(Box::new(builder::connect(
        V, "p", true, 60,
    ))))
    .await
    .unwrap();
    assert!(matches!(
        p.recv_timeout(WAIT).await.unwrap(),
        Packet::ConnAck(_)
    ));
    // PUBACK: the message is durable in alice's session (queued, or in flight if the broker
    // routed it before it saw her go; either way it is sent again when she resumes).
    p.send(&builder::publish(
        "alice/inbox",
        &b"queued"[..],
        QoS::AtLeastOnce,
        false,
        Some(1),
    ))
    .await
    .unwrap();
    assert!(matches!(
        p.recv_timeout(WAIT).await.unwrap(),
        Packet::PubAck(_)
    ));
    broker.kill();

    let broker = start(dir.path());
    for clean in [false, true] {
        let (mut mallory, ack) = connect_as(broker.addr(), "mallory", clean).await;
        assert_eq!(ack.code, 0x02, "clean {clean}: {ack:?}");
        mallory.expect_closed(WAIT).await.unwrap();
    }
    let (mut alice, ack) = connect_as(broker.addr(), "alice", false).await;
    assert_eq!(ack.code, 0);
    assert!(ack.session_present);
    match alice.recv_timeout(WAIT).await.unwrap() {
        Packet::Publish(m) => assert_eq!(&m.payload[..], b"queued"),
        other => panic!("{other:?}"),
    }
    broker.kill();
}
