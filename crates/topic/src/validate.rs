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
    check_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
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
