//! Operations: liveness, readiness and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::ledger::StoreState;
use crate::metrics::Gauges;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1.0/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Why the director is not fully ready, if it is not: `(status, detail)`.
pub(super) fn not_ready(state: &AppState) -> Option<(&'static str, String)> {
    if !state.ready.load(Ordering::SeqCst) {
        return Some(("not_ready", "the director is stopping".into()));
    }
    let store = state.ledger.store();
    if let Some(error) = store.write_failing() {
        return Some((
            "write_failing",
            format!("the store cannot commit, so ads are refused: {error}"),
        ));
    }
    let recovery = state.ledger.recovery();
    let damage = recovery.damage().map_or_else(String::new, |d| {
        format!(
            "store found damaged at start ({}); moved to {}; {} ads survived",
            d.what,
            d.moved_to.display(),
            d.survivors
        )
    });
    match recovery.state() {
        StoreState::Sound => None,
        StoreState::Refilling => Some((
            "refilling",
            format!("{damage}; catching up from peer directors"),
        )),
        StoreState::Degraded => Some((
            "degraded",
            format!("{damage}; no peer director could refill it, serving what survived"),
        )),
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ads = state.ledger.view().len();
    match not_ready(&state) {
        None => Json(json!({ "status": "ready", "ads": ads })).into_response(),
        Some((status, detail)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": status, "status": status, "detail": detail, "ads": ads })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let live = view.ads().filter(|a| a.expires_at > now);
    let (mut skein, mut pelican) = (0, 0);
    for ad in live {
        match ad.provenance() {
            crate::ad::Provenance::Skein => skein += 1,
            crate::ad::Provenance::Pelican => pelican += 1,
        }
    }
    let registry_requests = state
        .ledger
        .trust()
        .pelican()
        .registry()
        .map_or(0, |r| r.requests());
    let mut text = state.metrics.render(Gauges {
        ads_live: skein + pelican,
        ads_live_pelican: pelican,
        peers_known: state.peers.count_with_self(),
        registry_requests,
        store_degraded: state.ledger.recovery().state() != StoreState::Sound,
        store_write_failing: state.ledger.store().write_failing().is_some(),
    });
    text.push_str(&state.probes.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
