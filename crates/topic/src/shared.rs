//! Shared subscriptions: `$share/{ShareName}/{filter}` (MQTT 5.0 section
//! 4.8.2).

use crate::validate::{TopicError, validate_plain_filter};

const SHARE_PREFIX: &str = "$share/";

/// The parts of a shared subscription filter `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    /// The share name.
    pub group: &'a str,
    /// The (plain, validated) topic filter that selects messages.
    pub filter: &'a str,
}

/// Splits a shared subscription filter.
///
/// Returns `None` when `filter` does not start with `$share/` (it is then an
/// ordinary filter). Otherwise:
///
/// - the share name must be at least one character long [MQTT-4.8.2-1] and
///   must not contain `/`, `+` or `#` [MQTT-4.8.2-2]
///   ([`TopicError::InvalidSharedGroup`]);
/// - it must be followed by `/` and a non-empty topic filter
///   ([`TopicError::EmptySharedFilter`]) which is itself a valid filter.
///
/// The whole string's length is not checked here (the filter part is);
/// [`crate::validate_topic_filter`] checks both.
pub fn parse_shared(filter: &str) -> Option<Result<SharedFilter<'_>, TopicError>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    Some(parse_rest(rest))
}

fn parse_rest(rest: &str) -> Result<SharedFilter<'_>, TopicError> {
    let (group, filter) = match rest.split_once('/') {
        Some((group, filter)) => (group, filter),
        None => (rest, ""),
    };
    // [MQTT-4.8.2-1], [MQTT-4.8.2-2]
    if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::InvalidSharedGroup);
    }
    if group.as_bytes().contains(&0) {
        return Err(TopicError::Null);
    }
    if filter.is_empty() {
        return Err(TopicError::EmptySharedFilter);
    }
    validate_plain_filter(filter)?;
    Ok(SharedFilter { group, filter })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_shared() {
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share"), None);
        assert_eq!(parse_shared("$SHARE/g/a"), None);
        assert_eq!(parse_shared("$sharex/g/a"), None);
        assert_eq!(parse_shared("#"), None);
    }

    #[test]
    fn valid() {
        assert_eq!(
            parse_shared("$share/consumer1/sport/tennis/+"),
            Some(Ok(SharedFilter {
                group: "consumer1",
                filter: "sport/tennis/+"
            }))
        );
        assert_eq!(
            parse_shared("$share/g/#"),
            Some(Ok(SharedFilter {
                group: "g",
                filter: "#"
            }))
        );
        // The filter may itself start with '/' or be an empty level pair.
        assert_eq!(
            parse_shared("$share/g//finance"),
            Some(Ok(SharedFilter {
                group: "g",
                filter: "/finance"
            }))
        );
        assert_eq!(
            parse_shared("$share/g/$share/x"),
            Some(Ok(SharedFilter {
                group: "g",
                filter: "$share/x"
            }))
        );
    }

    #[test]
    fn group_rules() {
        // [MQTT-4.8.2-1] at least one character
        assert_eq!(
            parse_shared("$share//a"),
            Some(Err(TopicError::InvalidSharedGroup))
        );
        assert_eq!(
            parse_shared("$share/"),
            Some(Err(TopicError::InvalidSharedGroup))
        );
        // [MQTT-4.8.2-2] no '+' or '#' ('/' ends the share name)
        assert_eq!(
            parse_shared("$share/a+/x"),
            Some(Err(TopicError::InvalidSharedGroup))
        );
        assert_eq!(
            parse_shared("$share/#/x"),
            Some(Err(TopicError::InvalidSharedGroup))
        );
        assert_eq!(
            parse_shared("$share/+/x"),
            Some(Err(TopicError::InvalidSharedGroup))
        );
        assert_eq!(parse_shared("$share/g\0/x"), Some(Err(TopicError::Null)));
    }

    #[test]
    fn filter_rules() {
        assert_eq!(
            parse_shared("$share/g"),
            Some(Err(TopicError::EmptySharedFilter))
        );
        assert_eq!(
            parse_shared("$share/g/"),
            Some(Err(TopicError::EmptySharedFilter))
        );
        // [MQTT-4.7.1-2]
        assert_eq!(
            parse_shared("$share/g/a/#/b"),
            Some(Err(TopicError::InvalidWildcard))
        );
        // [MQTT-4.7.1-3]
        assert_eq!(
            parse_shared("$share/g/a+"),
            Some(Err(TopicError::InvalidWildcard))
        );
        // [MQTT-4.7.3-2]
        assert_eq!(parse_shared("$share/g/a\0"), Some(Err(TopicError::Null)));
    }
}
