//! Matching one topic filter against one topic name.
//!
//! This is the reference matcher: the tries implement the same rules
//! without walking every filter, and the property tests compare them with
//! this function.

/// Returns whether the plain (non-shared) topic `filter` matches the topic
/// name `topic`.
///
/// - Levels are separated by `/`; empty levels are real levels (`"a//b"` has
///   three levels, `"/a"` two, the first empty).
/// - `+` matches exactly one level, including an empty one [MQTT-4.7.1-3].
/// - `#` as the last level matches any number of levels, including the
///   parent level itself: `"a/#"` matches `"a"` [MQTT-4.7.1-2].
/// - A topic name starting with `$` is never matched by a filter whose first
///   level is `+` or `#` [MQTT-4.7.2-1].
///
/// The arguments are not validated. A `#` that is not the last level is
/// compared literally (it can never match a valid topic name). A
/// `$share/{group}/...` filter is compared literally as well: strip it with
/// [`crate::parse_shared`] first.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') {
        // [MQTT-4.7.2-1]
        let first = filter.split('/').next().unwrap_or("");
        if first == "+" || first == "#" {
            return false;
        }
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (None, None) => return true,
            // '#' (as the last level) matches the parent level and any
            // number of child levels.
            (Some("#"), _) if f.clone().next().is_none() => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact() {
        assert!(matches("a", "a"));
        assert!(matches("a/b/c", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a", "b"));
        // Topic names are case sensitive (section 4.7.3)
        assert!(!matches("ACCOUNTS", "Accounts"));
        // A space is a valid character
        assert!(matches("Accounts payable", "Accounts payable"));
    }

    #[test]
    fn multi_level_wildcard() {
        // [MQTT-4.7.1-2] examples from 3.1.1 section 4.7.1.2
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(!matches(f, "sport/tennis"));
        // "sport/#" also matches the singular "sport": '#' includes the parent level
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(!matches("sport/#", "sports"));
        assert!(matches("#", "a"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(matches("#", "/a"));
    }

    #[test]
    fn single_level_wildcard() {
        // [MQTT-4.7.1-3] examples from 3.1.1 section 4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        // '+' matches an empty level
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", ""));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(matches("+/+/#", "a/b"));
        assert!(matches("+/+/#", "a/b/c/d"));
        assert!(!matches("+/+/#", "a"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("/a", "/a"));
        assert!(!matches("a", "/a"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "//"));
        assert!(matches("//+", "//"));
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1] wildcards at the first level never match '$' topics
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("#", "$SYS"));
        assert!(!matches("+", "$SYS"));
        assert!(!matches("+/#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/+/Clients", "$SYS/monitor/Clients"));
        // Only the first level matters
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b/c"));
        assert!(matches("+/b", "a$/b"));
    }

    #[test]
    fn non_final_hash_is_literal() {
        // Invalid filter ([MQTT-4.7.1-2]): never panics, never a wildcard.
        assert!(!matches("a/#/b", "a/x/b"));
        assert!(!matches("a/#/b", "a/x"));
        assert!(matches("a/#/b", "a/#/b"));
    }

    #[test]
    fn deep_topic() {
        let topic = "/".repeat(65_535);
        let filter = "+/".repeat(32_767) + "#";
        assert!(matches(&filter, &topic));
        assert!(matches(&topic, &topic));
    }
}
