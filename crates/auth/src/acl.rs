//! The ACL file, in Mosquitto's format:
//!
//! ```text
//! # Before any `user` line: rules for anonymous clients (no user name), as in Mosquitto.
//! topic read public/#
//!
//! user alice
//! topic readwrite alice/#        # `readwrite` is the default when no access is given
//! topic deny alice/secret
//! topic read $SYS/#              # `#` alone never matches `$SYS/...`: it needs its own rule
//!
//! # Patterns apply to every client, whatever section they appear in.
//! pattern write devices/%c/status
//! pattern read users/%u/#
//! ```
//!
//! Semantics (see `docs/security.md`):
//! - Default deny: with an ACL file, only what a rule grants is allowed.
//! - A client's rules are its user's section (the first section for anonymous clients) plus
//!   every `pattern`, with `%u` replaced by its user name and `%c` by its client id. A pattern
//!   with `%u` does not apply to anonymous clients; a pattern does not apply when the value
//!   substituted contains `/`, `+` or `#` (it would reach into other levels).
//! - `deny` wins: a matching `deny` rule refuses whatever the other rules grant.
//! - Publish (and the will topic) needs `write` on the topic; each delivered message needs
//!   `read` on its topic (plain MQTT matching, so `#` does not match `$SYS/...`).
//! - Subscribe needs a `read` rule whose filter *covers* the subscription filter (every topic
//!   the subscription can match, the rule matches too: `foo/#` covers `foo/+/bar`, `foo/+`
//!   does not cover `foo/#`), and is refused when a `deny` rule covers it. A subscription that
//!   only partly overlaps a `deny` rule is granted, and the denied topics are filtered out at
//!   delivery. `$share/{group}/` is stripped first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// An ACL file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("{}line {line}: {message}", path_prefix(.path))]
    Parse {
        path: Option<PathBuf>,
        line: usize,
        message: String,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants(self, op: Op) -> bool {
        matches!(
            (self, op),
            (Access::ReadWrite, _) | (Access::Read, Op::Read) | (Access::Write, Op::Write)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// How the target is compared with a rule's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A topic name (publish, delivery): plain matching.
    Topic,
    /// A subscription filter: the rule must cover it.
    Filter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            AclError::Parse { line, message, .. } => AclError::Parse {
                path: Some(path.to_owned()),
                line,
                message,
            },
            other => other,
        })
    }

    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut acl = AclFile::default();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| AclError::Parse {
                path: None,
                line: i + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a user name".into()));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(|m| err(format!("{keyword}: {m}")))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(user) = &current {
                        acl.users.entry(user.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword {other:?} (expected `user`, `topic` or `pattern`)"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// May this client publish on `topic` (also: the will topic)?
    pub fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(username, client_id, Op::Write, Target::Topic, topic)
    }

    /// May this client subscribe to `filter` (`$share/{group}/` is stripped first)?
    pub fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = match tern_topic::parse_shared(filter) {
            Some(Ok(shared)) => shared.filter,
            Some(Err(_)) => return false,
            None => filter,
        };
        self.check(username, client_id, Op::Read, Target::Filter, filter)
    }

    /// May this client receive a message published on `topic`?
    pub fn can_receive(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(username, client_id, Op::Read, Target::Topic, topic)
    }

    fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        op: Op,
        target: Target,
        what: &str,
    ) -> bool {
        let own = match username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or_default(),
            None => &self.anonymous,
        };
        let hits = |filter: &str| match target {
            Target::Topic => tern_topic::matches(filter, what),
            Target::Filter => covers(filter, what),
        };
        let mut granted = false;
        let mut visit = |access: Access, filter: &str| -> bool {
            if !hits(filter) {
                return true;
            }
            if access == Access::Deny {
                return false;
            }
            granted |= access.grants(op);
            true
        };
        for rule in own {
            if !visit(rule.access, &rule.filter) {
                return false;
            }
        }
        for rule in &self.patterns {
            let Some(filter) = substitute(&rule.filter, username, client_id) else {
                continue;
            };
            if !visit(rule.access, &filter) {
                return false;
            }
        }
        granted
    }
}

/// The first word of `s` and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

