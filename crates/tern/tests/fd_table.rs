//! `tern serve` grows its descriptor table for `limits.max_connections` before it starts its
//! threads (see `tern::fd_table`): a connection storm then never waits for the kernel to grow
//! the table, which with several threads costs an RCU grace period per doubling (4–15 ms on the
//! project's VM) with the accept loop blocked. The real binary, as a child process.

mod child;

use child::ChildBroker;

#[test]
fn serve_grows_the_descriptor_table_for_max_connections_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fd_table.toml");
    std::fs::write(
        &config,
        "sys_interval_secs = 0\ndurability = \"none\"\n\n[limits]\nmax_connections = 5000\n",
    )
    .unwrap();
    let mut broker =
        ChildBroker::start(&config, &dir.path().join("data"), &[], "TERN_TEST_VERBOSE");
    // The broker raises its soft open-file limit to the hard one; the table is bounded by it.
    let hard = rlimit::Resource::NOFILE.get().unwrap().1;
    let want = (5000 + tern::fd_table::SPARE as u64).min(hard);
    assert!(
        want > 1024,
        "hard open-file limit {hard} too low for this test"
    );
    // A broker that has opened a few dozen descriptors has a table of 64 unless it grew it.
    let size = broker.status_field("FDSize");
    assert!(size >= want, "descriptor table {size} < {want}");
}
