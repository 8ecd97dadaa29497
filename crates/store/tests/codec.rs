//! The record encoding: round trips, and no panic on any input.

mod common;

use proptest::prelude::*;
use tern_store::{Record, decode, encode};

#[test]
fn every_variant_round_trips() {
    for record in common::every_variant() {
        let mut out = Vec::new();
        encode(&record, &mut out);
        assert_eq!(decode(&out).unwrap(), record);
    }
}

#[test]
fn every_strict_prefix_is_an_error() {
    for record in common::every_variant() {
        let mut out = Vec::new();
        encode(&record, &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "{record:?} cut at {cut}");
        }
    }
}

#[test]
fn tags_are_stable() {
    // A tag keeps its meaning forever: logs written by earlier binaries read the same.
    let session = [1, 1, b'c', 4, 60, 1, 0xE8, 0x07];
    assert_eq!(
        decode(&session).unwrap(),
        Record::Session {
            client_id: "c".into(),
            version: 4,
            expiry_interval: 60,
            disconnected_at_ms: Some(1000),
        }
    );
    let owner = Record::SessionOwner {
        client_id: "c".into(),
        username: "al".into(),
    };
    assert_eq!(encoded(&owner), [17, 1, b'c', 2, b'a', b'l']);
}

#[test]
fn every_tag_byte_is_handled() {
    for tag in 0..=255u8 {
        let _ = decode(&[tag]);
        let _ = decode(&[tag, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let _ = decode(&[
            tag, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ]);
    }
}

fn encoded(r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    encode(r, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(record in common::record()) {
        prop_assert_eq!(decode(&encoded(&record)).unwrap(), record);
    }

    #[test]
    fn encoding_appends(a in common::record(), b in common::record()) {
        let mut out = encoded(&a);
        let split = out.len();
        encode(&b, &mut out);
        prop_assert_eq!(decode(&out[..split]).unwrap(), a);
        prop_assert_eq!(decode(&out[split..]).unwrap(), b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    /// Mutations of valid encodings reach deeper than random bytes do.
    #[test]
    fn mutated_encodings_never_panic(record in common::record(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = encoded(&record);
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(decoded) = decode(&bytes) {
            // Whatever decodes re-encodes to the same bytes: no two encodings per record.
            prop_assert_eq!(encoded(&decoded), bytes);
        }
    }
}
