//! Feeds arbitrary bytes to `decode_packet` as every protocol version. Decoding must never panic,
//! and every packet it accepts must survive re-encoding: encode(decode(x)) decodes to the same
//! packet, with `encoded_len` equal to the bytes written.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_codec::{Packet, ProtocolVersion, decode_packet, encode_packet, encoded_len};

const VERSIONS: [ProtocolVersion; 3] =
    [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5];

fuzz_target!(|data: &[u8]| {
    for version in VERSIONS {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode_packet(&mut buf, version, u32::MAX) {
            // A CONNECT carries its own level and is decoded as that, whatever `version` says.
            let as_version = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let mut out = BytesMut::new();
            encode_packet(&packet, as_version, &mut out).expect("a decoded packet re-encodes");
            assert_eq!(encoded_len(&packet, as_version), Ok(out.len()));
            let again = decode_packet(&mut out, as_version, u32::MAX)
                .expect("a re-encoded packet decodes")
                .expect("a re-encoded packet is complete");
            assert_eq!(again, packet);
            assert!(out.is_empty());
        }
    }
});
