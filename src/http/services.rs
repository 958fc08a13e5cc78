//! The service side: origins and caches register ads, operators send records; peers
//! forward them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use crate::ad::{ServerKind, SignedAd};
use crate::client::FORWARDED_BY;
use crate::ledger::IngestError;
use crate::wire::{ForwardBody, ForwardResult, RegisterResponse};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1.0/director/registerOrigin", post(register_origin))
        .route("/api/v1.0/director/registerCache", post(register_cache))
        .route("/api/v1.0/director/forward", post(forward))
        .route("/api/v1.0/director/records", post(record))
}

/// An operator's downtime or ban record (signed by an admin key), taken in and
/// replicated like an ad.
async fn record(
    State(state): State<Arc<AppState>>,
    JsonBody(ad): JsonBody<SignedAd>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if !ad.ad.kind.is_record() {
        return Err(wrong_endpoint(
            &ad,
            "records endpoint (downtime and ban only)",
        ));
    }
    take_in(state, ad).await
}

fn wrong_endpoint(ad: &SignedAd, endpoint: &str) -> ApiError {
    ApiError::bad_request(
        "wrong_endpoint",
        format!("a {} ad was sent to the {endpoint}", ad.ad.kind),
    )
}

async fn take_in(state: Arc<AppState>, ad: SignedAd) -> Result<Json<RegisterResponse>, ApiError> {
    let outcome = state.replicator.accept(ad, None).await?;
    Ok(Json(RegisterResponse {
        status: outcome.status().to_string(),
    }))
}

async fn register_origin(
    State(state): State<Arc<AppState>>,
    JsonBody(ad): JsonBody<SignedAd>,
) -> Result<Json<RegisterResponse>, ApiError> {
    register(state, ad, ServerKind::Origin).await
}

async fn register_cache(
    State(state): State<Arc<AppState>>,
    JsonBody(ad): JsonBody<SignedAd>,
) -> Result<Json<RegisterResponse>, ApiError> {
    register(state, ad, ServerKind::Cache).await
}

async fn register(
    state: Arc<AppState>,
    ad: SignedAd,
    expected: ServerKind,
) -> Result<Json<RegisterResponse>, ApiError> {
    if ad.ad.kind != expected {
        return Err(wrong_endpoint(
            &ad,
            &format!("{expected} registration endpoint"),
        ));
    }
    take_in(state, ad).await
}

/// A peer forwards one ad (answered like a registration) or a batch (one result each).
async fn forward(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ForwardBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let from = headers
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match body {
        ForwardBody::One(ad) => {
            let outcome = state.replicator.accept_forwarded(*ad, from.as_deref())?;
            Ok(Json(RegisterResponse {
                status: outcome.status().to_string(),
            })
            .into_response())
        }
        ForwardBody::Batch(ads) => {
            let outcomes: Vec<_> = ads
                .into_iter()
                .map(|ad| state.replicator.accept_forwarded(ad, from.as_deref()))
                .collect();
            let mut results = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                results.push(match outcome {
                    Ok(outcome) => ForwardResult {
                        status: outcome.status().to_string(),
                        detail: None,
                    },
                    Err(IngestError::Store(e)) => return Err(ApiError::internal(e)),
                    Err(e) => ForwardResult {
                        status: "refused".into(),
                        detail: Some(e.to_string()),
                    },
                });
            }
            Ok(Json(results).into_response())
        }
    }
}
