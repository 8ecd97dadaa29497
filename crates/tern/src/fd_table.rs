//! Growing the process's file-descriptor table once, at start, instead of during a connection
//! storm.
//!
//! Linux keeps a process's open files in a table that it doubles when a new descriptor does not
//! fit. When several threads share the table, each doubling first waits for an RCU grace period
//! (`expand_files` → `synchronize_rcu`), and the thread that opens the descriptor sleeps
//! meanwhile: in the broker that is `accept(2)`, so the accept loop and every connection on that
//! worker stop. On the project's VM a grace period took 4–15 ms, and the table doubles about
//! eight times on the way to 10,000 connections (64 → 16,384 slots): a fifth of the time it took
//! to open them. A single-threaded broker such as Mosquitto never waits. Grown here, before the
//! runtime starts its threads, it costs no grace period; the table is never shrunk, so it is
//! grown at most once (docs/security.md, "Open files").

use std::io;

/// Descriptors counted beyond the connections: the store's files, listeners, the admin
/// listener and the rest.
pub const SPARE: usize = 64;

/// Largest table grown ahead of need: 2^20 slots is 8 MiB of kernel memory, the most a
/// one-off start-up cost should take whatever the descriptor limit.
pub const MAX_PRESIZE: usize = 1 << 20;

/// Makes room in the descriptor table for `fds` descriptors (at most the soft RLIMIT_NOFILE and
/// [`MAX_PRESIZE`]), so that opening them later does not grow it. Returns the number of
/// descriptors now fitting without growth (a lower bound). Call it while the process has one
/// thread: that is when growing costs nothing.
pub fn presize(fds: usize) -> io::Result<usize> {
    let soft = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft)?;
    let want = fds
        .min(usize::try_from(soft).unwrap_or(usize::MAX))
        .min(MAX_PRESIZE);
    if want <= 1 {
        return Ok(want);
    }
    // Any open descriptor can be duplicated; /dev/null needs no standard stream to be open.
    let null = std::fs::File::open("/dev/null")?;
    dup_at_least(&null, want - 1)?;
    Ok(want)
}

/// Duplicates `file` onto the lowest free descriptor ≥ `min` (which grows the table to hold it)
/// and closes the duplicate at once.
#[allow(unsafe_code)]
fn dup_at_least(file: &std::fs::File, min: usize) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let min =
        libc::c_int::try_from(min).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor, which `file` keeps open for the call;
    // it returns a new descriptor that nothing else owns, or -1.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by fcntl and is owned by no one else.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of this process's descriptor table (`FDSize` in /proc/self/status).
    fn table_size() -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// One test: a second one running in parallel would open and close descriptors high in
    /// the table while this one checks that none is left there. (The other tests of this
    /// binary hold a few descriptors at most, far below the ones checked.)
    #[test]
    fn presize_grows_the_table_within_the_limit_and_leaves_no_descriptor_open() {
        let before = table_size().expect("FDSize in /proc/self/status");
        let soft = rlimit::Resource::NOFILE.get().unwrap().0 as usize;
        let want = (before * 4).min(soft);
        assert!(
            want > before,
            "soft limit {soft} leaves no room to grow past {before}"
        );
        assert_eq!(presize(want).unwrap(), want);
        assert!(
            table_size().unwrap() >= want,
            "table {:?} < {want}",
            table_size()
        );
        // The duplicate made to grow the table (at want - 1 or above) was closed.
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
            .max()
            .unwrap();
        assert!(highest < want - 1, "descriptor {highest} left open");
        // Asking for more than the soft limit grows the table to the limit, without an error.
        assert_eq!(presize(usize::MAX).unwrap(), soft.min(MAX_PRESIZE));
        assert!(table_size().unwrap() >= soft.min(MAX_PRESIZE));
    }
}