/// `[read|write|readwrite|deny] FILTER`.
fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (word, after) = split_word(rest);
    let access = match word {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        "deny" => Some(Access::Deny),
        _ => None,
    };
    // As in Mosquitto, the access word is optional; a lone word is the topic.
    let (access, filter) = match access {
        Some(a) if !after.is_empty() => (a, after),
        _ => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("missing topic filter".into());
    }
    tern_topic::validate_topic_filter(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

/// A pattern's filter with `%u` and `%c` replaced; `None` when it does not apply.
fn substitute<'a>(
    filter: &'a str,
    username: Option<&str>,
    client_id: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    if !filter.contains('%') {
        return Some(filter.into());
    }
    let safe = |v: &str| !v.contains(['/', '+', '#']);
    let mut out = filter.to_owned();
    if out.contains("%u") {
        let u = username.filter(|u| safe(u))?;
        out = out.replace("%u", u);
    }
    if filter.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    Some(out.into())
}

/// Whether filter `acl` matches every topic that filter `sub` matches.
pub fn covers(acl: &str, sub: &str) -> bool {
    // A `$` topic is never matched by a filter starting with a wildcard [MQTT-4.7.2-1].
    if sub.starts_with('$') && (acl.starts_with('+') || acl.starts_with('#')) {
        return false;
    }
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            // A final `#` matches the remaining levels, and the parent level.
            (Some("#"), _) if a.clone().next().is_none() => return true,
            (None, None) => return true,
            (Some("+"), Some(sl)) if sl != "#" => {}
            (Some(al), Some(sl)) if al == sl && al != "+" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering() {
        assert!(covers("foo/#", "foo/+/bar"));
        assert!(covers("foo/#", "foo/#"));
        assert!(covers("foo/#", "foo"));
        assert!(covers("foo/+", "foo/+"));
        assert!(covers("foo/+", "foo/x"));
        assert!(!covers("foo/+", "foo/#"));
        assert!(!covers("foo/+", "foo/x/y"));
        assert!(!covers("foo/x", "foo/+"));
        assert!(!covers("foo", "foo/#"));
        assert!(!covers("foo/+/#", "foo/#"));
        assert!(covers("#", "#"));
        assert!(covers("#", "a/+/b"));
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
        assert!(!covers("$SYS/#", "#"));
        assert!(covers("+/+", "a/b"));
        assert!(!covers("+/+", "a/#"));
    }

    #[test]
    fn parse_forms() {
        let acl = AclFile::parse(
            "# c\n\ntopic foo\ntopic read bar/#\n  topic   write   baz  \nuser u\ntopic deny x\ntopic read\npattern write d/%c\n",
        )
        .unwrap();
        assert_eq!(
            acl.anonymous,
            [
                Rule {
                    access: Access::ReadWrite,
                    filter: "foo".into()
                },
                Rule {
                    access: Access::Read,
                    filter: "bar/#".into()
                },
                Rule {
                    access: Access::Write,
                    filter: "baz".into()
                },
            ]
        );
        assert_eq!(
            acl.users["u"],
            [
                Rule {
                    access: Access::Deny,
                    filter: "x".into()
                },
                // A lone word is the topic.
                Rule {
                    access: Access::ReadWrite,
                    filter: "read".into()
                },
            ]
        );
        assert_eq!(acl.patterns.len(), 1);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = AclFile::parse("topic a\nfoo bar\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: unknown keyword \"foo\" (expected `user`, `topic` or `pattern`)"
        );
        let e = AclFile::parse("user\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: `user` needs a user name");
        let e = AclFile::parse("\n\ntopic read a/#/b\n").unwrap_err();
        assert!(e.to_string().starts_with("line 3: topic: \"a/#/b\""), "{e}");
        let e = AclFile::parse("pattern\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: pattern: missing topic filter");
    }

    #[test]
    fn substitution() {
        assert_eq!(substitute("a/%u/%c", Some("u"), "c").unwrap(), "a/u/c");
        assert_eq!(substitute("a/%u", None, "c"), None);
        assert_eq!(substitute("a/%u", Some("x/y"), "c"), None);
        assert_eq!(substitute("a/%c", Some("u"), "c+"), None);
        assert_eq!(substitute("a/%c", Some("u#"), "c").unwrap(), "a/c");
        assert_eq!(substitute("plain", None, "c").unwrap(), "plain");
    }
}
