//! PROXY protocol v1 (text) and v2 (binary) headers, as sent by HAProxy and cloud load
//! balancers before the client's own bytes, so that the broker logs and authorises the real
//! client address.
//!
//! The header is read exactly: not one byte of the MQTT stream that follows is consumed (v1 is
//! read up to its LF with `peek`, v2 by its declared length). Its size is capped; the caller
//! bounds the time it may take.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (from the specification).
pub const V1_MAX_LEN: usize = 107;
/// The largest v2 address-and-TLV block accepted. The specification allows 65,535 bytes; load
/// balancers send a few hundred at most (addresses, ALPN, SSL details, VPC endpoint ids).
pub const V2_MAX_PAYLOAD: usize = 4096;
/// The shortest header of either version: `PROXY UNKNOWN\r\n`. Reading this many bytes first
/// cannot over-read.
const MIN_LEN: usize = 15;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The real client address; `None` for `LOCAL` (health checks), `UNKNOWN` and address
    /// families other than IPv4/IPv6, where the socket's own peer address stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    const NONE: Self = Self {
        source: None,
        destination: None,
    };
}

/// A connection whose PROXY header is missing, malformed or too long is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("PROXY header too long")]
    TooLong,
}

/// Reads the PROXY header (v1 or v2) at the start of `stream`, leaving the stream positioned
/// on the first byte after it.
pub async fn read_header(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyError> {
    let mut head = [0u8; MIN_LEN];
    stream.read_exact(&mut head).await?;
    if head[..12] == V2_SIGNATURE {
        let mut header = Vec::with_capacity(16 + 36);
        header.extend_from_slice(&head);
        header.push(stream.read_u8().await?);
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if len > V2_MAX_PAYLOAD {
            return Err(ProxyError::TooLong);
        }
        header.resize(16 + len, 0);
        stream.read_exact(&mut header[16..]).await?;
        return parse_v2(&header);
    }
    if !head.starts_with(b"PROXY ") {
        return Err(ProxyError::NotProxy);
    }
    let mut line = Vec::with_capacity(V1_MAX_LEN);
    line.extend_from_slice(&head);
    if let Some(i) = line.iter().position(|&b| b == b'\n')
        && i != line.len() - 1
    {
        return Err(ProxyError::Malformed("line too short"));
    }
    let mut peeked = [0u8; V1_MAX_LEN];
    while line.last() != Some(&b'\n') {
        let room = V1_MAX_LEN - line.len();
        if room == 0 {
            return Err(ProxyError::TooLong);
        }
        let n = stream.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(ProxyError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        // Take up to and including the LF if it is there, else everything seen (all header).
        let take = peeked[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        stream.read_exact(&mut peeked[..take]).await?;
        line.extend_from_slice(&peeked[..take]);
    }
    parse_v1(&line)
}

/// Parses a whole v1 line, `PROXY ... \r\n` included.
pub fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(ProxyError::Malformed("v1 line must end with CRLF"))?;
    if line.len() + 2 > V1_MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::NotProxy);
    }
    let v6 = match parts.next() {
        Some("UNKNOWN") => return Ok(ProxyHeader::NONE), // the rest is to be ignored
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => {
            return Err(ProxyError::Malformed(
                "v1 protocol must be TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("v1 needs 2 addresses and 2 ports"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| ProxyError::Malformed("v1 address does not match its protocol"))
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError::Malformed("v1 bad port"));
        }
        s.parse()
            .map_err(|_| ProxyError::Malformed("v1 port out of range"))
    };
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
        destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
    })
}

/// Parses a whole v2 header (16-byte fixed part and the block it announces).
pub fn parse_v2(header: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if header.len() < 16 || header[..12] != V2_SIGNATURE {
        return Err(ProxyError::NotProxy);
    }
    let ver_cmd = header[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version must be 2"));
    }
    let family = header[13];
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    let block = header
        .get(16..16 + len)
        .ok_or(ProxyError::Malformed("v2 header shorter than its length"))?;
    match ver_cmd & 0x0f {
        0 => return Ok(ProxyHeader::NONE), // LOCAL: the proxy's own connection (health check)
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command must be LOCAL or PROXY")),
    }
    if family & 0x0f > 2 {
        return Err(ProxyError::Malformed("v2 bad transport protocol"));
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family >> 4 {
        // AF_INET
        1 => {
            let a = block
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 block too short"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(ip(&a[0..4]), port(&a[8..10]))),
                destination: Some(SocketAddr::new(ip(&a[4..8]), port(&a[10..12]))),
            })
        }
        // AF_INET6
        2 => {
            let a = block
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 block too short"))?;
            let ip = |b: &[u8]| {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(ip(&a[0..16]), port(&a[32..34]))),
                destination: Some(SocketAddr::new(ip(&a[16..32]), port(&a[34..36]))),
            })
        }
        // AF_UNSPEC, AF_UNIX: no IP address to report
        0 | 3 => Ok(ProxyHeader::NONE),
        _ => Err(ProxyError::Malformed("v2 bad address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1() {
        let h = parse_v1(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n").unwrap();
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(h.destination, Some("198.51.100.2:1883".parse().unwrap()));
        let h = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n").unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), ProxyHeader::NONE);
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap(),
            ProxyHeader::NONE
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 1\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 1\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 1\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 1\r\n",
            b"proxy TCP4 192.0.2.1 198.51.100.2 1 1\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    #[test]
    fn v2_inet() {
        let mut block = vec![192, 0, 2, 1, 198, 51, 100, 2];
        block.extend_from_slice(&56324u16.to_be_bytes());
        block.extend_from_slice(&1883u16.to_be_bytes());
        block.extend_from_slice(&[0x04, 0, 1, 0]); // a NOOP TLV, ignored
        let h = parse_v2(&v2(1, 0x11, &block)).unwrap();
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(h.destination, Some("198.51.100.2:1883".parse().unwrap()));
        // LOCAL ignores the block.
        assert_eq!(parse_v2(&v2(0, 0x11, &block)).unwrap(), ProxyHeader::NONE);
        assert_eq!(parse_v2(&v2(1, 0x00, &[])).unwrap(), ProxyHeader::NONE);
    }

    #[test]
    fn v2_inet6() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&[0, 7, 0, 8]);
        let h = parse_v2(&v2(1, 0x21, &block)).unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:7".parse().unwrap()));
        assert_eq!(h.destination, Some("[2001:db8::2]:8".parse().unwrap()));
    }

    #[test]
    fn v2_malformed() {
        assert!(parse_v2(&v2(1, 0x11, &[1, 2, 3])).is_err()); // short IPv4 block
        assert!(parse_v2(&v2(1, 0x21, &[0; 12])).is_err()); // short IPv6 block
        assert!(parse_v2(&v2(2, 0x11, &[0; 12])).is_err()); // bad command
        assert!(parse_v2(&v2(1, 0x41, &[0; 12])).is_err()); // bad family
        let mut h = v2(1, 0x11, &[0; 12]);
        h[12] = 0x11; // version 1
        assert!(parse_v2(&h).is_err());
        let mut h = v2(1, 0x11, &[0; 12]);
        h.truncate(20); // shorter than its length
        assert!(parse_v2(&h).is_err());
    }
}
