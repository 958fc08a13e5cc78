//! The director's HTTP/1.1 connections: object requests (`GET` or `HEAD`, no body) are
//! read, answered and written here, without hyper's per-request machinery; the first
//! request of any other kind hands the connection, with the bytes already read, to hyper.
//!
//! Redirects are nearly every request a director answers, and for them hyper's reading,
//! dispatching and writing, with the header maps of request and response, cost nearly as
//! much CPU as the routing itself. This loop reads with `httparse` (what hyper reads
//! with) and calls the same service ([`App`]), which reads the head where it lies
//! ([`Asked`]): a request and its header map are built only for a request that must
//! wait (a presence check due). A redirect's headers are copied out as the handler wrote
//! them, HTTP/1.1 lines ([`redirect::Values`]); any other answer is written as hyper
//! would write it (`Date` included). Anything it does not take as it is (a body,
//! `Transfer-Encoding`, `Expect`, `Upgrade`, HTTP/1.0, a routed path, a malformed or
//! oversized head) goes to hyper, which answers it and the rest of the connection with
//! its own rules: one reader of bodies and errors.
//!
//! Pipelined requests are answered in order and their answers written together. Between
//! two reads, a thread that has used a millisecond of CPU time without a rest gives its
//! core up once ([`rest`]). The timeouts are hyper's as the listener sets them (see
//! `serve`): a request's head must be complete within `header_timeout` of its first
//! byte, and a connection waits at most `idle_timeout` for a request to start.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use axum::response::Response;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::asked::Asked;
use super::dispatch::{App, ObjectAnswer};
use super::{SERVER_HEADER, clients, redirect, rest};
use crate::route_class::RouteClass;

/// Headers read per request; a request with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 32;
/// A head not complete within this many bytes goes to hyper: hyper's own buffer limit
/// (its default `max_buf_size`), so hyper refuses it (431) at once. A smaller limit would
/// hand hyper an unfinished head whose header timeout hyper would start afresh.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The longest header name `http` takes: a request with a longer one goes to hyper,
/// which refuses it. (`httparse` checks names' and values' bytes as `http` does, but
/// not their length.)
const MAX_HEADER_NAME: usize = (1 << 16) - 1;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 4 * 1024;

/// How long a connection may take (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    /// From a request's first byte to the end of its head.
    pub header: Duration,
    /// From the end of an answer (or the connection's start) to the next request's first
    /// byte.
    pub idle: Duration,
}

/// How [`serve`] left the connection.
pub(super) enum Ended<I> {
    /// Closed: by the client, a timeout, a stop, `Connection: close` or an error.
    Closed,
    /// A request this loop does not answer: hyper serves the connection from here, the
    /// bytes read and not answered first.
    HandOver(I, Bytes),
}

