//! The director's HTTP API: one router built from per-group routers.

mod clients;
mod error;
mod health;
mod json;
mod observe;
mod peers;
mod redirect;
pub mod serve;
mod services;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::identity::Identity;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::peers::PeerSet;
use crate::replication::Replicator;
use crate::routing::signals::Signals;

pub use error::ApiError;

/// `Server` header: Pelican's client treats a 404 without `pelican/` in `Server` as a
/// proxy error and retries, so Skein says it speaks Pelican's director protocol.
pub const SERVER_HEADER: &str = concat!("pelican/7 skein/", env!("CARGO_PKG_VERSION"));

/// Everything handlers need.
pub struct AppState {
    /// This director's name.
    pub name: String,
    /// This director's advertise URL.
    pub advertise_url: String,
    /// Ingest and forwarding.
    pub replicator: Arc<Replicator>,
    /// The view.
    pub ledger: Arc<Ledger>,
    /// Known directors.
    pub peers: Arc<PeerSet>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// This director's identity.
    pub identity: Arc<Identity>,
    /// Health and presence of servers, as the probes see them (read lock-free).
    pub signals: Arc<dyn Signals>,
    /// True once the store is open and the view loaded.
    pub ready: AtomicBool,
    /// `log.access`: one log line per request (changes live on reload).
    pub access_log: AtomicBool,
}

/// Request limits applied to every route.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Requests in flight before shedding with 503.
    pub max_concurrent: usize,
}

/// The full router with limits applied.
pub fn router(state: Arc<AppState>, limits: HttpLimits) -> Router {
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            overloaded_or_timeout(error)
        }))
        .load_shed()
        // Global: axum applies a layer to each route separately, and a plain
        // concurrency limit would then be per route.
        .layer(GlobalConcurrencyLimitLayer::new(limits.max_concurrent));
    // Only the routes that read a body can be slow on the client's side; a redirect never
    // waits, so it does not pay for a timer. (Headers are timed by the listener.)
    let timed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            overloaded_or_timeout(error)
        }))
        .timeout(limits.request_timeout);
    let with_bodies = Router::new()
        .merge(services::router())
        .merge(peers::router())
        .layer(timed);
    Router::new()
        .merge(with_bodies)
        .merge(health::router())
        .merge(clients::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(shed)
        .layer(SetResponseHeaderLayer::overriding(
            header::SERVER,
            HeaderValue::from_static(SERVER_HEADER),
        ))
}

fn overloaded_or_timeout(error: tower::BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long",
        )
        .into_response();
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the director is at its concurrency limit; retry shortly",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    ApiError::internal(error).into_response()
}

#[cfg(test)]
mod tests;
