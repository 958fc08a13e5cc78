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

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ads = state.ledger.view().len();
    if state.ready.load(Ordering::SeqCst) {
        Json(json!({ "status": "ready", "ads": ads })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "not_ready", "detail": "the store is still loading" })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let now = state.ledger.clock().now_ms();
    let live = state
        .ledger
        .view()
        .ads()
        .filter(|a| a.expires_at > now)
        .count();
    let text = state.metrics.render(live, state.peers.count_with_self());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
