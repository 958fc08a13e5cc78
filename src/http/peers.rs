//! The peer side: directors list, ads listing, digests and fetch for catch-up.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use crate::ad::SignedAd;
use crate::wire::{AdListing, DigestEntry, DirectorInfo, FetchRequest};

/// Most keys one fetch may ask for.
const MAX_FETCH: usize = 10_000;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1.0/director/directors", get(directors))
        .route("/api/v1.0/director/ads", get(ads))
        .route("/api/v1.0/director/servers", get(ads))
        .route("/api/v1.0/director/digest", get(digest))
        .route("/api/v1.0/director/ads/fetch", post(fetch))
}

async fn directors(State(state): State<Arc<AppState>>) -> Json<Vec<DirectorInfo>> {
    let instance = state.identity.instance();
    let key = crate::ad::AdKey {
        kind: crate::ad::ServerKind::Director,
        name: state.name.clone(),
    };
    let own = state.ledger.view().get(&key).cloned();
    let me = DirectorInfo {
        name: state.name.clone(),
        start_time: instance.started_at,
        instance_id: instance.uuid.to_string(),
        generation_id: own.as_ref().map(|a| a.ad.generation).unwrap_or(0),
        version: env!("CARGO_PKG_VERSION").to_string(),
        expiry: own.as_ref().map(|a| a.ad.expires_at).unwrap_or(0),
        advertise_url: state.advertise_url.clone(),
        last_seen: state.ledger.clock().now_ms(),
        reachable: true,
        is_self: true,
    };
    Json(state.peers.listing(me))
}

async fn ads(State(state): State<Arc<AppState>>) -> Json<Vec<AdListing>> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let mut listing: Vec<AdListing> = view
        .ads()
        .filter(|a| a.expires_at > now)
        .map(|a| AdListing {
            signed: a.signed(),
            received_at: a.received_at,
            effective_expiry: a.expires_at,
            provenance: a.provenance(),
        })
        .collect();
    listing.sort_by_key(|a| a.signed.ad.key());
    Json(listing)
}

async fn digest(State(state): State<Arc<AppState>>) -> Json<Vec<DigestEntry>> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    Json(
        view.ads()
            .filter(|a| a.expires_at > now)
            .map(|a| DigestEntry {
                key: a.ad.key(),
                version: a.ad.version(),
            })
            .collect(),
    )
}

async fn fetch(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<FetchRequest>,
) -> Result<Json<Vec<SignedAd>>, ApiError> {
    if request.keys.len() > MAX_FETCH {
        return Err(ApiError::bad_request(
            "too_many_keys",
            format!("at most {MAX_FETCH} keys per fetch"),
        ));
    }
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    Ok(Json(
        request
            .keys
            .iter()
            .filter_map(|k| view.get(k))
            .filter(|a| a.expires_at > now)
            .map(|a| a.signed())
            .collect(),
    ))
}
