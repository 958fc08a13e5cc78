//! The director's listener: plain HTTP or TLS (rustls), a header read timeout against
//! slowloris, and a graceful stop that refuses new connections and drains (bounded).
//! Every request carries its TCP peer as axum's `ConnectInfo<SocketAddr>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_util::sync::CancellationToken;

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
    /// within this long, or it is closed.
    pub header_timeout: Duration,
    /// On stop, in-flight requests get this long to finish before connections are cut.
    pub drain_timeout: Duration,
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

/// One builder per protocol, so the protocol is chosen before hyper sees the bytes.
struct Builders {
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_timeout: Duration) -> Self {
        let mut http1 = Builder::new(TokioExecutor::new()).http1_only();
        http1
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let mut http2 = Builder::new(TokioExecutor::new()).http2_only();
        http2
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(header_timeout)
            .keep_alive_timeout(header_timeout);
        Self { http1, http2 }
    }
}

/// Serves `app` on `listener` until `cancel`, then stops accepting, lets in-flight
/// requests finish (at most `drain_timeout`) and returns. Dropping (or aborting) the
/// returned future cuts every connection at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    cancel: CancellationToken,
) {
    let builders = Arc::new(Builders::new(options.header_timeout));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let graceful = CancellationToken::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(
                        stream,
                        acceptor.clone(),
                        WithPeer { app: app.clone(), peer },
                        builders.clone(),
                        graceful.clone(),
                        options.header_timeout,
                    ));
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
    graceful.cancel();
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

/// The router, with each request's extensions given the connection's peer address.
#[derive(Clone)]
struct WithPeer {
    app: Router,
    peer: SocketAddr,
}

impl<B> tower::Service<Request<B>> for WithPeer
where
    Router: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request<B>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        tower::Service::<Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.app.call(request)
    }
}

async fn connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    app: WithPeer,
    builders: Arc<Builders>,
    graceful: CancellationToken,
    header_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        None => {
            let Ok(Some(http2)) = tokio::time::timeout(header_timeout, sniff(&stream)).await else {
                return;
            };
            let builder = if http2 {
                &builders.http2
            } else {
                &builders.http1
            };
            drive(TokioIo::new(stream), builder, app, &graceful).await;
        }
        Some(acceptor) => {
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
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
            let builder = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                &builders.http2
            } else {
                &builders.http1
            };
            drive(TokioIo::new(tls), builder, app, &graceful).await;
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

async fn drive<I>(
    io: TokioIo<I>,
    builder: &Builder<TokioExecutor>,
    app: WithPeer,
    graceful: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
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
