//! The password file: `user:hash` lines, Mosquitto's format extended with Argon2id and SCRAM.
//!
//! ```text
//! # comments and blank lines are kept as they are
//! alice:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//! alice:$scram-sha-256$4096$<salt>$<StoredKey>$<ServerKey>
//! alice:$scram-sha-512$4096$<salt>$<StoredKey>$<ServerKey>
//! bob:$7$101$<salt>$<hash>          (written by mosquitto_passwd 2.x)
//! carol:$6$<salt>$<hash>            (written by mosquitto_passwd 1.x)
//! ```
//!
//! A user has at most one password line (any format of [`PasswordHash`]) and at most one SCRAM
//! line per mechanism ([`ScramCredential`]); a second one is an error naming both lines, as is
//! any line that is not understood. The user name is everything before the first `:`.
//!
//! The file is kept line by line so that `tern passwd` can change one user and write the rest
//! back untouched ([`PasswordFile::set_password`], [`PasswordFile::remove_user`],
//! [`PasswordFile::save`]).

use crate::hash::{HashError, PasswordHash};
use crate::scram_credential::{ScramCredential, ScramHash};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A password file that could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
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
    #[error("invalid user name {0:?}: {1}")]
    BadUserName(String, &'static str),
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Ok,
    WrongPassword,
    UnknownUser,
}

/// What the file holds for one user.
#[derive(Debug, Clone, Default)]
pub struct UserEntry {
    pub password: Option<PasswordHash>,
    pub scram: Vec<ScramCredential>,
}

#[derive(Debug, Clone)]
enum Line {
    /// A comment or blank line, kept verbatim.
    Text(String),
    /// A `user:...` line: its user and its text as read (or as written by us).
    Entry { user: String, text: String },
}

/// A parsed password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    lines: Vec<Line>,
    users: HashMap<String, UserEntry>,
}

