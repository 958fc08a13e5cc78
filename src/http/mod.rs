//! The director's HTTP API: one router built from per-group routers.

mod asked;
pub mod budgets;
mod catalog;
mod clients;
mod dispatch;
mod error;
mod h1;
mod health;
mod json;
mod observe;
mod peers;
mod redirect;
mod rest;
pub mod serve;
mod servers;
mod services;
mod spread;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::identity::Identity;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::peers::PeerSet;
use crate::probe::Probes;
use crate::replication::Replicator;
use crate::routing::signals::Signals;

pub use crate::route_class::RouteClass;
pub use budgets::BudgetLimits;
pub use dispatch::App;
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
    /// The probes behind `signals`: presence checks, the health board, their metrics.
    pub probes: Arc<Probes>,
    /// Client and server locations, and the sort method in force.
    pub geo: Arc<crate::geo::Geo>,
    /// True once the store is open and the view loaded.
    pub ready: AtomicBool,
    /// Verifies and attests Pelican servers' own advertisements.
    pub pelican: Arc<crate::pelican::Gate>,
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
    /// Requests in flight per route class before shedding with 503.
    pub budgets: BudgetLimits,
}

/// The director's HTTP service: every route, with limits applied.
pub fn router(state: Arc<AppState>, limits: HttpLimits) -> App {
    // Each route class has its own budget: ingest, however slow its bodies, never takes
    // a redirect's place.
    let budgets = budgets::Budgets::new(limits.budgets);
    // Only the routes that read a body can be slow on the client's side; a redirect waits
    // at most for a presence check, which has its own timeout (`presence.timeout`), so it
    // does not pay for a timer. (Headers are timed by the listener.)
    let timed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            timed_out(error)
        }))
        .timeout(limits.request_timeout);
    let with_bodies = Router::new()
        .merge(services::router())
        .merge(peers::router())
        .layer(timed);
    let routes = Router::new()
        .merge(with_bodies)
        .merge(health::router())
        .merge(status::router())
        .merge(catalog::router())
        .merge(servers::router())
        .merge(clients::router())
        .method_not_allowed_fallback(clients::method_not_allowed)
        .with_state(state.clone());
    // The layers every request passes wrap the routes as one plain service: layered on
    // the router itself, each would be boxed per route and copied on every request.
    // Requests for no route skip the router (`dispatch`) but pass the same budgets.
    let observe = observe::ObserveLayer::new(budgets, state.clone());
    let stack = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::SERVER,
            HeaderValue::from_static(SERVER_HEADER),
        ))
        .layer(observe.clone())
        .layer(DefaultBodyLimit::max(limits.max_body))
        .service(routes);
    App::new(state, &observe, Router::new().fallback_service(stack))
}

fn timed_out(error: tower::BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long",
        )
        .into_response();
    }
    ApiError::internal(error).into_response()
}

#[cfg(test)]
mod tests;
