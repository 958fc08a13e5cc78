//! The client side (Pelican-compatible): discovery document, redirects, namespaces.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use super::{AppState, redirect};
use crate::metrics::RedirectResult;
use crate::paths::parse_object_path;
use crate::probe::Ask;
use crate::routing::{NoRoute, Purpose};
use crate::wire::FederationDiscovery;

const OBJECT_API: &str = "/api/v1.0/director/object";
const ORIGIN_API: &str = "/api/v1.0/director/origin";

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/.well-known/pelican-configuration", get(discovery))
        .fallback(object)
}

async fn discovery(State(state): State<Arc<AppState>>) -> Json<FederationDiscovery> {
    let me = state.advertise_url.clone();
    let mut endpoints = vec![me.clone()];
    endpoints.extend(state.peers.urls());
    Json(FederationDiscovery {
        discovery_endpoint: me.clone(),
        director_endpoint: me,
        director_advertise_endpoints: endpoints,
        namespace_registration_endpoint: String::new(),
        jwks_uri: String::new(),
        broker_endpoint: String::new(),
    })
}

/// Where a request for an object path should go, from its URL path and method.
fn purpose_of(method: &Method, uri_path: &str) -> Result<(Purpose, String), ApiError> {
    let (api_origin, raw) = if let Some(rest) = uri_path.strip_prefix(ORIGIN_API) {
        (true, rest)
    } else if let Some(rest) = uri_path.strip_prefix(OBJECT_API) {
        (false, rest)
    } else {
        (false, uri_path)
    };
    let raw = if raw.is_empty() { "/" } else { raw };
    let path = parse_object_path(raw)?;
    let purpose = match *method {
        Method::GET | Method::HEAD if api_origin => Purpose::OriginRead,
        Method::GET | Method::HEAD => Purpose::Read,
        // WebDAV listing (Pelican clients list this way): to an origin, like Pelican's director.
        ref m if m.as_str() == "PROPFIND" => Purpose::OriginRead,
        Method::PUT | Method::DELETE => Purpose::Write,
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not supported on object paths"),
            ));
        }
    };
    Ok((purpose, path))
}

#[derive(Serialize)]
struct RouteBody<'a> {
    namespace: &'a str,
    location: String,
    servers: Vec<&'a str>,
}

/// The CORS headers Pelican's director sends on client routes, so a web page on another
/// origin can ask the director (and read the `X-Pelican-*` headers).
const CORS: [(HeaderName, HeaderValue); 4] = [
    (
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    ),
    (
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, PUT, OPTIONS, PROPFIND"),
    ),
    (
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, Depth"),
    ),
    (
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Content-Type, Authorization, X-Pelican-User, X-Pelican-Timeout, X-Pelican-Token-Generation, X-Pelican-Authorization, X-Pelican-Namespace",
        ),
    ),
];

/// Methods a client route answers (Pelican's `Allow` on a preflight).
const ALLOW: HeaderValue = HeaderValue::from_static("HEAD,GET,PUT,DELETE,PROPFIND,OPTIONS");

/// Every path not routed elsewhere: object paths (with CORS), preflights, and unknown
/// API paths (never mistaken for objects).
async fn object(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let path = request.uri().path();
    let mut response = if request.method() == Method::OPTIONS {
        ([(header::ALLOW, ALLOW)], "").into_response()
    } else if path.starts_with("/api/")
        && !path.starts_with(OBJECT_API)
        && !path.starts_with(ORIGIN_API)
    {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            format!("{path} is not an endpoint of this director"),
        )
        .into_response();
    } else {
        let (parts, _body) = request.into_parts();
        redirect_or_error(&state, &parts).await
    };
    response.headers_mut().extend(CORS);
    response
}

/// A known route asked with a method it does not take: a preflight (`OPTIONS`) under
/// Pelican's director API gets `200` with CORS headers, as Pelican answers; anything
/// else a JSON `405` (the `Allow` header is added by the router).
pub(super) async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path();
    if request.method() == Method::OPTIONS && path.starts_with("/api/v1.0/director/") {
        let mut response = "".into_response();
        response.headers_mut().extend(CORS);
        return response;
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not supported on {path}", request.method()),
    )
    .into_response()
}

/// `GET|HEAD|PUT|DELETE|PROPFIND /<path>` and the object/origin APIs: 307 to the best server.
async fn redirect_or_error(state: &AppState, request: &Parts) -> Response {
    match redirect_for(state, request).await {
        Ok(response) => {
            state.metrics.redirect(RedirectResult::Redirected);
            response
        }
        Err(error) => {
            state
                .metrics
                .redirect(if error.status() == StatusCode::NOT_FOUND {
                    RedirectResult::NotFound
                } else {
                    RedirectResult::Refused
                });
            error.into_response()
        }
    }
}

async fn redirect_for(state: &AppState, request: &Parts) -> Result<Response, ApiError> {
    let uri = &request.uri;
    let (purpose, path) = purpose_of(&request.method, uri.path())?;
    let mut no_redirect = false;
    let query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let is_flag = *pair == "redirect=false";
            no_redirect |= is_flag;
            !pair.is_empty() && !is_flag
        })
        .collect();
    let query = query.join("&");
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let mut route = view.route(&path, purpose, now).map_err(|no| match no {
        NoRoute::NoNamespace => {
            ApiError::not_found(format!("no server serves a namespace containing {path}"))
        }
        NoRoute::NotAllowed { prefix } => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not_allowed",
            format!("no origin for namespace {prefix} allows {}", request.method),
        ),
    })?;
    let ask = Ask::of(request, &path, purpose, &query);
    state
        .probes
        .prepare(&mut route, &ask)
        .await
        .map_err(|_| ApiError::not_found(format!("no origin of {} holds {path}", route.prefix)))?;
    let headers = redirect::headers(&route, &path, Some(&query));
    if no_redirect {
        let body = RouteBody {
            namespace: &route.prefix,
            location: headers
                .get(axum::http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            servers: route
                .candidates
                .iter()
                .map(|c| c.data_url.as_str())
                .collect(),
        };
        return Ok((StatusCode::OK, headers, Json(body)).into_response());
    }
    Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response())
}
