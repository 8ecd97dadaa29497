//! Validation of topic names (PUBLISH) and topic filters (SUBSCRIBE).
//!
//! Statement ids follow MQTT 3.1.1 numbering (section 4.7), which MQTT 5.0
//! repeats in substance in section 4.7; shared subscriptions follow MQTT 5.0
//! section 4.8.2.

use crate::shared::parse_shared;

/// Maximum length in bytes of a topic name or filter: it is a UTF-8 encoded
/// string with a two-byte length prefix [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or topic filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters must be at least one character long.
    #[error("topic is empty")]
    Empty,
    /// Longer than 65,535 bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// A topic name contains `+` or `#`.
    #[error("topic name contains a wildcard character ('+' or '#')")]
    WildcardInName,
    /// A filter uses `+` or `#` other than as a whole level (and `#` only as
    /// the last level).
    #[error("wildcard ('+' or '#') used other than as a whole level, or '#' not last")]
    InvalidWildcard,
    /// Contains U+0000.
    #[error("topic contains the null character U+0000")]
    Null,
    /// The share name of `$share/{group}/{filter}` is empty or contains `/`,
    /// `+` or `#`.
    #[error("invalid shared subscription group name")]
    InvalidSharedGroup,
    /// `$share/{group}` with no filter, or an empty filter after the group.
    #[error("shared subscription has an empty topic filter")]
    EmptySharedFilter,
}

/// Checks the rules common to names and filters: non-empty, length, no null.
#[inline]
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        // [MQTT-4.7.3-1]
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        // [MQTT-4.7.3-3]
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        // [MQTT-4.7.3-2]
        return Err(TopicError::Null);
    }
    Ok(())
}

/// Validates a topic name as used in PUBLISH and in the retained store.
///
/// - at least one character [MQTT-4.7.3-1]
/// - no wildcard characters [MQTT-4.7.1-1], [MQTT-3.3.2-2]
/// - no U+0000 [MQTT-4.7.3-2]
/// - at most 65,535 bytes [MQTT-4.7.3-3]
///
/// Topic names starting with `$` are valid here; whether a client may
/// publish to them is broker policy.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    topic_name_levels(name).map(|_| ())
}

