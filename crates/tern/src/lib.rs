//! The tern broker binary's library: configuration, the tokio wiring around the sans-IO core,
//! and the subcommands.
//!
//! Module map:
//! - [`config`]: the TOML configuration, its defaults, validation and command-line overrides.
//! - [`server`]: binds the listeners, runs the accept loops and the driver; graceful shutdown.
//! - `driver`: the task that owns the [`tern_core::Broker`] and carries out its actions.
//! - `connection`: one connection's task (reads, decodes, writes); `outbox`: what the driver
//!   queued for it; `check_ahead`: a CONNECT's password checked there, not on the core.
//! - [`admin`]: the admin HTTP listener (metrics, health, JSON API, dashboard), `$SYS`, the
//!   connection event log; [`metrics`]: counters shared by the I/O layer and the driver.
//! - [`cli`]: the command line (`tern serve`, `tern check-config`, ...); [`fd_table`]: the
//!   descriptor table grown once at start (connection storms would wait on its growth).
//! - [`tools`]: `tern pub`, `tern sub`, `tern rr`.
//! - [`bench`]: `tern bench`, the load generator.

pub mod admin;
pub mod bench;
mod check_ahead;
pub mod cli;
pub mod config;
mod connection;
mod driver;
pub mod fd_table;
pub mod metrics;
mod outbox;
mod persistence;

/// Gives heap memory freed by a large one-off job (the restore at start-up) back to the
/// operating system. glibc's allocator keeps freed memory in its arenas otherwise, so the
/// restore's peak would stay resident for the life of the process.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the allocator's arenas to the kernel;
    // it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
pub mod server;
pub mod tools;
