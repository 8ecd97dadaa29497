//! `tern passwd` end to end: create, add, update, delete, batch and piped passwords; the
//! files it writes verify with the library.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use tern_auth::{PasswordFile, ScramHash, Verification};

fn tern(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[track_caller]
fn ok(args: &[&str], stdin: &str) {
    let out = tern(args, stdin);
    assert!(
        out.status.success(),
        "tern passwd {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path).unwrap()
}

#[test]
fn create_add_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let p = path.to_str().unwrap();

    ok(&["-c", "-b", p, "alice", "alice-pw"], "");
    ok(&["-b", p, "bob", "bob-pw"], "");
    let f = load(&path);
    assert_eq!(f.len(), 2);
    assert_eq!(f.verify("alice", b"alice-pw"), Verification::Ok);
    assert_eq!(f.verify("bob", b"bob-pw"), Verification::Ok);
    assert!(f.scram("alice", ScramHash::Sha256).is_some());
    assert!(f.scram("alice", ScramHash::Sha512).is_some());

    // Update.
    ok(&["-b", p, "alice", "changed"], "");
    let f = load(&path);
    assert_eq!(f.verify("alice", b"changed"), Verification::Ok);
    assert_eq!(f.verify("alice", b"alice-pw"), Verification::WrongPassword);
    assert_eq!(f.verify("bob", b"bob-pw"), Verification::Ok);

    // Delete.
    ok(&["-D", p, "bob"], "");
    let f = load(&path);
    assert_eq!(f.verify("bob", b"bob-pw"), Verification::UnknownUser);
    assert_eq!(f.len(), 1);
    let out = tern(&["-D", p, "bob"], "");
    assert_eq!(
        out.status.code(),
        Some(1),
        "deleting a missing user fails, like mosquitto_passwd"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in"));

    // -c starts afresh.
    ok(&["-c", "-b", p, "carol", "c"], "");
    let f = load(&path);
    assert_eq!(f.len(), 1);
    assert_eq!(f.verify("alice", b"changed"), Verification::UnknownUser);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn password_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let p = path.to_str().unwrap();
    ok(&["-c", p, "alice"], "piped pw\npiped pw\n");
    ok(&[p, "bob"], "only once\n");
    let f = load(&path);
    assert_eq!(f.verify("alice", b"piped pw"), Verification::Ok);
    assert_eq!(f.verify("bob", b"only once"), Verification::Ok);
    let out = tern(&[p, "carol"], "one\ntwo\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not match"));
    let out = tern(&[p, "carol"], "");
    assert!(!out.status.success(), "empty password refused");
    assert_eq!(load(&path).len(), 2);
}

#[test]
fn keeps_mosquitto_entries_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/tests/fixtures/mosquitto_passwd");
    let original = format!(
        "# managed by hand\n{}",
        std::fs::read_to_string(fixture).unwrap()
    );
    std::fs::write(&path, &original).unwrap();
    let p = path.to_str().unwrap();
    ok(&["-b", "--no-scram", p, "zed", "z"], "");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&original));
    assert_eq!(text.lines().count(), original.lines().count() + 1);
    let f = load(&path);
    assert_eq!(f.verify("alice", b"alice-pw"), Verification::Ok);
    assert_eq!(f.verify("zed", b"z"), Verification::Ok);
    assert!(f.scram("zed", ScramHash::Sha256).is_none());
}

#[test]
fn usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let p = path.to_str().unwrap();
    // No file without -c.
    let out = tern(&["-b", p, "u", "pw"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use -c"));
    // -b without a password, a password without -b.
    assert_eq!(tern(&["-c", "-b", p, "u"], "").status.code(), Some(2));
    assert_eq!(tern(&["-c", p, "u", "pw"], "").status.code(), Some(2));
    // -c with -D.
    assert!(!tern(&["-c", "-D", p, "u"], "").status.success());
    // A user name the format cannot hold.
    let out = tern(&["-c", "-b", p, "a:b", "pw"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid user name"));
    assert!(!path.exists());
}
