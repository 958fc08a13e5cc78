//! `GET /api/v1.0/director/servers`: every origin and cache in the view with its health
//! and its location.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::ad::{AdStatus, ServerKind};
use crate::clock::UnixMillis;
use crate::geo::ServerLocation;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1.0/director/servers", get(servers))
}

/// One server as listed.
#[derive(Debug, Serialize)]
struct ServerEntry {
    name: String,
    kind: ServerKind,
    /// The ad's status (`ok`, `shutting down`).
    status: AdStatus,
    data_url: String,
    web_url: String,
    namespaces: Vec<String>,
    /// When this director drops the ad, Unix milliseconds.
    expires_at: UnixMillis,
    /// `null` until the first probe finishes (or with `health.enabled = false`).
    health: Option<HealthEntry>,
    /// Where the server is and how that was found (`located_by`); `null`: unknown.
    location: Option<ServerLocation>,
}

/// What the probes last saw.
#[derive(Debug, Serialize)]
struct HealthEntry {
    up: bool,
    ewma: f64,
    latency_ms: f64,
    /// When the last probe finished, Unix milliseconds.
    last_probe: UnixMillis,
    /// Failed probes in a row.
    failures: u32,
    last_error: Option<String>,
    /// The URL probed.
    url: String,
}

async fn servers(State(state): State<Arc<AppState>>) -> Json<Vec<ServerEntry>> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let board = state.probes.board().snapshot();
    let locations = state.geo.servers().load();
    let mut listing: Vec<ServerEntry> = view
        .ads()
        .filter(|a| a.expires_at > now && a.ad.kind != ServerKind::Director)
        .map(|a| {
            let health = board.get(&a.ad.key()).map(|s| HealthEntry {
                up: s.health.up,
                ewma: s.health.ewma,
                latency_ms: s.health.latency_ms,
                last_probe: s.health.checked_at,
                failures: s.failures,
                last_error: s.last_error.clone(),
                url: s.url.clone(),
            });
            ServerEntry {
                name: a.ad.name.clone(),
                kind: a.ad.kind,
                status: a.ad.status,
                data_url: a.ad.data_url.clone(),
                web_url: a.ad.web_url.clone(),
                namespaces: a.ad.namespaces.iter().map(|n| n.path.clone()).collect(),
                expires_at: a.expires_at,
                health,
                location: crate::geo::servers::location_of(&locations, &a.ad),
            }
        })
        .collect();
    listing.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Json(listing)
}
