//! The service side: origins and caches register ads, operators send records; peers
//! forward them.
//!
//! A registration is one of two kinds, told apart by the request: a Pelican server
//! sends its own JSON with `Authorization: Bearer <advertise token>` (answered as
//! Pelican's director answers, `{"status", "msg"}`); a Skein server sends a signed ad
//! (answered `{"status"}` or `{"error", "detail"}` as before).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use crate::ad::{ServerKind, SignedAd};
use crate::client::FORWARDED_BY;
use crate::ledger::IngestError;
use crate::pelican::Refusal;
use crate::pelican::wire::{ApprovalErrorResp, SimpleApiResp};
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => register(state, headers, body, ServerKind::Origin).await,
        Err(rejection) => ApiError::from(rejection).into_response(),
    }
}

async fn register_cache(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => register(state, headers, body, ServerKind::Cache).await,
        Err(rejection) => ApiError::from(rejection).into_response(),
    }
}

/// True if a body that is not a Skein ad is a Pelican ad (so it gets Pelican's answer).
fn looks_pelican(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("registry-prefix").is_some() && v.get("signature").is_none())
}

async fn register(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    expected: ServerKind,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorization.is_some_and(|a| a.starts_with("Bearer ")) {
        return register_pelican(&state, authorization, &body, expected).await;
    }
    match SignedAd::from_json(&body) {
        Ok(ad) => register_skein(state, ad, expected).await.into_response(),
        Err(_) if looks_pelican(&body) => {
            register_pelican(&state, authorization, &body, expected).await
        }
        Err(e) => ApiError::bad_request("malformed_json", e.to_string()).into_response(),
    }
}

async fn register_skein(
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
    if ad.attestation.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "attestation_from_service",
            "attested (Pelican) ads are taken only from peer directors; a Pelican server sends its own ad with a bearer token",
        ));
    }
    take_in(state, ad).await
}

/// Pelican's answer shape: `{"status":"error","msg":...}` with the status code.
fn pelican_reply(status: StatusCode, body: SimpleApiResp, retry_after: Option<u64>) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn register_pelican(
    state: &Arc<AppState>,
    authorization: Option<&str>,
    body: &[u8],
    kind: ServerKind,
) -> Response {
    let peers = state.peers.urls();
    let view = state.ledger.view();
    let signed = match state
        .pelican
        .admit(kind, authorization, body, &peers, &view)
        .await
    {
        Ok(signed) => signed,
        Err(Refusal {
            status,
            msg,
            retry_after,
            code,
            approval,
        }) => {
            state.metrics.pelican_registration(code);
            tracing::warn!(%kind, code, %msg, "Pelican advertisement refused");
            if approval {
                let body = ApprovalErrorResp {
                    approval_error: true,
                    error: msg,
                };
                return (status, Json(body)).into_response();
            }
            return pelican_reply(status, SimpleApiResp::failed(msg), retry_after);
        }
    };
    let name = signed.ad.name.clone();
    let tname = if kind == ServerKind::Cache {
        "Cache"
    } else {
        "Origin"
    };
    let (label, status, answer) = match state.replicator.accept(signed, None).await {
        Ok(outcome) => {
            tracing::debug!(%kind, %name, status = outcome.status(), "Pelican advertisement taken in");
            (
                outcome.status(),
                StatusCode::OK,
                SimpleApiResp::ok("Successful registration"),
            )
        }
        Err(IngestError::Invalid(why)) => (
            "invalid",
            StatusCode::BAD_REQUEST,
            SimpleApiResp::failed(format!("Invalid {tname} registration: {why}")),
        ),
        Err(IngestError::Untrusted(e)) => (
            "untrusted",
            StatusCode::FORBIDDEN,
            SimpleApiResp::failed(format!("{tname} advertisement rejected: {e}")),
        ),
        Err(IngestError::Store(e)) => {
            tracing::error!(error = %e, "could not store a Pelican advertisement");
            (
                "error",
                StatusCode::INTERNAL_SERVER_ERROR,
                SimpleApiResp::failed(
                    "The director could not record this advertisement; nothing was acknowledged",
                ),
            )
        }
    };
    state.metrics.pelican_registration(label);
    pelican_reply(status, answer, None)
}

/// A peer forwards one ad (answered like a registration) or a batch (one result each).
async fn forward(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ForwardBody::from_json(&body?)
        .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
    let from = headers
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match body {
        ForwardBody::One(ad) => {
            state.ledger.prepare(&ad).await;
            let outcome = state.replicator.accept_forwarded(*ad, from.as_deref())?;
            Ok(Json(RegisterResponse {
                status: outcome.status().to_string(),
            })
            .into_response())
        }
        ForwardBody::Batch(ads) => {
            for ad in &ads {
                state.ledger.prepare(ad).await;
            }
            let outcomes = state
                .replicator
                .accept_forwarded_many(ads, from.as_deref())
                .await;
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
