//! The client tools: `tern pub`, `tern sub`, `tern rr`, modelled on mosquitto_pub, mosquitto_sub
//! and mosquitto_rr, on the shared [`tern_client::Client`]. They work with any MQTT broker.
//!
//! Module map:
//! - `common`: connection options, `-D` properties, output formats (`-v`, `-F`, `--json`),
//!   `--debug` tracing, one-line errors and the exit codes ([`exit`]).
//! - `pub_cmd`, `sub_cmd`, `rr_cmd`: one file per tool.
//! - `passwd`: `tern passwd`, the password file editor (like mosquitto_passwd; no network).
//!
//! Usage and exit codes: `docs/tools.md`.

mod common;
mod passwd;
mod pub_cmd;
mod rr_cmd;
mod sub_cmd;

pub use common::exit;
pub use passwd::{PasswdArgs, passwd};
pub use pub_cmd::{PubArgs, publish};
pub use rr_cmd::{RrArgs, request_response};
pub use sub_cmd::{SubArgs, subscribe};
