//! MQTT over WebSocket (MQTT 5.0 §6, 3.1.1 §6): the server side of the upgrade, and
//! [`WsStream`], which turns the message stream back into a byte stream.
//!
//! * Any request path is accepted unless one is configured (MQTT Explorer uses `/ws`, most
//!   tools `/mqtt`).
//! * Subprotocols: `mqtt` (3.1.1 and 5.0) and `mqttv3.1` (3.1). The first one the client offers
//!   that we know is chosen and echoed in `Sec-WebSocket-Protocol`; a client that offers none is
//!   accepted without one, as Mosquitto does; a client that offers only unknown ones is refused.
//! * MQTT packets may span frames and a frame may hold several packets: reads concatenate the
//!   payloads of binary frames. A text frame closes the connection ([MQTT-6.0.0-1]).
//! * Writes: one binary frame per `poll_write` call; `flush` pushes it out.
//! * A WebSocket message is handed on only once it is whole, so the connection never sees
//!   an unfinished one: [`WsSettings::message_timeout`] closes a client that has sent part of
//!   a message and not finished it in time (the transport's equivalent of an MQTT packet left
//!   unfinished).

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream as _};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// The subprotocols of MQTT over WebSocket.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Bytes read from the socket at a time by the WebSocket layer. tungstenite allocates this
/// eagerly per connection (128 KiB by default), which is too much for a broker.
const READ_BUFFER: usize = 8 * 1024;

/// WebSocket settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// The only request path accepted (e.g. `/mqtt`); `None` accepts any.
    pub path: Option<String>,
    /// Largest WebSocket message (and frame) accepted, in bytes. A message may pack several
    /// MQTT packets, so this should be at least the broker's maximum packet size.
    pub max_message_size: usize,
    /// Time a client has to finish a message once bytes of it have arrived (after the last
    /// message it finished); `None`: no limit.
    pub message_timeout: Option<Duration>,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            path: None,
            max_message_size: 2 * 1024 * 1024,
            message_timeout: None,
        }
    }
}

/// The read error of a WebSocket client that started a message and did not finish it within
/// [`WsSettings::message_timeout`] (kind `TimedOut`; told apart from the socket's own
/// time-outs by `io::Error::get_ref`).
#[derive(Debug)]
pub struct WsMessageTimeout(pub Duration);

impl std::fmt::Display for WsMessageTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a WebSocket message not finished within {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for WsMessageTimeout {}

/// The socket under the WebSocket layer, counting the bytes read from it: more than when the
/// last message was finished means one is under way.
struct Counted<S> {
    io: S,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut this.io).poll_read(cx, buf));
        this.read += (buf.filled().len() - before) as u64;
        Poll::Ready(r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Picks the subprotocol from the client's offer: `Ok(None)` when it offered none, `Err` when
/// it offered only ones we do not speak.
fn choose_subprotocol(req: &Request) -> Result<Option<String>, ()> {
    let mut offered = false;
    for value in req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            offered = true;
            if SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(p)) {
                return Ok(Some(p.to_owned()));
            }
        }
    }
    if offered { Err(()) } else { Ok(None) }
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

/// Runs the server side of the WebSocket upgrade on `io` (a TCP or TLS stream). The caller
/// bounds the time it may take.
pub async fn accept<S>(io: S, settings: &WsSettings) -> Result<WsStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut chosen = None;
    let mut path = String::new();
    #[allow(
        clippy::result_large_err,
        reason = "the signature tungstenite's Callback wants"
    )]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_owned();
        if let Some(want) = &settings.path
            && *want != path
        {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "no MQTT endpoint at this path",
            ));
        }
        let Ok(proto) = choose_subprotocol(req) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "unsupported subprotocol: use mqtt or mqttv3.1",
            ));
        };
        if let Some(p) = &proto {
            let value = HeaderValue::from_str(p).map_err(|_| {
                refuse(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Protocol header")
            })?;
            resp.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        chosen = proto;
        Ok(resp)
    };
    let max = Some(settings.max_message_size);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // We batch our own writes into one frame: hand each frame to the socket at once.
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max);
    let io = Counted { io, read: 0 };
    let inner = tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(config)).await?;
    Ok(WsStream {
        finished_at: inner.get_ref().read,
        inner,
        read: Bytes::new(),
        eof: false,
        subprotocol: chosen,
        path,
        message_timeout: settings.message_timeout,
        deadline: None,
        held_ms: Arc::default(),
        held_at_arm: 0,
    })
}

