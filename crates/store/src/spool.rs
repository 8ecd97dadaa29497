//! The spool: where queues too large for the broker's memory budget are paged out.
//!
//! It is *not* durable state. The log (`crate::log`) already holds every queued message of a
//! persistent session; the spool only lets the broker drop those messages from memory and read
//! them back when their session needs them. So nothing here is fsynced, the files are removed
//! when the spool is opened (a restart rebuilds queues from the log, paging out again as it
//! goes), and a page that cannot be read back is reported as lost, never guessed at.
//!
//! A page is an opaque byte string written once and read any number of times. Pages are
//! appended to segment files (`spool-{n}.dat`, 64 MiB); a [`SpoolPage`] holds its segment
//! alive, and a segment file is removed when its last page is dropped and the writer has moved
//! on. Pages can be read from any thread (positional reads), so the store thread can copy a
//! paged-out queue into a snapshot while the broker goes on.
//!
//! Space: a segment stays on disk while any of its pages lives. [`Spool::wasted_bytes`] tells
//! how much of the spool is dead pages in live segments; the broker rewrites the pages of
//! mostly-dead segments ([`SpoolPage::segment_live_ratio`]) when that grows.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crc::crc32c;
use crate::error::StoreError;

/// Default segment size.
pub const SPOOL_SEGMENT_SIZE: u64 = 64 << 20;

/// Totals shared by the spool and its pages.
#[derive(Debug, Default)]
struct Totals {
    /// Bytes of segment files on disk (or of pages held, for the memory spool).
    file_bytes: AtomicU64,
    /// Bytes of pages alive.
    live_bytes: AtomicU64,
    pages_live: AtomicU64,
}

