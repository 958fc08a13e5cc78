//! The peer side: directors list, own ad, ads listing, digests and fetch for catch-up.

use std::sync::Arc;

use std::collections::HashSet;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use crate::ad::{SignedAd, page};
use crate::replication::digest;
use crate::wire::{AdListing, DigestEntry, DigestSummary, DirectorInfo, FetchRequest, OfferAnswer};
use serde::Deserialize;

/// Most keys one fetch may ask for (and most entries in one offer).
const MAX_FETCH: usize = 10_000;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1.0/director/directors", get(directors))
        .route("/api/v1.0/director/self", get(own_ad))
        .route("/api/v1.0/director/ads", get(ads))
        .route("/api/v1.0/director/digest", get(digest))
        .route("/api/v1.0/director/ads/fetch", post(fetch))
        .route("/api/v1.0/director/forward/offer", post(offer))
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

/// This director's own signed ad: how a peer verifies that this URL is this director.
async fn own_ad(State(state): State<Arc<AppState>>) -> Result<Json<SignedAd>, ApiError> {
    let key = crate::ad::AdKey {
        kind: crate::ad::ServerKind::Director,
        name: state.name.clone(),
    };
    match state.ledger.view().get(&key) {
        Some(own) => Ok(Json(own.signed())),
        None => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_announced",
            "this director has not signed its own ad yet",
        )),
    }
}

/// Ads per page of `GET /api/v1.0/director/ads` when the client does not say.
const ADS_PAGE: usize = 1_000;

/// Most ads one page may hold.
const MAX_ADS_PAGE: usize = 10_000;

/// Query of `GET /api/v1.0/director/ads`.
#[derive(Debug, Deserialize)]
struct AdsQuery {
    /// Ads per page (default [`ADS_PAGE`], at most [`MAX_ADS_PAGE`]).
    limit: Option<usize>,
    /// Only ads whose key sorts after this `kind/name` (the last key of the previous page).
    after: Option<String>,
}

/// Live ads in key order, a page at a time; `Link: <...>; rel="next"` while more remain.
async fn ads(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AdsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(ADS_PAGE);
    if limit == 0 || limit > MAX_ADS_PAGE {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be 1 to {MAX_ADS_PAGE}"),
        ));
    }
    let after = match query.after.as_deref() {
        None => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            ApiError::bad_request(
                "bad_cursor",
                format!("after={cursor:?} is not a kind/name ad key"),
            )
        })?),
    };
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let mut page: Vec<&Arc<crate::ad::StoredAd>> = view
        .ads()
        .filter(|a| a.expires_at > now)
        .filter(|a| after.as_ref().is_none_or(|after| a.ad.key() > *after))
        .collect();
    let more = page.len() > limit;
    if more {
        page.select_nth_unstable_by_key(limit, |a| a.ad.key());
        page.truncate(limit);
    }
    page.sort_by_key(|a| a.ad.key());
    let listing: Vec<AdListing> = page
        .iter()
        .map(|a| AdListing {
            signed: a.signed(),
            received_at: a.received_at,
            effective_expiry: a.expires_at,
            provenance: a.provenance(),
        })
        .collect();
    let mut response = Json(listing).into_response();
    if let (true, Some(last)) = (more, page.last()) {
        let cursor = utf8_percent_encode(&last.ad.key().to_string(), NON_ALPHANUMERIC).to_string();
        let next = format!("</api/v1.0/director/ads?limit={limit}&after={cursor}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::try_from(next) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// `kind/name` back into an ad key.
fn parse_cursor(cursor: &str) -> Option<crate::ad::AdKey> {
    let (kind, name) = cursor.split_once('/')?;
    Some(crate::ad::AdKey {
        kind: kind.parse().ok()?,
        name: name.to_string(),
    })
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

/// The held ads of the keys asked: JSON, or the binary page ([`page::MEDIA_TYPE`]) when
/// the asking director accepts it.
async fn fetch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<FetchRequest>,
) -> Result<Response, ApiError> {
    if request.keys.len() > MAX_FETCH {
        return Err(ApiError::bad_request(
            "too_many_keys",
            format!("at most {MAX_FETCH} keys per fetch"),
        ));
    }
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let held = request
        .keys
        .iter()
        .filter_map(|k| view.get(k))
        .filter(|a| a.expires_at > now)
        .map(|a| &**a);
    let binary = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim() == page::MEDIA_TYPE)
        });
    if binary {
        let body = page::encode(held);
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(page::MEDIA_TYPE),
            )],
            body,
        )
            .into_response());
    }
    // Serialized from the view as held (no copy of each ad), as `Vec<SignedAd>`.
    let listed: Vec<_> = held.map(|a| a.signed_ref()).collect();
    Ok(Json(listed).into_response())
}

/// A peer offers the versions of ads it would forward; the answer names (by index) the
/// entries newer than what this director holds, which the peer then forwards in full.
/// Costs one lookup per entry: no ad is parsed and no signature checked.
async fn offer(
    State(state): State<Arc<AppState>>,
    JsonBody(entries): JsonBody<Vec<DigestEntry>>,
) -> Result<Json<OfferAnswer>, ApiError> {
    if entries.len() > MAX_FETCH {
        return Err(ApiError::bad_request(
            "too_many_entries",
            format!("at most {MAX_FETCH} entries per offer"),
        ));
    }
    let view = state.ledger.view();
    let wanted = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| crate::ad::is_newer(e.version, view.get(&e.key).map(|a| a.ad.version())))
        .map(|(i, _)| i)
        .collect();
    Ok(Json(OfferAnswer { wanted }))
}
