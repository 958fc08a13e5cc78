//! The director's listener: connections served on one thread per core, each with its
//! own runtime, in plain HTTP or TLS (rustls), HTTP/1 object requests by the director's
//! own loop (`http::h1`) and the rest by hyper; a header read timeout against slowloris,
//! an idle timeout of its own for keep-alive connections, and a graceful stop that
//! refuses new connections and drains (bounded).

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_util::sync::CancellationToken;

use super::App;
use super::h1::{self, Ended, Timeouts, Unread};
use super::spread::{Handed, Served, Spread};

/// The HTTP/2 connection preface: a plain-text connection starting with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain is unreadable or holds no certificate.
    #[error("TLS certificate {path}: {message}")]
    Cert {
        /// The PEM file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The private key is unreadable, malformed or readable by other users.
    #[error("TLS key {path}: {message}")]
    Key {
        /// The PEM file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS certificate {cert} with key {key}: {message}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's message.
        message: String,
    },
}

/// How the listener serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (plain HTTP without it).
    pub tls: Option<Arc<ServerConfig>>,
    /// A connection must deliver its request headers (and finish its TLS handshake)
    /// within this long of their first byte, or it is closed.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request started is closed after this long. It
    /// must outlast every client's pool idle timeout, or a client may send a request on
    /// a connection the server is closing.
    pub idle_timeout: Duration,
    /// On stop, in-flight requests get this long to finish before connections are cut.
    pub drain_timeout: Duration,
    /// Connection threads (the director runs one per core; at least one).
    pub threads: usize,
}

