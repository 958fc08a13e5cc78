//! Per-request observation: the duration histogram by route class, and the optional
//! access log (one line per request: method, path class, status, duration).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::route_class::RouteClass;

/// Times the request; logs it when `log.access` is on. Two clock reads and three
/// relaxed atomic adds on the redirect path; the path itself is never logged (it may
/// name private objects), only its class.
pub(super) async fn observe(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let began = Instant::now();
    let class = RouteClass::of(request.method(), request.uri().path());
    let method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = began.elapsed();
    state.metrics.request(class, elapsed);
    if state.access_log.load(Ordering::Relaxed) {
        tracing::info!(
            target: "skein::access",
            method = %method,
            class = class.as_str(),
            status = response.status().as_u16(),
            duration_us = elapsed.as_micros() as u64,
            "request"
        );
    }
    response
}