/// Pages written to and read from disk, and what it costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of spool files on disk.
    pub file_bytes: u64,
    /// Bytes of live pages in them.
    pub live_bytes: u64,
    pub pages_live: u64,
    pub pages_written: u64,
    pub bytes_written: u64,
    pub pages_read: u64,
    pub bytes_read: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    live_bytes: AtomicU64,
    len: AtomicU64,
    totals: Arc<Totals>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        // The last page is gone and the writer has moved on: nothing can read it any more.
        let _ = fs::remove_file(&self.path);
        self.totals
            .file_bytes
            .fetch_sub(self.len.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

#[derive(Debug)]
enum PageData {
    Memory(Box<[u8]>),
    Disk {
        segment: Arc<Segment>,
        offset: u64,
        len: u32,
        crc: u32,
    },
}

#[derive(Debug)]
struct PageInner {
    data: PageData,
    totals: Arc<Totals>,
}

impl Drop for PageInner {
    fn drop(&mut self) {
        let len = self.len() as u64;
        self.totals.live_bytes.fetch_sub(len, Ordering::Relaxed);
        self.totals.pages_live.fetch_sub(1, Ordering::Relaxed);
        match &self.data {
            PageData::Memory(_) => {
                self.totals.file_bytes.fetch_sub(len, Ordering::Relaxed);
            }
            PageData::Disk { segment, .. } => {
                segment.live_bytes.fetch_sub(len, Ordering::Relaxed);
            }
        }
    }
}

impl PageInner {
    fn len(&self) -> usize {
        match &self.data {
            PageData::Memory(b) => b.len(),
            PageData::Disk { len, .. } => *len as usize,
        }
    }
}

/// One page written to the spool. Cloning is cheap (a reference count); the page's bytes stay
/// readable while any clone lives.
#[derive(Debug, Clone)]
pub struct SpoolPage(Arc<PageInner>);

impl SpoolPage {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the page back, checking its checksum. Safe from any thread.
    pub fn read(&self) -> Result<Vec<u8>, StoreError> {
        match &self.0.data {
            PageData::Memory(b) => Ok(b.to_vec()),
            PageData::Disk {
                segment,
                offset,
                len,
                crc,
            } => {
                let mut buf = vec![0; *len as usize];
                segment
                    .file
                    .read_exact_at(&mut buf, *offset)
                    .map_err(StoreError::io("read", &segment.path))?;
                if crc32c(&buf) != *crc {
                    return Err(StoreError::Malformed("spool page checksum mismatch"));
                }
                Ok(buf)
            }
        }
    }

    /// The share of its segment's bytes that are live pages (1.0 for memory pages): a page in
    /// a mostly-dead segment is worth rewriting so the segment can go.
    pub fn segment_live_ratio(&self) -> f64 {
        match &self.0.data {
            PageData::Memory(_) => 1.0,
            PageData::Disk { segment, .. } => {
                let len = segment.len.load(Ordering::Relaxed).max(1);
                segment.live_bytes.load(Ordering::Relaxed) as f64 / len as f64
            }
        }
    }

    /// True when this page lives in the segment the spool is writing to.
    pub fn in_segment_of(&self, spool: &Spool) -> bool {
        match (&self.0.data, &spool.active) {
            (PageData::Disk { segment, .. }, Some(active)) => Arc::ptr_eq(segment, active),
            _ => false,
        }
    }
}

/// Pages out queue contents, to disk or (for tests, and when no directory is usable) to
/// compact byte strings in memory.
#[derive(Debug)]
pub struct Spool {
    dir: Option<PathBuf>,
    segment_size: u64,
    active: Option<Arc<Segment>>,
    next_number: u64,
    totals: Arc<Totals>,
    stats: SpoolStats,
}

impl Spool {
    /// A spool that keeps pages in memory (encoded, so still smaller than the queue itself).
    pub fn memory() -> Self {
        Self {
            dir: None,
            segment_size: SPOOL_SEGMENT_SIZE,
            active: None,
            next_number: 1,
            totals: Arc::default(),
            stats: SpoolStats::default(),
        }
    }

    /// A spool in `dir` (created if needed). Spool files left by an earlier run are removed:
    /// their contents are rebuilt from the durable log.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::with_segment_size(dir, SPOOL_SEGMENT_SIZE)
    }

    /// [`Spool::open`] with a segment size (small ones exercise rotation in tests).
    pub fn with_segment_size(dir: impl AsRef<Path>, segment_size: u64) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
        for entry in fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))? {
            let entry = entry.map_err(StoreError::io("read directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("spool-") && name.ends_with(".dat") {
                let path = entry.path();
                fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            }
        }
        Ok(Self {
            dir: Some(dir),
            segment_size: segment_size.max(1),
            ..Self::memory()
        })
    }

    /// Writes one page. On an I/O error nothing is kept and the caller keeps its data in
    /// memory.
    pub fn write(&mut self, data: &[u8]) -> Result<SpoolPage, StoreError> {
        let len = u32::try_from(data.len()).map_err(|_| StoreError::RecordTooLarge {
            len: data.len(),
            max: u32::MAX as usize,
        })?;
        let page = match &self.dir {
            None => {
                self.totals
                    .file_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                PageData::Memory(data.into())
            }
            Some(dir) => {
                let rotate = match &self.active {
                    None => true,
                    Some(s) => {
                        let used = s.len.load(Ordering::Relaxed);
                        used > 0 && used + u64::from(len) > self.segment_size
                    }
                };
                if rotate {
                    let path = dir.join(format!("spool-{:010}.dat", self.next_number));
                    let file = OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(StoreError::io("create", &path))?;
                    self.next_number += 1;
                    // The old segment lives on while its pages do.
                    self.active = Some(Arc::new(Segment {
                        path,
                        file,
                        live_bytes: AtomicU64::new(0),
                        len: AtomicU64::new(0),
                        totals: self.totals.clone(),
                    }));
                }
                let segment = self.active.clone().expect("a segment was just made");
                let offset = segment.len.load(Ordering::Relaxed);
                segment
                    .file
                    .write_all_at(data, offset)
                    .map_err(StoreError::io("write", &segment.path))?;
                segment.len.fetch_add(u64::from(len), Ordering::Relaxed);
                segment
                    .live_bytes
                    .fetch_add(u64::from(len), Ordering::Relaxed);
                self.totals
                    .file_bytes
                    .fetch_add(u64::from(len), Ordering::Relaxed);
                PageData::Disk {
                    segment,
                    offset,
                    len,
                    crc: crc32c(data),
                }
            }
        };
        self.totals
            .live_bytes
            .fetch_add(u64::from(len), Ordering::Relaxed);
        self.totals.pages_live.fetch_add(1, Ordering::Relaxed);
        self.stats.pages_written += 1;
        self.stats.bytes_written += u64::from(len);
        Ok(SpoolPage(Arc::new(PageInner {
            data: page,
            totals: self.totals.clone(),
        })))
    }

    /// Reads a page back (counted in the stats).
    pub fn read(&mut self, page: &SpoolPage) -> Result<Vec<u8>, StoreError> {
        let data = page.read()?;
        self.stats.pages_read += 1;
        self.stats.bytes_read += data.len() as u64;
        Ok(data)
    }

    /// Copies a page into the current segment (so a mostly-dead segment can be removed).
    pub fn rewrite(&mut self, page: &SpoolPage) -> Result<SpoolPage, StoreError> {
        let data = page.read()?;
        self.write(&data)
    }

    /// Bytes of spool segments on disk that belong to no live page.
    pub fn wasted_bytes(&self) -> u64 {
        let file = self.totals.file_bytes.load(Ordering::Relaxed);
        file.saturating_sub(self.totals.live_bytes.load(Ordering::Relaxed))
    }

    /// Counters and sizes.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            file_bytes: self.totals.file_bytes.load(Ordering::Relaxed),
            live_bytes: self.totals.live_bytes.load(Ordering::Relaxed),
            pages_live: self.totals.pages_live.load(Ordering::Relaxed),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("spool-")
            })
            .count()
    }

    #[test]
    fn pages_round_trip_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        for mut spool in [Spool::memory(), Spool::open(dir.path()).unwrap()] {
            let a = spool.write(b"first page").unwrap();
            let b = spool.write(&[7u8; 100_000]).unwrap();
            assert_eq!(spool.read(&a).unwrap(), b"first page");
            assert_eq!(spool.read(&b).unwrap(), vec![7u8; 100_000]);
            assert_eq!(spool.stats().live_bytes, 100_010);
            assert_eq!(spool.stats().pages_live, 2);
            drop(a);
            assert_eq!(spool.stats().live_bytes, 100_000);
            assert_eq!(spool.stats().pages_read, 2);
            // A clone reads from another thread while the original is dropped.
            let c = b.clone();
            drop(b);
            let t = std::thread::spawn(move || c.read().unwrap().len());
            assert_eq!(t.join().unwrap(), 100_000);
            assert_eq!(spool.stats().pages_live, 0);
        }
    }

    #[test]
    fn segments_go_when_their_pages_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::with_segment_size(dir.path(), 1000).unwrap();
        let pages: Vec<_> = (0..10).map(|_| spool.write(&[1u8; 400]).unwrap()).collect();
        // Two pages fit in a segment.
        assert_eq!(spool_files(dir.path()), 5);
        assert_eq!(spool.stats().file_bytes, 4000);
        let mut pages = pages.into_iter();
        // The first segment's pages go: its file goes.
        drop(pages.next());
        assert_eq!(spool_files(dir.path()), 5);
        assert_eq!(spool.wasted_bytes(), 400);
        drop(pages.next());
        assert_eq!(spool_files(dir.path()), 4);
        assert_eq!(spool.wasted_bytes(), 0);
        // The active segment stays while the spool writes to it.
        let rest: Vec<_> = pages.collect();
        let last = rest.last().unwrap().clone();
        assert!(last.in_segment_of(&spool));
        drop(rest);
        drop(last);
        assert_eq!(spool_files(dir.path()), 1);
        assert_eq!(spool.stats().live_bytes, 0);
        drop(spool);
        assert_eq!(spool_files(dir.path()), 0);
    }

    #[test]
    fn a_damaged_page_is_an_error_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        let page = spool.write(b"hello spool").unwrap();
        let path = dir.path().join("spool-0000000001.dat");
        let mut data = fs::read(&path).unwrap();
        data[3] ^= 0x40;
        fs::write(&path, data).unwrap();
        assert!(matches!(page.read(), Err(StoreError::Malformed(_))));
    }

    #[test]
    fn rewrite_moves_a_page_out_of_a_dead_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::with_segment_size(dir.path(), 1000).unwrap();
        let keep = spool.write(&[2u8; 300]).unwrap();
        let dead = spool.write(&[3u8; 600]).unwrap();
        let _next = spool.write(&[4u8; 500]).unwrap();
        drop(dead);
        assert!(keep.segment_live_ratio() < 0.5);
        assert!(!keep.in_segment_of(&spool));
        let moved = spool.rewrite(&keep).unwrap();
        drop(keep);
        assert_eq!(moved.read().unwrap(), vec![2u8; 300]);
        assert_eq!(spool_files(dir.path()), 1);
        assert_eq!(spool.wasted_bytes(), 0);
    }

    #[test]
    fn open_removes_stale_spool_files_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("spool-0000000009.dat"), b"old").unwrap();
        fs::write(dir.path().join("other.txt"), b"mine").unwrap();
        let _spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool_files(dir.path()), 0);
        assert!(dir.path().join("other.txt").exists());
    }
}
