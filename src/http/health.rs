//! Operations: liveness, readiness, Prometheus metrics and a status page.

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
    let text = state.metrics.render(&crate::metrics::Gauges {
        ads_live: skein + pelican,
        ads_live_pelican: pelican,
        peers_known: state.peers.count_with_self(),
        registry_requests,
    });
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
    page.push_str("</table><h2>Ads</h2><table><tr><th>kind<th>from<th>name<th>data URL<th>namespaces<th>status<th>expires in (s)</tr>");
    let view = state.ledger.view();
    let mut ads: Vec<_> = view.ads().collect();
    ads.sort_by_key(|a| a.ad.key());
    for a in ads {
        let namespaces: Vec<&str> = a.ad.namespaces.iter().map(|n| n.path.as_str()).collect();
        let _ = write!(
            page,
            "<tr><td>{}<td>{}<td>{}<td>{}<td>{}<td>{:?}<td>{}</tr>",
            a.ad.kind,
            a.provenance().as_str(),
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
