//! The peer side: directors list, ads listing, digests and fetch for catch-up.

use std::sync::Arc;

use std::collections::HashSet;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use crate::ad::SignedAd;
use crate::replication::digest;
use crate::wire::{AdListing, DigestSummary, DirectorInfo, FetchRequest};
use serde::Deserialize;

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
        })
        .collect();
    listing.sort_by_key(|a| a.signed.ad.key());
    Json(listing)
}

/// Query of `GET /api/v1.0/director/digest`.
#[derive(Debug, Deserialize)]
struct DigestQuery {
    /// Ask for a summary with this many buckets (only [`digest::BUCKETS`] is served).
    buckets: Option<usize>,
    /// With `buckets`: the entries of these buckets (comma-separated indexes) instead.
    only: Option<String>,
}

/// The digest: with no query every live entry (as directors before bucketed digests ask);
/// with `?buckets=256` one hash per bucket; with `?buckets=256&only=3,17` the entries of
/// those buckets.
async fn digest(
    State(state): State<Arc<AppState>>,
    Query(query): Query<DigestQuery>,
) -> Result<Response, ApiError> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let Some(buckets) = query.buckets else {
        return Ok(Json(digest::entries(&view, now, None)).into_response());
    };
    if buckets != digest::BUCKETS {
        return Err(ApiError::bad_request(
            "bad_buckets",
            format!("digests have {} buckets, not {buckets}", digest::BUCKETS),
        ));
    }
    let Some(only) = query.only else {
        let summary = DigestSummary {
            buckets: digest::summarise(&view, now),
        };
        return Ok(Json(summary).into_response());
    };
    let mut wanted = HashSet::new();
    for part in only.split(',').filter(|p| !p.is_empty()) {
        match part.parse::<usize>() {
            Ok(bucket) if bucket < digest::BUCKETS => {
                wanted.insert(bucket);
            }
            _ => {
                return Err(ApiError::bad_request(
                    "bad_buckets",
                    format!("{part:?} is not a bucket index below {}", digest::BUCKETS),
                ));
            }
        }
    }
    Ok(Json(digest::entries(&view, now, Some(&wanted))).into_response())
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
