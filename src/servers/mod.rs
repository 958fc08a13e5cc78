//! Small real origin and cache servers for the demo federation and tests.
//!
//! Both take a bound listener and a cancellation token (`origin::start`,
//! `cache::start`) and return a [`ServerHandle`]; `run` binds `listen` and waits.
//! Both advertise themselves in the background and withdraw their ad (status
//! `shutting down`) before they stop serving.

pub mod cache;
mod fetch;
pub mod files;
pub mod origin;
pub mod webdav;

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::advertiser::{AdvertiseError, Advertiser};
use crate::config::{NamespaceConfig, ServiceConfig};
use crate::http::{ApiError, SERVER_HEADER};

/// The path directors probe by default (`health.path`); Pelican's servers answer it too.
pub const HEALTH_PATH: &str = "/api/v1.0/health";

/// The answer to a health probe: 200 `{"status":"ok"}` if the storage is usable, else
/// 503 with what is wrong (so directors route elsewhere until it is fixed).
fn health_answer(storage: Result<(), String>) -> Response {
    match storage {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ok" })).into_response(),
        Err(detail) => {
            tracing::warn!(%detail, "health probe: storage unusable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", detail).into_response()
        }
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A config key this server needs is missing or wrong.
    #[error("config: {0}")]
    Config(String),
    /// The key could not be loaded or the client built.
    #[error(transparent)]
    Advertise(#[from] AdvertiseError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// Binding, the served directory, or serving failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Task(String),
}

impl ServerError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// A running origin or cache.
pub struct ServerHandle {
    addr: SocketAddr,
    cancel: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    advertiser: JoinHandle<()>,
}

impl ServerHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` + the bound address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Withdraws the ad, stops accepting, drains requests.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.cancel.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after its cancellation token fires).
    pub async fn wait(self) -> Result<(), ServerError> {
        let advertised = self.advertiser.await;
        let served = self.server.await;
        advertised.map_err(|e| ServerError::Task(e.to_string()))?;
        served
            .map_err(|e| ServerError::Task(e.to_string()))?
            .map_err(ServerError::io("serving HTTP"))
    }
}

/// Serves `app` on `listener` and advertises `config` until `cancel`; the ad is
/// withdrawn before the listener closes.
async fn launch(
    config: ServiceConfig,
    app: Router,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<ServerHandle, ServerError> {
    let addr = listener
        .local_addr()
        .map_err(ServerError::io("reading the listener address"))?;
    let issuer = config_issuer(&config);
    let advertiser = Advertiser::new(config)?;
    let app = match (issuer, advertiser.public_jwks()) {
        (Some(issuer), Some(jwks)) => issuer_routes(app, issuer, jwks),
        _ => app,
    };
    let cancel = cancel.child_token();
    let withdrawn = CancellationToken::new();
    let advertiser = {
        let cancel = cancel.clone();
        let withdrawn = withdrawn.clone();
        tokio::spawn(async move {
            advertiser.run(cancel).await;
            withdrawn.cancel();
        })
    };
    let app = app.layer(SetResponseHeaderLayer::overriding(
        header::SERVER,
        HeaderValue::from_static(SERVER_HEADER),
    ));
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(withdrawn.cancelled_owned())
            .await
    });
    tracing::info!(%addr, "serving");
    Ok(ServerHandle {
        addr,
        cancel,
        server,
        advertiser,
    })
}

fn config_issuer(config: &ServiceConfig) -> Option<String> {
    (config.protocol == crate::config::Protocol::Pelican).then(|| config.issuer_url.clone())
}

/// Serves the server's issuer metadata as a Pelican server does, so directors and
/// registries can fetch its advertise-token keys: `/.well-known/openid-configuration`
/// (`issuer`, `jwks_uri`) and `/.well-known/issuer.jwks`.
fn issuer_routes(app: Router, issuer: String, jwks: serde_json::Value) -> Router {
    use axum::Json;
    use axum::routing::get;
    let metadata = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/issuer.jwks"),
    });
    app.route(
        "/.well-known/openid-configuration",
        get(move || {
            let metadata = metadata.clone();
            async move { Json(metadata) }
        }),
    )
    .route(
        "/.well-known/issuer.jwks",
        get(move || {
            let jwks = jwks.clone();
            async move { Json(jwks) }
        }),
    )
}

/// Binds `config.listen`, starts with `start`, and waits until `cancel`.
async fn run_with<F, Fut>(
    config: ServiceConfig,
    cancel: CancellationToken,
    start: F,
) -> Result<(), ServerError>
where
    F: FnOnce(ServiceConfig, TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<ServerHandle, ServerError>>,
{
    let listen = config
        .listen
        .ok_or_else(|| ServerError::Config("listen: missing (e.g. 0.0.0.0:9001)".into()))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(ServerError::io(format!("binding {listen}")))?;
    start(config, listener, cancel).await?.wait().await
}

/// An error as a response; a 401 also says how to authenticate (`WWW-Authenticate`).
fn error_response(error: ApiError) -> axum::response::Response {
    use axum::response::IntoResponse;
    let unauthorized = error.status() == axum::http::StatusCode::UNAUTHORIZED;
    let mut response = error.into_response();
    if unauthorized {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The longest configured namespace containing `path`.
fn namespace_of<'a>(namespaces: &'a [NamespaceConfig], path: &str) -> Option<&'a NamespaceConfig> {
    namespaces
        .iter()
        .filter(|ns| crate::paths::is_under_prefix(path, &ns.path))
        .max_by_key(|ns| ns.path.len())
}
