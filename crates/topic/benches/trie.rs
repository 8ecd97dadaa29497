//! Trie benchmarks: subscription lookup with 1,000,000 and 10,000
//! subscriptions, subscribe/unsubscribe churn, retained-message lookup over
//! 100,000 topics, and lookups through nodes with 1 to 16 children. Tries
//! are built once, outside the timed loops.
//!
//! Run: `cargo bench -p tern-topic -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::Rng;
use tern_topic::{RetainedTrie, SubscriptionTrie};

/// `n` device subscriptions `site/{i % sites}/device/{i}/+`, plus a few
/// wildcard-heavy filters that every lookup has to consider.
fn build_subscriptions(n: u32, sites: u32) -> SubscriptionTrie<u32, u8> {
    let start = Instant::now();
    let mut trie = SubscriptionTrie::new();
    let mut filter = String::with_capacity(64);
    for i in 0..n {
        use std::fmt::Write;
        filter.clear();
        write!(filter, "site/{}/device/{i}/+", i % sites).unwrap();
        trie.insert(&filter, i, 1);
    }
    let mut key = n;
    let mut add = |trie: &mut SubscriptionTrie<u32, u8>, f: &str| {
        trie.insert(f, key, 0);
        key += 1;
    };
    for s in 0..sites.min(100) {
        add(&mut trie, &format!("site/{s}/#"));
    }
    for _ in 0..10 {
        add(&mut trie, "#");
        add(&mut trie, "site/+/device/+/+");
        add(&mut trie, "+/+/device/+/temp");
        add(&mut trie, "$SYS/#");
    }
    eprintln!(
        "built {} subscriptions ({} filters, {} nodes) in {:?}",
        trie.len(),
        trie.filter_count(),
        trie.node_count(),
        start.elapsed()
    );
    trie
}

fn count_sub_matches(trie: &SubscriptionTrie<u32, u8>, topic: &str) -> usize {
    let mut n = 0;
    trie.for_each_match(topic, |k, v| {
        black_box((k, v));
        n += 1;
    });
    n
}

fn subscription_benches(c: &mut Criterion) {
    for (n, sites) in [(1_000_000u32, 1000u32), (10_000, 100)] {
        let trie = build_subscriptions(n, sites);
        let hit = format!("site/42/device/{}/temp", sites + 42);
        let miss = "site/42/device/not-a-device/temp";
        let other = "other/topic/with/four/levels";
        // The device filter, "site/42/#", and 10 each of "#",
        // "site/+/device/+/+" and "+/+/device/+/temp".
        assert_eq!(count_sub_matches(&trie, &hit), 1 + 1 + 30);
        assert_eq!(count_sub_matches(&trie, miss), 1 + 30);
        assert_eq!(count_sub_matches(&trie, other), 10);
        // Random devices, so the lookups do not all hit the same (cached)
        // branch of the trie.
        let mut rng = rand::rng();
        let random_topics: Vec<String> = (0..4096)
            .map(|_| {
                let i = rng.random_range(0..n);
                format!("site/{}/device/{i}/temp", i % sites)
            })
            .collect();
        let mut group = c.benchmark_group(format!("subscriptions_{n}"));
        group.bench_function("match_random_device", |b| {
            let mut next = random_topics.iter().cycle();
            b.iter(|| count_sub_matches(&trie, next.next().expect("cycle")))
        });
        group.bench_function("match_device_topic", |b| {
            b.iter(|| count_sub_matches(&trie, black_box(&hit)))
        });
        group.bench_function("match_unknown_device", |b| {
            b.iter(|| count_sub_matches(&trie, black_box(miss)))
        });
        group.bench_function("match_unrelated_topic", |b| {
            b.iter(|| count_sub_matches(&trie, black_box(other)))
        });
        if n == 1_000_000 {
            // Subscribe + unsubscribe of a new device filter: creates and
            // prunes two nodes.
            let mut trie = trie;
            group.bench_function("insert_remove", |b| {
                let mut i = 0u32;
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let f = "site/7/device/new-device/+";
                    trie.insert(f, i, 1);
                    black_box(trie.remove(f, &i))
                })
            });
        }
        group.finish();
    }
}

fn retained_benches(c: &mut Criterion) {
    let start = Instant::now();
    let mut trie = RetainedTrie::new();
    for i in 0..100_000u32 {
        trie.insert(&format!("site/{}/device/{i}/temp", i % 100), i);
    }
    eprintln!(
        "built {} retained topics in {:?}",
        trie.len(),
        start.elapsed()
    );
    let count = |filter: &str| {
        let mut n = 0usize;
        trie.for_each_match(filter, |t, v| {
            black_box((t, v));
            n += 1;
        });
        n
    };
    assert_eq!(count("#"), 100_000);
    assert_eq!(count("site/7/#"), 1000);
    assert_eq!(count("site/+/device/+/temp"), 100_000);
    assert_eq!(count("site/7/device/107/temp"), 1);
    let mut group = c.benchmark_group("retained_100000");
    group.bench_function("match_hash_all", |b| b.iter(|| count(black_box("#"))));
    group.bench_function("match_plus_all", |b| {
        b.iter(|| count(black_box("site/+/device/+/temp")))
    });
    group.bench_function("match_one_site", |b| {
        b.iter(|| count(black_box("site/7/#")))
    });
    group.bench_function("match_exact", |b| {
        b.iter(|| count(black_box("site/7/device/107/temp")))
    });
    group.finish();
}

/// Lookups through nodes with few children (a vector up to eight, a keyed map past that):
/// `home/room{i}/temp` for `n` rooms, looking up the last room added (the end of the vector).
fn few_children_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("few_children");
    for n in [1u32, 4, 8, 9, 16] {
        let mut trie = SubscriptionTrie::new();
        for i in 0..n {
            trie.insert(&format!("home/room{i}/temp"), i, 0u8);
        }
        let topic = format!("home/room{}/temp", n - 1);
        assert_eq!(count_sub_matches(&trie, &topic), 1);
        group.bench_function(format!("match_{n}_rooms"), |b| {
            b.iter(|| count_sub_matches(&trie, black_box(&topic)))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    subscription_benches,
    retained_benches,
    few_children_benches
);
criterion_main!(benches);
