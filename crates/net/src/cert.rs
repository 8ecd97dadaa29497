//! The subject common name (CN) of an X.509 certificate, read with a minimal DER walk.
//!
//! Only what `cn_as_username` needs: Certificate → TBSCertificate → subject → the first
//! `commonName` attribute (as Mosquitto's `use_identity_as_username` takes the first one). The
//! certificate has already been verified by rustls, so this walk only has to be safe on any
//! input, not to validate it: anything unexpected gives `None`.

/// OID 2.5.4.3 (id-at-commonName), DER contents.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version` of the TBSCertificate.
const VERSION: u8 = 0xA0;

/// The first subject CN of a DER certificate, if it has one that is a valid string without NUL
/// characters (a NUL could cut a username short in a C client's log or an ACL pattern).
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = expect(rest, tag)?.1;
    }
    let (mut rdns, _) = expect(rest, SEQUENCE)?;
    while !rdns.is_empty() {
        let (set, after) = expect(rdns, SET)?;
        rdns = after;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, after) = expect(attrs, SEQUENCE)?;
            attrs = after;
            let (oid, value) = expect(attr, OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, content, _) = tlv(value)?;
                return decode_string(tag, content).filter(|s| !s.contains('\0'));
            }
        }
    }
    None
}

/// Splits one TLV off `input`: (tag, contents, rest). Single-byte tags only (all we need).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag number form: not in the structures we walk
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None; // indefinite length (not DER) or absurdly long
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, after) = rest.split_at(len);
    Some((tag, content, after))
}

/// Like [`tlv`], but the tag must be `want`: (contents, rest).
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, content, rest) = tlv(input)?;
    (tag == want).then_some((content, rest))
}

/// The directory string types a CN may use.
fn decode_string(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => String::from_utf8(content.to_vec()).ok(),
        // TeletexString: in practice Latin-1
        0x14 => Some(content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1e => {
            if !content.len().is_multiple_of(2) {
                return None;
            }
            let units = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UTF-32BE
        0x1c => {
            if !content.len().is_multiple_of(4) {
                return None;
            }
            content
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert_with(dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn finds_the_cn() {
        let der = cert_with(&[
            (DnType::OrganizationName, "tern"),
            (DnType::CommonName, "alice"),
        ]);
        assert_eq!(subject_cn(&der).as_deref(), Some("alice"));
    }

    #[test]
    fn utf8_cn() {
        let der = cert_with(&[(DnType::CommonName, "zoë-ü")]);
        assert_eq!(subject_cn(&der).as_deref(), Some("zoë-ü"));
    }

    #[test]
    fn no_cn() {
        let der = cert_with(&[(DnType::OrganizationName, "tern")]);
        assert_eq!(subject_cn(&der), None);
    }

    #[test]
    fn garbage_and_truncation_are_none() {
        let der = cert_with(&[(DnType::CommonName, "alice")]);
        for len in 0..der.len() {
            // Any prefix must be handled without panicking; most give None.
            let _ = subject_cn(&der[..len]);
        }
        assert_eq!(subject_cn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject_cn(b"not a certificate"), None);
    }

    #[test]
    fn strings() {
        assert_eq!(
            decode_string(0x1e, &[0, b'a', 0, b'b']).as_deref(),
            Some("ab")
        );
        assert_eq!(decode_string(0x1c, &[0, 0, 0, b'a']).as_deref(), Some("a"));
        assert_eq!(decode_string(0x14, &[0xe9]).as_deref(), Some("é"));
        assert_eq!(decode_string(0x04, b"x"), None);
    }
}