/// Loads a PEM certificate chain and private key into a rustls server configuration
/// (ALPN h2 and http/1.1). A key file other users can read is refused.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.to_path_buf(),
        message,
    };
    let key_err = |message: String| TlsError::Key {
        path: key.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate found".into()));
    }
    let mode = std::fs::metadata(key)
        .map_err(|e| key_err(e.to_string()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_err(format!(
            "readable by other users (mode {mode:o}); run `chmod 600 {}`",
            key.display()
        )));
    }
    // The key's bytes never reach a message: only the parser's verdict does.
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| key_err("no PEM private key found".into()))?;
    let config_err = |message: String| TlsError::Config {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One builder per protocol, so the protocol is chosen before hyper sees the bytes. The
/// HTTP/1 builder is made per connection, as its header timer watches that connection.
struct Builders {
    http2: Builder<TokioExecutor>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Builders {
    fn new(header_timeout: Duration, idle_timeout: Duration) -> Self {
        // HTTP/2 has no idle timeout here (hyper's h2 server offers none): pings drop a
        // connection whose client is gone, and GOAWAY makes a close safe for requests in
        // flight, so the HTTP/1 race does not arise (see docs/replication.md, Connections).
        let mut http2 = Builder::new(TokioExecutor::new()).http2_only();
        http2
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(header_timeout)
            .keep_alive_timeout(header_timeout);
        Self {
            http2,
            header_timeout,
            idle_timeout,
        }
    }

    /// An HTTP/1 builder whose header timeout starts at the first byte of a request,
    /// and whose wait for that first byte is the idle timeout.
    fn http1(&self, activity: Arc<Activity>) -> http1::Builder {
        let timer = HeaderTimer {
            activity,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
        };
        let read_timeout = timer.read_timeout();
        let mut http1 = http1::Builder::new();
        // hyper arms this timer when it starts waiting for a request head, idle or not.
        http1.timer(timer).header_read_timeout(read_timeout);
        http1
    }
}

/// How many reads of a connection returned data, and the connection's header timer.
struct Activity {
    reads: AtomicU64,
    /// The one tokio sleep behind every [`HeaderSleep`] of the connection. hyper arms a
    /// new header timer per request; a new tokio sleep each time would take a slot in the
    /// runtime's timer wheel and give it back, under its lock, on every request, while
    /// moving this one's deadline later is an atomic update.
    sleep: Mutex<Pin<Box<tokio::time::Sleep>>>,
}

impl Activity {
    /// No read yet, the sleep set `idle_timeout` from now.
    fn new(idle_timeout: Duration) -> Self {
        Self {
            reads: AtomicU64::new(0),
            sleep: Mutex::new(Box::pin(tokio::time::sleep(idle_timeout))),
        }
    }
}

/// hyper's HTTP/1 header-read timer: a sleep armed while waiting for a request head
/// fires `idle_timeout` after arming if no byte came, or `header_timeout` after the
/// first byte that came.
#[derive(Clone)]
struct HeaderTimer {
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl HeaderTimer {
    /// The header read timeout hyper is given (see [`Builders::http1`]).
    fn read_timeout(&self) -> Duration {
        self.header_timeout.max(self.idle_timeout)
    }
}

impl hyper::rt::Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // hyper arms this once per request on a keep-alive connection: one small
        // allocation; the tokio sleep is the connection's. hyper set `deadline` to its
        // clock's now plus `read_timeout` (the builder's header read timeout), so that
        // now is when it armed this, without reading the clock again.
        Box::pin(HeaderSleep {
            timer: self.clone(),
            armed: deadline
                .checked_sub(self.read_timeout())
                .unwrap_or_else(Instant::now),
            reads_when_armed: self.activity.reads.load(Ordering::Relaxed),
            first_byte: None,
        })
    }
}

struct HeaderSleep {
    timer: HeaderTimer,
    armed: Instant,
    reads_when_armed: u64,
    first_byte: Option<Instant>,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // hyper polls this sleep right after each read that leaves the head incomplete,
        // so the first poll that sees a new read dates the first byte. That latches the
        // deadline: a trickle of bytes cannot push it on.
        if this.first_byte.is_none()
            && this.timer.activity.reads.load(Ordering::Relaxed) > this.reads_when_armed
        {
            this.first_byte = Some(Instant::now());
        }
        let target = match this.first_byte {
            Some(first) => first + this.timer.header_timeout,
            None => this.armed + this.timer.idle_timeout,
        };
        let at = tokio::time::Instant::from_std(target);
        let mut sleep = this
            .timer
            .activity
            .sleep
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeaderSleep {}

/// A connection's stream, noting when it delivers bytes.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `cancel`, then stops accepting, lets in-flight
/// requests finish (at most `drain_timeout`) and returns. Dropping (or aborting) the
/// returned future cuts every connection at once.
///
/// Connections are served by `options.threads` connection threads, each with its own
/// single-threaded runtime, all accepting from the same socket. The kernel offers a new
/// connection to every thread waiting for one, so a busy thread (not waiting) leaves it
/// to an idle one; a thread that accepts one while it serves more connections than
/// another hands it over ([`Spread`]). A connection then lives on one thread: a redirect
/// is read, routed and answered without any handover between threads (with one runtime's
/// workers sharing every connection, they kept waking each other, which cost a fifth of
/// each redirect's CPU). Requests whose work grows with the view or with a batch of ads
/// (forwards, catch-up fetches, listings, the status page) run on the caller's runtime,
/// so a long one never holds up the redirects of its thread.
pub async fn serve(
    listener: TcpListener,
    app: App,
    options: ServeOptions,
    cancel: CancellationToken,
) {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "could not hand the listener to the connection threads");
            return;
        }
    };
    let app = app.routed_on(tokio::runtime::Handle::current());
    // Cancelled when this future is dropped: every thread then cuts its connections.
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let mut finished = Vec::new();
    let (spread, mailboxes) = Spread::new(options.threads);
    for (i, mailbox) in mailboxes.into_iter().enumerate() {
        let listener = match listener.try_clone() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "could not share the listener with another thread");
                break;
            }
        };
        let thread = Thread {
            index: i,
            spread: spread.clone(),
            mailbox,
        };
        let (app, options, cancel, stop) =
            (app.clone(), options.clone(), cancel.clone(), stop.clone());
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("skein-http-{i}"))
            .spawn(move || {
                connection_thread(listener, thread, app, options, cancel, stop);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => finished.push(finished_rx),
            Err(error) => tracing::error!(%error, "could not start a connection thread"),
        }
    }
    // Only the threads hold the socket now: once every one has stopped accepting, new
    // connections are refused at once (clients try another director).
    drop(listener);
    for thread in finished {
        let _ = thread.await;
    }
}

/// Which connection thread this is, and its share of the connections.
struct Thread {
    index: usize,
    spread: Arc<Spread>,
    /// Connections other threads accepted and handed to this one.
    mailbox: mpsc::UnboundedReceiver<Handed>,
}

impl Thread {
    /// A connection this thread accepted: kept (with its count), or handed to a thread
    /// serving fewer connections (`None`).
    fn keep_or_hand_over(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TcpStream, Served)> {
        let served = self.spread.place(self.index);
        if served.thread() == self.index {
            return Some((stream, served));
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "could not hand over a connection");
                return None;
            }
        };
        // The chosen thread stopped taking connections: serve it here after all.
        let (stream, _, served) = self
            .spread
            .hand_over((stream, peer, served), self.index)
            .err()?;
        match TcpStream::from_std(stream) {
            Ok(stream) => Some((stream, served)),
            Err(error) => {
                tracing::warn!(%error, "could not keep a connection");
                None
            }
        }
    }
}