/// A WebSocket connection seen as a byte stream of MQTT packets.
pub struct WsStream<S> {
    inner: WebSocketStream<Counted<S>>,
    /// The unread rest of the last binary frame.
    read: Bytes,
    eof: bool,
    subprotocol: Option<String>,
    path: String,
    /// Bytes read from the socket when the last message was finished.
    finished_at: u64,
    message_timeout: Option<Duration>,
    /// Set while a message is under way (with a timeout): when it must be finished.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Milliseconds the connection has held reading back in all ([`WsStream::hold_clock`]):
    /// the timeout does not run meanwhile, as an MQTT packet's does not.
    held_ms: Arc<AtomicU64>,
    /// `held_ms` when `deadline` was last set.
    held_at_arm: u64,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("subprotocol", &self.subprotocol)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<S> WsStream<S> {
    /// The subprotocol agreed on (`mqtt` or `mqttv3.1`), if the client offered one.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The request path of the upgrade.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The count of milliseconds during which the connection held reading back (its client's
    /// answers piling up, say): the owner adds to it, and a message under way gets that much
    /// more time.
    pub fn hold_clock(&self) -> Arc<AtomicU64> {
        self.held_ms.clone()
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().io
    }

    /// After the WebSocket layer found no whole message: `Err` once a message under way has
    /// taken longer than the timeout (its timer is polled here, so the task wakes for it).
    fn check_unfinished(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(timeout) = self.message_timeout else {
            return Ok(());
        };
        if self.inner.get_ref().read <= self.finished_at {
            self.deadline = None;
            return Ok(());
        }
        let held = self.held_ms.load(Ordering::Relaxed);
        let deadline = self.deadline.get_or_insert_with(|| {
            self.held_at_arm = held;
            Box::pin(tokio::time::sleep(timeout))
        });
        if deadline.as_mut().poll(cx).is_ready() && held > self.held_at_arm {
            // Reading was held back meanwhile: the clock did not run for that long.
            let at = deadline.deadline() + Duration::from_millis(held - self.held_at_arm);
            self.held_at_arm = held;
            deadline.as_mut().reset(at);
        }
        if deadline.as_mut().poll(cx).is_ready() {
            self.eof = true;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                WsMessageTimeout(timeout),
            ));
        }
        Ok(())
    }

    /// Best effort: queue a close frame and try to send it, without waiting.
    fn try_close(&mut self, cx: &mut Context<'_>, code: CloseCode, reason: &'static str) {
        let mut inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(())) = inner.as_mut().poll_ready(cx) {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if inner
                .as_mut()
                .start_send(Message::Close(Some(frame)))
                .is_ok()
            {
                let _ = inner.poll_flush(cx);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.remaining());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let next = match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    this.check_unfinished(cx)?;
                    return Poll::Pending;
                }
            };
            let read = this.inner.get_ref().read;
            match &next {
                Some(Ok(Message::Ping(p) | Message::Pong(p))) => {
                    // A control frame may come in the middle of a fragmented message: it
                    // finishes only itself (a client's frame: 2 bytes of header, 4 of mask and
                    // at most 125 of payload), and a message under way stays under way.
                    this.finished_at = (this.finished_at + 6 + p.len() as u64).min(read);
                }
                Some(Ok(_)) => {
                    // A message is finished: none is under way now, but for what the socket
                    // read of the next one with it.
                    this.finished_at = read;
                    this.deadline = None;
                }
                _ => {}
            }
            match next {
                Some(Ok(Message::Binary(data))) => this.read = data,
                Some(Ok(Message::Text(_))) => {
                    // [MQTT-6.0.0-1] MQTT travels in binary frames only.
                    this.try_close(cx, CloseCode::Unsupported, "MQTT needs binary frames");
                    this.eof = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on an MQTT WebSocket",
                    )));
                }
                // Pings are answered by tungstenite; pongs mean nothing to us.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // tungstenite answers the close; then the stream ends.
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => this.eof = true,
                Some(Err(e)) => {
                    this.eof = true;
                    return Poll::Ready(Err(to_io(e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut inner = Pin::new(&mut self.get_mut().inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(to_io)?;
        inner
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(to_io)
    }
}