/// Serves object requests on `io` until the connection ends or a request for hyper comes.
/// `graceful` ends it between requests.
pub(super) async fn serve<I>(
    mut io: I,
    app: &App,
    timeouts: Timeouts,
    graceful: &CancellationToken,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut clock = Clock::new(timeouts);
    let stopping = graceful.cancelled();
    tokio::pin!(stopping);
    loop {
        // Answer every complete request read so far, in order.
        loop {
            let Taken {
                len,
                answer,
                head,
                close,
            } = match take_head(&buf, app) {
                Head::Incomplete => break,
                Head::Other => return hand_over(io, &out, buf).await,
                Head::Object(taken) => taken,
            };
            buf.advance(len);
            let close = close || graceful.is_cancelled();
            match answer {
                ObjectAnswer::Redirect(values) => write_redirect(&mut out, values, close),
                ObjectAnswer::Response(future) => {
                    let response = match (*future).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    if write_response(&mut out, response, head, close)
                        .await
                        .is_err()
                    {
                        return Ended::Closed;
                    }
                }
            }
            if close {
                let _ = flush(&mut io, &mut out).await;
                let _ = io.shutdown().await;
                return Ended::Closed;
            }
        }
        if flush(&mut io, &mut out).await.is_err() {
            return Ended::Closed;
        }
        if buf.len() >= MAX_HEAD {
            return Ended::HandOver(io, buf.freeze());
        }
        // Between two reads, the answers written: the thread may owe its core a rest.
        let mut now = Instant::now();
        if rest::yield_if_held(now) {
            app.yielded();
            now = Instant::now();
        }
        let started = buf.is_empty();
        if started {
            clock.idle_from(now);
        }
        buf.reserve(READ_CHUNK);
        let read = std::future::poll_fn(|cx| {
            if let Poll::Ready(read) =
                tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf)
            {
                return Poll::Ready(Some(read));
            }
            // Nothing to read: a stop ends an idle connection (a request partly read is
            // not answered either; its client tries again, as after any closed
            // connection), and so does the timeout.
            if stopping.as_mut().poll(cx).is_ready() || clock.poll_expired(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => {
                if started {
                    clock.head_from(Instant::now());
                }
            }
            _ => return Ended::Closed,
        }
    }
}

/// Writes what is answered, then gives the connection to hyper.
async fn hand_over<I>(mut io: I, out: &[u8], unread: BytesMut) -> Ended<I>
where
    I: AsyncWrite + Unpin,
{
    if !out.is_empty() && (io.write_all(out).await.is_err() || io.flush().await.is_err()) {
        return Ended::Closed;
    }
    Ended::HandOver(io, unread.freeze())
}

async fn flush<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    Ok(())
}

/// The connection's one timer: a sleep that may fire early (then set again), so that
/// moving the deadline on, once per request, costs no timer-wheel update.
struct Clock {
    timeouts: Timeouts,
    deadline: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Clock {
    fn new(timeouts: Timeouts) -> Self {
        let deadline = Instant::now() + timeouts.idle;
        Self {
            timeouts,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        }
    }

    /// Waiting for a request to start, since `now`.
    fn idle_from(&mut self, now: Instant) {
        self.deadline = now + self.timeouts.idle;
    }

    /// A request's first bytes came at `now`: its head must be complete in time.
    fn head_from(&mut self, now: Instant) {
        self.deadline = now + self.timeouts.header;
    }

    /// Ready once the deadline has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        loop {
            if self.sleep.deadline() > deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            // It fired for an earlier deadline: set it for this one.
            self.sleep.as_mut().reset(deadline);
        }
    }
}

/// An object request at the front of the read buffer, answered.
struct Taken {
    /// The length of its head.
    len: usize,
    /// The answer, or what will give it.
    answer: ObjectAnswer,
    /// A `HEAD` request (no body in the answer).
    head: bool,
    /// Its client asked to close the connection.
    close: bool,
}

/// What the start of the read buffer holds.
enum Head {
    /// Not a whole head yet.
    Incomplete,
    /// A request for hyper (or one it refuses); nothing was taken from the buffer.
    Other,
    /// An object request, answered by `app`.
    Object(Taken),
}

/// Reads one request head from the front of `buf` and, if it is an object request,
/// answers it: the handler reads the head where it lies (no header map is built, but for
/// a request that must wait).
fn take_head(buf: &[u8], app: &App) -> Head {
    if buf.is_empty() {
        return Head::Incomplete;
    }
    let mut lines = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut lines) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        // Longer than hyper takes: it refuses it, as it would have alone.
        Ok(httparse::Status::Complete(_)) => return Head::Other,
        Ok(httparse::Status::Partial) => return Head::Incomplete,
        // Malformed, or too many headers: hyper answers it.
        Err(_) => return Head::Other,
    };
    let Some(object) = ObjectHead::of(&parsed) else {
        return Head::Other;
    };
    let asked = Asked::read(&object.method, &object.uri, parsed.headers);
    let answer = match app.answer_now(&asked) {
        Some(answer) => answer,
        // A wait: the request then needs its own copy of the head.
        None => match object.request(parsed.headers) {
            Some(request) => ObjectAnswer::Response(Box::new(app.answer_later(request))),
            None => return Head::Other,
        },
    };
    Head::Object(Taken {
        len,
        answer,
        head: object.method == Method::HEAD,
        close: object.close,
    })
}