/// One connection thread: accepts and serves until `cancel` (then drains, bounded) or
/// `stop` (then cuts its connections). Its runtime, and every task on it, is gone when
/// this returns.
fn connection_thread(
    listener: std::net::TcpListener,
    thread: Thread,
    app: App,
    options: ServeOptions,
    cancel: CancellationToken,
    stop: CancellationToken,
) {
    // The park hooks tell the thread when it slept (see `rest`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(super::rest::parking)
        .on_thread_unpark(super::rest::unparked)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start a connection thread's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "could not register the listener");
                return;
            }
        };
        tokio::select! {
            _ = serve_on(listener, thread, app, options, cancel) => {}
            _ = stop.cancelled() => {}
        }
    });
}

/// One connection thread's accept loop, then its drain (see [`serve`]).
async fn serve_on(
    listener: TcpListener,
    mut thread: Thread,
    app: App,
    options: ServeOptions,
    cancel: CancellationToken,
) {
    let shared = Arc::new(Shared {
        acceptor: options.tls.clone().map(TlsAcceptor::from),
        app,
        builders: Builders::new(options.header_timeout, options.idle_timeout),
        graceful: CancellationToken::new(),
        header_timeout: options.header_timeout,
    });
    let mut connections = JoinSet::new();
    let serve = |stream: TcpStream, peer: SocketAddr, served: Served| {
        connection(stream, peer, served, shared.clone())
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some((stream, peer, served)) = thread.mailbox.recv() => {
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        connections.spawn(serve(stream, peer, served));
                    }
                    Err(error) => tracing::warn!(%error, "could not take over a connection"),
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some((stream, served)) = thread.keep_or_hand_over(stream, peer) {
                        connections.spawn(serve(stream, peer, served));
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // Connections handed over but not yet taken are closed, like those still queued.
    drop(thread.mailbox);
    shared.graceful.cancel();
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "requests still running after the drain timeout; closing their connections"
        );
        connections.shutdown().await;
    }
}

/// What every connection of one thread shares.
struct Shared {
    acceptor: Option<TlsAcceptor>,
    app: App,
    builders: Builders,
    /// Cancelled when the thread drains: each connection then ends gracefully.
    graceful: CancellationToken,
    header_timeout: Duration,
}

/// Serves one connection; it counts against its thread (`_served`) until it ends.
async fn connection(stream: TcpStream, peer: SocketAddr, _served: Served, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    match &shared.acceptor {
        None => {
            let Ok(Some(http2)) = tokio::time::timeout(shared.header_timeout, sniff(&stream)).await
            else {
                return;
            };
            drive(stream, peer, http2, &shared).await;
        }
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            let tls = match tokio::time::timeout(shared.header_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            drive(tls, peer, http2, &shared).await;
        }
    }
}

/// Waits until the first bytes tell HTTP/1 from HTTP/2 (true); `None` if the peer closed.
async fn sniff(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A partial preface: wait for more (bounded by the caller's timeout).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves a connection whose protocol is known: HTTP/2 with hyper; HTTP/1 with the
/// object loop (`h1`) until a request it leaves to hyper.
async fn drive<I>(stream: I, peer: SocketAddr, http2: bool, shared: &Shared)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.for_peer(peer);
    if http2 {
        let conn = shared
            .builders
            .http2
            .serve_connection(TokioIo::new(stream), app);
        return until_done(conn, &shared.graceful).await;
    }
    let timeouts = Timeouts {
        header: shared.builders.header_timeout,
        idle: shared.builders.idle_timeout,
    };
    let (stream, unread) = match h1::serve(stream, &app, timeouts, &shared.graceful).await {
        Ended::Closed => return,
        Ended::HandOver(stream, unread) => (stream, unread),
    };
    let activity = Arc::new(Activity::new(shared.builders.idle_timeout));
    let io = TokioIo::new(Watched {
        inner: Unread::new(stream, unread),
        activity: activity.clone(),
    });
    let conn = shared.builders.http1(activity).serve_connection(io, app);
    until_done(conn, &shared.graceful).await;
}

/// A hyper connection that can be asked to end after its requests in flight.
trait Graceful {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E> Graceful for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::Connection::graceful_shutdown(self);
    }
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

/// Runs `conn` to its end; once `graceful` is cancelled, it ends after its requests in
/// flight.
async fn until_done<C, E>(conn: C, graceful: &CancellationToken)
where
    C: Future<Output = Result<(), E>> + Graceful,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}
