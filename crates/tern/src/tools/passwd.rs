//! `tern passwd`: manage a password file, like `mosquitto_passwd`.
//!
//! ```text
//! tern passwd -c FILE USER            create FILE (replacing it) with USER; password prompted
//! tern passwd FILE USER               add USER or change their password
//! tern passwd -b [-c] FILE USER PASS  the same with the password on the command line
//! tern passwd -D FILE USER            delete USER
//! ```
//!
//! New entries are an Argon2id hash plus SCRAM-SHA-256/512 credentials (`--no-scram` leaves
//! those out). Other lines (other users, Mosquitto `$7$`/`$6$` entries, comments) are kept as
//! they are; the file is replaced atomically and is mode 0600. The password is read twice from
//! the terminal without echo, or, when standard input is not a terminal, from its first line
//! (a second line, if any, must repeat it). The format: `docs/security.md`.

use super::common::exit;
use anyhow::{Context, bail};
use clap::Args;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use tern_auth::PasswordFile;

/// `tern passwd` options.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Create a new password file; an existing one is overwritten.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Batch mode: the password is given on the command line.
    #[arg(short = 'b', conflicts_with = "delete")]
    pub batch: bool,
    /// Delete the user instead of adding or updating them.
    #[arg(short = 'D')]
    pub delete: bool,
    /// Do not store SCRAM credentials (the user can then log in with a plain password only).
    #[arg(long)]
    pub no_scram: bool,
    /// The password file.
    pub file: PathBuf,
    /// The user name.
    pub user: String,
    /// The password (batch mode only).
    pub password: Option<String>,
}

/// Runs `tern passwd`; the exit code.
pub fn passwd(args: &PasswdArgs) -> anyhow::Result<u8> {
    if args.batch != args.password.is_some() {
        eprintln!(
            "tern passwd: {}",
            if args.batch {
                "-b needs the password after the user name"
            } else {
                "a password on the command line needs -b (batch mode)"
            }
        );
        return Ok(exit::USAGE);
    }
    let mut file = if args.create {
        PasswordFile::new()
    } else {
        match PasswordFile::load(&args.file) {
            Ok(f) => f,
            Err(tern_auth::PasswordFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                bail!(
                    "{}: no such file (use -c to create it)",
                    args.file.display()
                )
            }
            Err(e) => return Err(e.into()),
        }
    };
    if args.delete {
        if !file.remove_user(&args.user) {
            eprintln!(
                "tern passwd: warning: user {:?} is not in {}",
                args.user,
                args.file.display()
            );
            return Ok(exit::ERROR);
        }
    } else {
        tern_auth::password_file::validate_user_name(&args.user)?;
        let password = match &args.password {
            Some(p) => p.clone(),
            None => read_password()?,
        };
        if password.is_empty() {
            bail!("the password is empty");
        }
        file.set_password(&args.user, password.as_bytes(), !args.no_scram)?;
    }
    file.save(&args.file)?;
    Ok(exit::OK)
}

/// The password from the terminal (twice, no echo) or from standard input.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again =
            rpassword::prompt_password("Reenter password: ").context("reading the password")?;
        if first != again {
            bail!("the passwords do not match");
        }
        return Ok(first);
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    let mut lines = input.lines();
    let first = lines.next().unwrap_or_default().to_owned();
    if let Some(again) = lines.next()
        && again != first
    {
        bail!("the passwords do not match");
    }
    Ok(first)
}
