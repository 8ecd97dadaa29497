//! Feeds arbitrary bytes to `decode_packet` as every protocol version. Decoding must never panic,
//! and every packet it accepts must survive re-encoding: encode(decode(x)) decodes to the same
//! packet, with `encoded_len` equal to the bytes written. `peek_publish` must never panic either,
//! and must read every PUBLISH that `decode_packet` accepts as it does.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_codec::{Packet, Peeked, ProtocolVersion, decode_packet, encode_packet, encoded_len, peek_publish};

const VERSIONS: [ProtocolVersion; 3] =
    [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5];

fuzz_target!(|data: &[u8]| {
    for version in VERSIONS {
        let mut buf = BytesMut::from(data);
        loop {
            // Owned, so that `buf` can be decoded next.
            let peeked = peek_publish(&buf, version).map(|p| match p {
                Peeked::Publish { view, len } => Some((
                    len,
                    view.topic.to_vec(),
                    view.payload.to_vec(),
                    view.qos,
                    view.packet_id,
                )),
                _ => None,
            });
            let before = buf.len();
            let Ok(Some(packet)) = decode_packet(&mut buf, version, u32::MAX) else {
                break;
            };
            if let Packet::Publish(p) = &packet {
                match peeked {
                    Ok(Some((len, topic, payload, qos, packet_id))) => {
                        assert_eq!(len, before - buf.len());
                        assert_eq!(&topic[..], &p.topic.as_bytes()[..]);
                        assert_eq!(&payload[..], &p.payload[..]);
                        assert_eq!((qos, packet_id), (p.qos, p.packet_id));
                    }
                    other => panic!("a PUBLISH decode_packet accepts peeked as {other:?}"),
                }
            }
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