impl PasswordFile {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            PasswordFileError::Parse { line, message, .. } => PasswordFileError::Parse {
                path: Some(path.to_owned()),
                line,
                message,
            },
            other => other,
        })
    }

    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<Self, PasswordFileError> {
        let mut file = PasswordFile::default();
        // (user, what) -> line number, for duplicate detection.
        let mut seen: HashMap<(String, &'static str), usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let err = |message: String| PasswordFileError::Parse {
                path: None,
                line: n,
                message,
            };
            let line = raw.trim_end();
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                file.lines.push(Line::Text(raw.to_owned()));
                continue;
            }
            let Some((user, value)) = line.split_once(':') else {
                return Err(err(
                    "no ':' between the user name and the password hash".into()
                ));
            };
            if user.is_empty() {
                return Err(err("empty user name".into()));
            }
            let entry = file.users.entry(user.to_owned()).or_default();
            let what = if let Some(scram) = ScramCredential::parse(value) {
                let scram = scram.map_err(|e| err(format!("user {user:?}: {e}")))?;
                let what = scram.hash.mechanism();
                entry.scram.push(scram);
                what
            } else {
                let hash = PasswordHash::parse(value).map_err(|e| match e {
                    HashError::UnknownFormat => err(format!(
                        "user {user:?}: unknown password hash format (expected $argon2id$, \
                         $7$, $6$ or $scram-sha-256$/$scram-sha-512$; a plain-text password \
                         must be hashed first with `tern passwd`)"
                    )),
                    e => err(format!("user {user:?}: {e}")),
                })?;
                entry.password = Some(hash);
                "password"
            };
            if let Some(first) = seen.insert((user.to_owned(), what), n) {
                return Err(err(format!(
                    "user {user:?} has a second {what} entry (the first is on line {first})"
                )));
            }
            file.lines.push(Line::Entry {
                user: user.to_owned(),
                text: line.to_owned(),
            });
        }
        Ok(file)
    }

    /// Checks `password` for `user`: against the password hash, or (for a user with SCRAM
    /// credentials only) against a SCRAM credential. An unknown user costs one Argon2
    /// verification too, so that response times do not tell which users exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> Verification {
        let Some(entry) = self.users.get(user) else {
            let _ = dummy_hash().verify(password);
            return Verification::UnknownUser;
        };
        let ok = match (&entry.password, entry.scram.first()) {
            (Some(hash), _) => hash.verify(password),
            (None, Some(scram)) => scram.verify_password(password),
            (None, None) => false,
        };
        if ok {
            Verification::Ok
        } else {
            Verification::WrongPassword
        }
    }

    /// What the file holds for `user`.
    pub fn user(&self, user: &str) -> Option<&UserEntry> {
        self.users.get(user)
    }

    /// `user`'s SCRAM credential for `hash`.
    pub fn scram(&self, user: &str, hash: ScramHash) -> Option<&ScramCredential> {
        self.users.get(user)?.scram.iter().find(|c| c.hash == hash)
    }

    /// Whether `user` is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The users, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds `user` or replaces every line of theirs: an Argon2id hash of `password`, plus
    /// SCRAM-SHA-256 and SCRAM-SHA-512 credentials when `with_scram`. The new lines take the
    /// place of the user's first line; other lines are untouched.
    pub fn set_password(
        &mut self,
        user: &str,
        password: &[u8],
        with_scram: bool,
    ) -> Result<(), PasswordFileError> {
        validate_user_name(user)?;
        let hash = PasswordHash::new_argon2id(password).map_err(|e| PasswordFileError::Parse {
            path: None,
            line: 0,
            message: e.to_string(),
        })?;
        let mut entry = UserEntry {
            password: Some(hash),
            scram: Vec::new(),
        };
        if with_scram {
            entry.scram = ScramHash::ALL
                .iter()
                .map(|h| ScramCredential::new(*h, password))
                .collect();
        }
        let mut new_lines = vec![Line::Entry {
            user: user.to_owned(),
            text: format!(
                "{user}:{}",
                entry
                    .password
                    .as_ref()
                    .map(PasswordHash::encode)
                    .unwrap_or_default()
            ),
        }];
        new_lines.extend(entry.scram.iter().map(|c| Line::Entry {
            user: user.to_owned(),
            text: format!("{user}:{}", c.encode()),
        }));
        let at = self
            .lines
            .iter()
            .position(|l| matches!(l, Line::Entry { user: u, .. } if u == user))
            .unwrap_or(self.lines.len());
        self.lines
            .retain(|l| !matches!(l, Line::Entry { user: u, .. } if u == user));
        let at = at.min(self.lines.len());
        self.lines.splice(at..at, new_lines);
        self.users.insert(user.to_owned(), entry);
        Ok(())
    }

    /// Removes every line of `user`; whether there was one.
    pub fn remove_user(&mut self, user: &str) -> bool {
        self.lines
            .retain(|l| !matches!(l, Line::Entry { user: u, .. } if u == user));
        self.users.remove(user).is_some()
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Text(t) | Line::Entry { text: t, .. } => out.push_str(t),
            }
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically: a temporary file in the same directory (mode 0600 on Unix),
    /// flushed to disk, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), PasswordFileError> {
        let io = |source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut f = options.open(&tmp)?;
            #[cfg(unix)]
            {
                // An old temporary file may have had another mode.
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // Make the rename itself durable.
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

/// Checks a user name for `set_password`: what the file format and Mosquitto can represent.
pub fn validate_user_name(user: &str) -> Result<(), PasswordFileError> {
    let bad = |why| Err(PasswordFileError::BadUserName(user.to_owned(), why));
    if user.is_empty() {
        return bad("it is empty");
    }
    if user.contains(':') {
        return bad("it contains ':'");
    }
    if user.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if user.starts_with('#') {
        return bad("it starts with '#' (a comment)");
    }
    if user.trim() != user {
        return bad("it starts or ends with white space");
    }
    Ok(())
}

/// A fixed Argon2id hash verified against for unknown users.
fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    DUMMY.get_or_init(|| {
        PasswordHash::new_argon2id(b"tern: no such user")
            .expect("argon2 hashing with fixed parameters cannot fail")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOSQ_7: &str = "$7$101$STempyK0POg9y0tt$/IqJw3VtZ16Q/MhpE8ghkQonDNM51di5IOfwEK+iwI2oDel19kZx17ZGe4ddcBsJycnZ6ipR2Qn052UsiIm4UQ==";

    #[test]
    fn parse_comments_blank_and_entries() {
        let text = format!("# users\n\nuser:{MOSQ_7}\n   # indented comment\n");
        let f = PasswordFile::parse(&text).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f.verify("user", b"pass"), Verification::Ok);
        assert_eq!(f.verify("user", b"nope"), Verification::WrongPassword);
        assert_eq!(f.verify("other", b"pass"), Verification::UnknownUser);
        assert_eq!(f.render(), text);
    }

    #[test]
    fn crlf_lines() {
        let f = PasswordFile::parse(&format!("user:{MOSQ_7}\r\n")).unwrap();
        assert_eq!(f.verify("user", b"pass"), Verification::Ok);
    }

    #[test]
    fn errors_name_the_line() {
        let e = PasswordFile::parse("# c\nalice\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: no ':' between the user name and the password hash"
        );
        let e = PasswordFile::parse("\nbob:secret\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 2: user \"bob\": unknown password hash"),
            "{e}"
        );
        let e = PasswordFile::parse(":$6$a$b\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: empty user name");
        let e = PasswordFile::parse(&format!("u:{MOSQ_7}\nv:{MOSQ_7}\nu:{MOSQ_7}\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: user \"u\" has a second password entry (the first is on line 1)"
        );
    }

    #[test]
    fn load_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "x:y\n").unwrap();
        let e = PasswordFile::load(&p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: line 1:", p.display())),
            "{e}"
        );
        let e = PasswordFile::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, PasswordFileError::Io { .. }));
    }

    #[test]
    fn set_replaces_in_place_and_keeps_other_lines() {
        let text = format!("# head\na:{MOSQ_7}\nuser:{MOSQ_7}\n# tail\n");
        let mut f = PasswordFile::parse(&text).unwrap();
        f.set_password("a", b"new", true).unwrap();
        let out = f.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# head");
        assert!(lines[1].starts_with("a:$argon2id$"));
        assert!(lines[2].starts_with("a:$scram-sha-256$"));
        assert!(lines[3].starts_with("a:$scram-sha-512$"));
        assert_eq!(lines[4], format!("user:{MOSQ_7}"));
        assert_eq!(lines[5], "# tail");
        let again = PasswordFile::parse(&out).unwrap();
        assert_eq!(again.verify("a", b"new"), Verification::Ok);
        assert_eq!(again.verify("a", b"pass"), Verification::WrongPassword);
        assert!(again.scram("a", ScramHash::Sha512).is_some());
        let mut again = again;
        assert!(again.remove_user("a"));
        assert!(!again.remove_user("a"));
        assert!(!again.render().contains("a:"));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn scram_only_user_verifies_plain_password() {
        let c = ScramCredential::new(ScramHash::Sha256, b"pw");
        let f = PasswordFile::parse(&format!("s:{}\n", c.encode())).unwrap();
        assert_eq!(f.verify("s", b"pw"), Verification::Ok);
        assert_eq!(f.verify("s", b"px"), Verification::WrongPassword);
    }

    #[test]
    fn user_names() {
        let mut f = PasswordFile::new();
        for bad in ["", "a:b", "a\nb", "#x", " x", "x "] {
            assert!(f.set_password(bad, b"p", false).is_err(), "{bad:?}");
        }
        f.set_password("ünïcode user", b"p", false).unwrap();
        assert_eq!(f.render().lines().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn save_is_0600_and_atomic() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "# old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = PasswordFile::load(&p).unwrap();
        f.set_password("u", b"p", false).unwrap();
        f.save(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = PasswordFile::load(&p).unwrap();
        assert_eq!(back.verify("u", b"p"), Verification::Ok);
        assert!(back.render().starts_with("# old\n"));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