/// Validates a topic name as [`validate_topic_name`] does and returns its number of levels
/// (`"a/b"` has two), in one pass over the bytes: the broker does both for every PUBLISH,
/// and the separate scans (the null check, the wildcard check, the level count) were 4 % of
/// its time in a 1→1 profile.
pub fn topic_name_levels(name: &str) -> Result<usize, TopicError> {
    if name.is_empty() {
        // [MQTT-4.7.3-1]
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        // [MQTT-4.7.3-3]
        return Err(TopicError::TooLong);
    }
    // Eight bytes at a time, in a `u64` (topics are short: a byte loop was 12 instructions a
    // byte, too short for the compiler's vector loop). A bad name then takes the slower path
    // below to tell which rule it breaks.
    let bytes = name.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    let mut separators = 0u64;
    let mut bad = 0u64;
    let mut scan = |word: u64| {
        separators += count_marked(zero_bytes(word ^ splat(b'/')));
        bad |= zero_bytes(word) | zero_bytes(word ^ splat(b'+')) | zero_bytes(word ^ splat(b'#'));
    };
    for chunk in &mut chunks {
        scan(u64::from_le_bytes(
            chunk.try_into().expect("chunks of eight"),
        ));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The last eight bytes, with those already scanned (the low ones) replaced by a byte
        // no rule is about; a name shorter than eight bytes is padded with it.
        let word = if let Some(last) = bytes.last_chunk::<8>() {
            let seen = (1u64 << (8 * (8 - rest.len()))) - 1;
            (u64::from_le_bytes(*last) & !seen) | (splat(b'a') & seen)
        } else {
            let mut padded = [b'a'; 8];
            padded[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(padded)
        };
        scan(word);
    }
    if bad != 0 {
        check_common(name)?;
        // [MQTT-4.7.1-1], [MQTT-3.3.2-2]
        return Err(TopicError::WildcardInName);
    }
    Ok(separators as usize + 1)
}

/// The levels of `topic`, as `topic.split('/')` gives them (an empty level for each leading,
/// trailing or doubled `/`), found with [`next_separator`]: inserting a retained message spent
/// 460 instructions in `split`'s character search for a three-level topic.
#[inline]
pub(crate) fn levels(topic: &str) -> impl Iterator<Item = &str> {
    let bytes = topic.as_bytes();
    let mut pos = Some(0);
    std::iter::from_fn(move || {
        let start = pos?;
        Some(match next_separator(bytes, start) {
            Some(i) => {
                pos = Some(i + 1);
                &topic[start..i]
            }
            None => {
                pos = None;
                &topic[start..]
            }
        })
    })
}

/// Index of the first `/` in `bytes` at or after `from`, eight bytes at a time. The trie
/// walks call it once per level of every PUBLISH's topic: a byte loop there ended each level
/// on a mispredicted branch and took a quarter of the walk (1→1 at 1.28 M msg/s).
#[inline]
pub(crate) fn next_separator(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(rest) = bytes.get(from..).filter(|r| !r.is_empty()) {
        let word = if let Some(word) = rest.first_chunk::<8>() {
            u64::from_le_bytes(*word)
        } else if let Some(last) = bytes.last_chunk::<8>() {
            // The last eight bytes, shifted so that `rest` starts the word (positions count
            // here, unlike in `topic_name_levels`, which masks the bytes it has seen instead:
            // sharing one tail loader cost the publish path 1 % of its instructions); the
            // bytes shifted in are zeros, which are not `/`.
            u64::from_le_bytes(*last) >> (8 * (8 - rest.len()))
        } else {
            rest.iter()
                .rev()
                .fold(0u64, |word, &b| (word << 8) | u64::from(b))
        };
        let marks = zero_bytes(word ^ splat(b'/'));
        if marks != 0 {
            return Some(from + (marks.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    None
}

/// `byte` in each of the eight bytes of a word.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The top bit of each byte that is zero in `word`, and no other bit. Exact (unlike the
/// shorter `(w - 0x01..) & !w & 0x80..`, which can also mark a 0x01 byte above a zero byte),
/// since the bytes are counted.
const fn zero_bytes(word: u64) -> u64 {
    const LOW7: u64 = splat(0x7F);
    !(((word & LOW7).wrapping_add(LOW7)) | word | LOW7)
}

/// How many bytes [`zero_bytes`] marked (at most eight per word).
const fn count_marked(marks: u64) -> u64 {
    // Each marked byte becomes a 1 in its byte; the multiplication sums them into the top byte.
    ((marks >> 7).wrapping_mul(splat(1))) >> 56
}

/// Validates a topic filter as used in SUBSCRIBE and UNSUBSCRIBE.
///
/// - at least one character [MQTT-4.7.3-1]
/// - `#` only as a whole level, and only as the last level [MQTT-4.7.1-2]
/// - `+` only as a whole level [MQTT-4.7.1-3]
/// - no U+0000 [MQTT-4.7.3-2]
/// - at most 65,535 bytes [MQTT-4.7.3-3]
///
/// A filter starting with `$share/` is validated as a shared subscription
/// (see [`parse_shared`]).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    match parse_shared(filter) {
        Some(shared) => shared.map(|_| ()),
        None => validate_plain_levels(filter),
    }
}

/// Validates a non-shared filter: the common rules plus wildcard placement.
pub(crate) fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    validate_plain_levels(filter)
}

/// Wildcard placement rules only.
fn validate_plain_levels(filter: &str) -> Result<(), TopicError> {
    // Fast path: most filters have no wildcard at all.
    if !filter.bytes().any(|b| b == b'+' || b == b'#') {
        return Ok(());
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // [MQTT-4.7.1-2] '#' must be the whole level and the last one.
            if level != "#" || levels.peek().is_some() {
                return Err(TopicError::InvalidWildcard);
            }
        } else if level.contains('+') && level != "+" {
            // [MQTT-4.7.1-3] '+' must occupy an entire level.
            return Err(TopicError::InvalidWildcard);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- topic names ----

    #[test]
    fn name_valid() {
        for n in [
            "a",
            "sport/tennis/player1",
            "/",
            "/finance",
            "a//b",
            "$SYS/monitor",
            " ",
            "ü/€",
        ] {
            assert_eq!(validate_topic_name(n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn name_empty() {
        // [MQTT-4.7.3-1] topic names must be at least one character long
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
    }

    #[test]
    fn name_wildcards() {
        // [MQTT-4.7.1-1], [MQTT-3.3.2-2] no wildcards in a topic name
        for n in ["+", "#", "a/+", "a/#", "sport+", "a/b#c", "+/x"] {
            assert_eq!(
                validate_topic_name(n),
                Err(TopicError::WildcardInName),
                "{n:?}"
            );
        }
    }

    #[test]
    fn name_null() {
        // [MQTT-4.7.3-2] no U+0000
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Null));
        assert_eq!(validate_topic_name("\0"), Err(TopicError::Null));
    }

    #[test]
    fn name_length() {
        // [MQTT-4.7.3-3] at most 65,535 bytes
        assert_eq!(validate_topic_name(&"a".repeat(MAX_TOPIC_LEN)), Ok(()));
        assert_eq!(validate_topic_name(&"/".repeat(MAX_TOPIC_LEN)), Ok(()));
        assert_eq!(
            validate_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
        // Bytes, not characters: 32,768 two-byte characters are too long.
        assert_eq!(
            validate_topic_name(&"é".repeat(32_768)),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn name_levels() {
        for (n, levels) in [("a", 1), ("/", 2), ("a//b", 3), ("tern-bench/4242/p/0", 4)] {
            assert_eq!(topic_name_levels(n), Ok(levels), "{n:?}");
        }
        // The rule broken first is reported, as `check_common` orders them.
        assert_eq!(topic_name_levels("a/+/\0"), Err(TopicError::Null));
        assert_eq!(topic_name_levels(""), Err(TopicError::Empty));
    }

    proptest::proptest! {
        /// The one-pass check agrees with the rules checked one by one, on names long enough
        /// for the vectorised loop and its tail, over an alphabet with every special byte.
        #[test]
        fn name_levels_agree_with_the_rules(
            chars in proptest::collection::vec(
                // The special bytes, their neighbours (one bit away: what an inexact zero-byte
                // test confuses) and characters whose second byte is a special byte with the
                // top bit set (ï = C3 AF, « = C2 AB, £ = C2 A3).
                proptest::sample::select(vec![
                    'a', '/', '+', '#', '\0', '.', '*', '"', '\u{1}', 'é', 'ï', '«', '£',
                ]),
                0..70,
            ),
        ) {
            let name: String = chars.into_iter().collect();
            let expected = check_common(&name).and_then(|()| {
                if name.contains(['+', '#']) {
                    Err(TopicError::WildcardInName)
                } else {
                    Ok(name.split('/').count())
                }
            });
            proptest::prop_assert_eq!(topic_name_levels(&name), expected);
        }
    }

    #[test]
    fn levels_are_those_of_split() {
        for topic in [
            "",
            "/",
            "//",
            "a",
            "a/",
            "/a",
            "a//b",
            "a/b/c",
            "sport/tennis/player1/ranking",
            "twelve chars/and a level longer than eight/",
            "$SYS/broker/x",
            "ü/é/€",
            "a/b/",
        ] {
            let got: Vec<&str> = levels(topic).collect();
            let want: Vec<&str> = topic.split('/').collect();
            assert_eq!(got, want, "{topic:?}");
        }
    }

    #[test]
    fn next_separator_finds_the_first_slash_at_or_after_the_start() {
        // Every length up to 20, a slash (or none) at every position, every start: against
        // the byte loop it replaces. Fillers include bytes one bit away from `/`.
        for len in 0..=20usize {
            for slash in (0..len).map(Some).chain([None]) {
                for fill in [b'a', b'.', b'/' ^ 0x80, b'/' ^ 0x10, 0x00, 0xFF] {
                    let mut bytes = vec![fill; len];
                    if let Some(i) = slash {
                        bytes[i] = b'/';
                    }
                    for second in [None, Some(len.saturating_sub(1))] {
                        if let Some(j) = second.filter(|_| len > 0) {
                            bytes[j] = b'/';
                        }
                        for from in 0..=len + 1 {
                            let want = bytes
                                .get(from..)
                                .and_then(|r| r.iter().position(|&b| b == b'/'))
                                .map(|i| from + i);
                            assert_eq!(
                                super::next_separator(&bytes, from),
                                want,
                                "{bytes:?} from {from}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_bytes_marks_exactly_the_equal_bytes() {
        for pos in 0..8 {
            for byte in 0..=255u8 {
                for fill in [0x00u8, 0x01, b'a', 0x7F, 0x80, 0xFF, b'/', b'.'] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = byte;
                    let word = u64::from_le_bytes(bytes);
                    for x in [0u8, b'/', b'+', b'#'] {
                        let marks = zero_bytes(word ^ splat(x));
                        let expected: u64 = (0..8)
                            .filter(|&i| bytes[i] == x)
                            .map(|i| 0x80u64 << (8 * i))
                            .sum();
                        assert_eq!(marks, expected, "{bytes:?} {x}");
                        assert_eq!(count_marked(marks), u64::from(expected.count_ones()));
                    }
                }
            }
        }
    }

    // ---- topic filters ----

    #[test]
    fn filter_valid() {
        for f in [
            "#",
            "+",
            "/",
            "+/+",
            "/+",
            "+/#",
            "sport/#",
            "sport/tennis/#",
            "sport/tennis/player1/#",
            "sport/+/player1",
            "+/tennis/#",
            "a//b",
            "$SYS/#",
            "a/+/+/#",
            "$share", // no '/' after it: an ordinary one-level filter
            "$sharex/a",
        ] {
            assert_eq!(validate_topic_filter(f), Ok(()), "{f:?}");
        }
    }

    #[test]
    fn filter_empty() {
        // [MQTT-4.7.3-1]
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn filter_multi_level_wildcard_placement() {
        // [MQTT-4.7.1-2] '#' must be the last character, alone in its level
        for f in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/a",
            "##",
            "a/#/",
            "a/b#",
            "#a",
        ] {
            assert_eq!(
                validate_topic_filter(f),
                Err(TopicError::InvalidWildcard),
                "{f:?}"
            );
        }
    }

    #[test]
    fn filter_single_level_wildcard_placement() {
        // [MQTT-4.7.1-3] '+' must occupy an entire level
        for f in ["sport+", "sport/+tennis", "a/++", "+a/b", "a/b+/c"] {
            assert_eq!(
                validate_topic_filter(f),
                Err(TopicError::InvalidWildcard),
                "{f:?}"
            );
        }
    }

    #[test]
    fn filter_null() {
        // [MQTT-4.7.3-2]
        assert_eq!(validate_topic_filter("a/\0/#"), Err(TopicError::Null));
    }

    #[test]
    fn filter_length() {
        // [MQTT-4.7.3-3]
        let mut f = "a/".repeat(MAX_TOPIC_LEN / 2);
        f.push('#');
        assert_eq!(f.len(), MAX_TOPIC_LEN);
        assert_eq!(validate_topic_filter(&f), Ok(()));
        f.push_str("/#");
        assert_eq!(validate_topic_filter(&f), Err(TopicError::TooLong));
    }

    #[test]
    fn filter_shared_is_validated_as_shared() {
        // MQTT 5.0 [MQTT-4.8.2-1], [MQTT-4.8.2-2]
        assert_eq!(validate_topic_filter("$share/g/a/+"), Ok(()));
        assert_eq!(validate_topic_filter("$share/g/#"), Ok(()));
        assert_eq!(
            validate_topic_filter("$share//a"),
            Err(TopicError::InvalidSharedGroup)
        );
        assert_eq!(
            validate_topic_filter("$share/g+/a"),
            Err(TopicError::InvalidSharedGroup)
        );
        assert_eq!(
            validate_topic_filter("$share/g"),
            Err(TopicError::EmptySharedFilter)
        );
        assert_eq!(
            validate_topic_filter("$share/g/"),
            Err(TopicError::EmptySharedFilter)
        );
        assert_eq!(
            validate_topic_filter("$share/g/a#"),
            Err(TopicError::InvalidWildcard)
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(TopicError::Empty.to_string(), "topic is empty");
        assert!(TopicError::TooLong.to_string().contains("65535"));
    }
}