/// The parts of an object request this loop takes: `GET` or `HEAD` of an unrouted path,
/// HTTP/1.1, no body and nothing that changes how the connection goes on, with a target
/// that `http` accepts.
struct ObjectHead {
    method: Method,
    uri: Uri,
    close: bool,
}

impl ObjectHead {
    fn of(parsed: &httparse::Request<'_, '_>) -> Option<Self> {
        let method = match parsed.method? {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            _ => return None,
        };
        if parsed.version? != 1 {
            return None;
        }
        let target = parsed.path?;
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        if !path.starts_with('/') || !RouteClass::is_unrouted(&method, path) {
            return None;
        }
        let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_bytes())).ok()?;
        let mut close = false;
        for h in parsed.headers.iter() {
            let name = h.name;
            if name.len() > MAX_HEADER_NAME {
                return None;
            }
            if name.eq_ignore_ascii_case("content-length") {
                if h.value != b"0" {
                    return None;
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("upgrade")
            {
                return None;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    }
                }
            }
        }
        Some(Self { method, uri, close })
    }

    /// The whole request, its header `lines` in a header map.
    fn request(&self, lines: &[httparse::Header<'_>]) -> Option<Request<Body>> {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = self.method.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(lines.len());
        for h in lines {
            let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
            headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
        }
        Some(request)
    }
}

/// Appends a redirect with `values` to `out` as HTTP/1.1: what the response
/// [`ObjectAnswer::Redirect`] stands for would be, written without making it.
fn write_redirect(out: &mut Vec<u8>, values: redirect::Values, close: bool) {
    // What every redirect carries after its own headers, written once.
    static SAME_FOR_ALL: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut lines = Vec::new();
        for (name, value) in &clients::CORS {
            push_header(&mut lines, name.as_str().as_bytes(), value.as_bytes());
        }
        push_header(&mut lines, b"content-length", b"0");
        push_header(&mut lines, b"server", SERVER_HEADER.as_bytes());
        lines
    });
    values.into_http1(out);
    out.extend_from_slice(&SAME_FOR_ALL);
    DATE.with(|date| push_header(out, b"date", date.now().as_bytes()));
    if close {
        push_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `response` to `out` as HTTP/1.1 (no body for `HEAD`), with `Date` and, when
/// `close`, `Connection: close`.
async fn write_response(
    out: &mut Vec<u8>,
    response: Response,
    head: bool,
    close: bool,
) -> Result<(), axum::Error> {
    let (parts, body) = response.into_parts();
    let body = if head || body.is_end_stream() {
        Bytes::new()
    } else {
        axum::body::to_bytes(body, usize::MAX).await?
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue;
        }
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        push_header(out, b"content-length", body.len().to_string().as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        DATE.with(|date| push_header(out, b"date", date.now().as_bytes()));
    }
    if close {
        push_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Ok(())
}

/// Appends one header line: `name: value` and CRLF.
pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value, written again once a second (per connection thread).
    static DATE: CachedDate = CachedDate::default();
}

#[derive(Default)]
struct CachedDate {
    text: std::cell::RefCell<(u64, String)>,
}

impl CachedDate {
    /// The current second as an HTTP date.
    fn now(&self) -> std::cell::Ref<'_, String> {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.text.borrow().0 != second || self.text.borrow().1.is_empty() {
            *self.text.borrow_mut() = (second, httpdate::fmt_http_date(now));
        }
        std::cell::Ref::map(self.text.borrow(), |(_, text)| text)
    }
}

pin_project_lite::pin_project! {
    /// A stream whose first reads return bytes already read from it: how hyper takes a
    /// connection over.
    pub(super) struct Unread<I> {
        unread: Bytes,
        #[pin]
        inner: I,
    }
}

impl<I> Unread<I> {
    /// `inner`, `unread` first.
    pub(super) fn new(inner: I, unread: Bytes) -> Self {
        Self { unread, inner }
    }
}

impl<I: AsyncRead> AsyncRead for Unread<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.unread.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Unread<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
