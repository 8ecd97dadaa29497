//! Splitting a [`Stream`] into a read half and a write half (the connection's task polls both).
//! Plain TCP splits without a lock and keeps `readable()`/`try_read` (so an idle connection can
//! wait for data holding no buffer); the other transports go through
//! `tokio::io::split` (TLS and WebSocket state is shared by both directions).
//!
//! [`ReadHalf::read_with`] reads into a per-thread buffer and hands the bytes to a closure, so
//! a connection waiting for data holds no read buffer of its own, whatever the transport.

use crate::stream::Stream;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Shared(tokio::io::ReadHalf<Stream>),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Shared(tokio::io::WriteHalf<Stream>),
}

impl Stream {
    /// Splits the stream; see the [module](self) documentation.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            other => {
                let (r, w) = tokio::io::split(other);
                (ReadHalf::Shared(r), WriteHalf::Shared(w))
            }
        }
    }
}

/// Bytes read at most per [`ReadHalf::read_with`] call.
pub const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The per-thread buffer of [`ReadHalf::read_with`].
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

impl ReadHalf {
    /// Waits for data, reads what is there (at most [`READ_CHUNK`] bytes) into a buffer of the
    /// current thread and passes it to `sink` (e.g. `|b| buf.extend_from_slice(b)`). Returns
    /// the number of bytes read; 0 is end of stream. Cancel-safe: bytes are taken from the
    /// stream only in the poll that hands them to `sink`, so it can sit in a `select!`.
    pub async fn read_with(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_with(cx, &mut sink)).await
    }

    /// [`read_with`](Self::read_with) as a poll function, for a task that polls its sources by
    /// hand: `sink` is called when the read completes, with the bytes read (empty at the end of
    /// the stream).
    pub fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        sink: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut *self).poll_read(cx, &mut rb))?;
            sink(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        })
    }

    /// The TCP read half, for plain TCP streams (for `readable()`/`try_read`).
    pub fn as_tcp(&self) -> Option<&OwnedReadHalf> {
        match self {
            ReadHalf::Tcp(r) => Some(r),
            ReadHalf::Shared(_) => None,
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Shared(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Shared(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Shared(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(w) => w.is_write_vectored(),
            WriteHalf::Shared(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Shared(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Shared(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
