//! Operations: liveness, readiness and Prometheus metrics.

use std::collections::BTreeMap;
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
use crate::ad::AdStatus;
use crate::ledger::StoreState;
use crate::metrics::{Gauges, PeerGauges};

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
    let mut by_kind: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
    let (mut live, mut pelican) = (0, 0);
    for a in state.ledger.view().ads().filter(|a| a.expires_at > now) {
        live += 1;
        if a.provenance() == crate::ad::Provenance::Pelican {
            pelican += 1;
        }
        let status = match a.ad.status {
            AdStatus::Ok => "ok",
            AdStatus::ShuttingDown => "shutting_down",
        };
        *by_kind.entry((a.ad.kind.as_str(), status)).or_default() += 1;
    }
    let registry_requests = state
        .ledger
        .trust()
        .pelican()
        .registry()
        .map_or(0, |r| r.requests());
    let peers = state
        .peers
        .sync_states()
        .into_iter()
        .map(|(url, in_sync, last_success_ms)| PeerGauges {
            backlog: state.replicator.backlog_of(&url),
            url,
            in_sync,
            last_success_ms,
        })
        .collect();
    let store = state.ledger.store().clone();
    let store_bytes = tokio::task::spawn_blocking(move || store.size_on_disk().ok())
        .await
        .ok()
        .flatten();
    let gauges = Gauges {
        ads_live: live,
        ads_live_pelican: pelican,
        registry_requests,
        peers_known: state.peers.count_with_self(),
        store_degraded: state.ledger.recovery().state() != StoreState::Sound,
        store_write_failing: state.ledger.store().write_failing().is_some(),
        ads_by_kind: by_kind.into_iter().map(|((k, s), n)| (k, s, n)).collect(),
        peers,
        store_bytes,
    };
    let mut text = state.metrics.render_with(&gauges);
    text.push_str(&state.probes.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
