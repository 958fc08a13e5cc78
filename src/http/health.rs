//! Operations: liveness, readiness, Prometheus metrics and a status page.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::ad::AdStatus;
use crate::metrics::{Gauges, PeerGauges};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1.0/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
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
    let mut by_kind: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
    let mut live = 0;
    for a in state.ledger.view().ads().filter(|a| a.expires_at > now) {
        live += 1;
        let status = match a.ad.status {
            AdStatus::Ok => "ok",
            AdStatus::ShuttingDown => "shutting_down",
        };
        *by_kind.entry((a.ad.kind.as_str(), status)).or_default() += 1;
    }
    let backlog = state.replicator.backlog_by_peer();
    let peers = state
        .peers
        .sync_states()
        .into_iter()
        .map(|(url, in_sync, last_success_ms)| PeerGauges {
            backlog: backlog.get(&url).copied().unwrap_or(0),
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
        peers_known: state.peers.count_with_self(),
        ads_by_kind: by_kind.into_iter().map(|((k, s), n)| (k, s, n)).collect(),
        peers,
        store_bytes,
    };
    let text = state.metrics.render_with(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn status_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let now = state.ledger.clock().now_ms();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><meta charset=utf-8><title>Skein {name}</title>\
         <h1>Skein director {name}</h1><p>{url} &middot; instance started {started} \
         &middot; {n} directors known &middot; forward backlog {backlog}</p>\
         <h2>Directors</h2><table><tr><th>URL<th>last error</tr>",
        name = escape(&state.name),
        url = escape(&state.advertise_url),
        started = state.identity.instance().started_at,
        n = state.peers.count_with_self(),
        backlog = state.replicator.backlog(),
    );
    for (url, error) in state.peers.errors() {
        let _ = write!(
            page,
            "<tr><td>{}<td>{}</tr>",
            escape(&url),
            escape(error.as_deref().unwrap_or("-"))
        );
    }
    page.push_str("</table><h2>Ads</h2><table><tr><th>kind<th>name<th>data URL<th>namespaces<th>status<th>expires in (s)</tr>");
    let view = state.ledger.view();
    let mut ads: Vec<_> = view.ads().collect();
    ads.sort_by_key(|a| a.ad.key());
    for a in ads {
        let namespaces: Vec<&str> = a.ad.namespaces.iter().map(|n| n.path.as_str()).collect();
        let _ = write!(
            page,
            "<tr><td>{}<td>{}<td>{}<td>{}<td>{:?}<td>{}</tr>",
            a.ad.kind,
            escape(&a.ad.name),
            escape(&a.ad.data_url),
            escape(&namespaces.join(" ")),
            a.ad.status,
            a.expires_at.saturating_sub(now) / 1000
        );
    }
    page.push_str("</table>");
    Html(page)
}
