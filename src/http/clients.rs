//! The client side (Pelican-compatible): discovery document, redirects, namespaces.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use super::{AppState, redirect};
use crate::ad::NamespaceAd;
use crate::geo::ClientLocation;
use crate::metrics::RedirectResult;
use crate::paths::parse_object_path;
use crate::routing::sort::{self, Scored, SortInput, SortMethod};
use crate::routing::{NoRoute, Purpose};
use crate::wire::FederationDiscovery;

const OBJECT_API: &str = "/api/v1.0/director/object";
const ORIGIN_API: &str = "/api/v1.0/director/origin";

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/.well-known/pelican-configuration", get(discovery))
        .route("/api/v2.0/director/listNamespaces", get(list_namespaces))
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

async fn list_namespaces(State(state): State<Arc<AppState>>) -> Json<Vec<NamespaceAd>> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let namespaces = view
        .namespaces(now)
        .into_iter()
        .filter_map(|prefix| view.route(&prefix, Purpose::Read, now).ok())
        .map(|route| route.namespace)
        .collect();
    Json(namespaces)
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

/// `GET|HEAD|PUT|DELETE /<path>` and the object/origin APIs: 307 to the best server.
async fn object(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match redirect_for(&state, &request) {
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

/// The director's own query flags, found while the rest of the query is kept for `Location`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Flags {
    /// `redirect=false`: answer the route as JSON instead of a 307 (not forwarded).
    #[serde(skip)]
    no_redirect: bool,
    /// `explain`: answer why, as JSON (not forwarded).
    #[serde(skip)]
    explain: bool,
    /// `directread`: to an origin that allows direct reads (forwarded, as Pelican does).
    directread: bool,
    /// `prefercached`: caches known to hold the object first (forwarded).
    prefercached: bool,
}

/// Splits the query into the director's flags and the part passed on in `Location`.
fn read_query(query: Option<&str>) -> Result<(Flags, String), ApiError> {
    let mut flags = Flags::default();
    let mut kept = String::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        match (name, pair) {
            (_, "redirect=false") => {
                flags.no_redirect = true;
                continue;
            }
            ("explain", _) => {
                flags.explain = true;
                continue;
            }
            ("directread", _) => flags.directread = true,
            ("prefercached", _) => flags.prefercached = true,
            _ => {}
        }
        if !kept.is_empty() {
            kept.push('&');
        }
        kept.push_str(pair);
    }
    if flags.directread && flags.prefercached {
        // Pelican's director answers the same combination with 400 and this sentence.
        return Err(ApiError::bad_request(
            "invalid_query",
            "Failed to validate incoming request: invalid query parameter combination: \
             cannot have both directread and prefercached query parameters",
        ));
    }
    Ok((flags, kept))
}

fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Read => "read",
        Purpose::OriginRead => "origin_read",
        Purpose::DirectRead => "direct_read",
        Purpose::Write => "write",
    }
}

/// `?explain`: why this client goes where it goes.
#[derive(Serialize)]
struct Explain<'a> {
    path: &'a str,
    namespace: &'a str,
    purpose: &'static str,
    client: ClientLocation,
    geoip_db: Option<String>,
    sort: SortMethod,
    flags: Flags,
    candidates: Vec<Scored>,
    order: Vec<&'a str>,
    location: String,
    link_limit: usize,
}

fn redirect_for(state: &AppState, request: &Request) -> Result<Response, ApiError> {
    let uri = request.uri();
    let (mut purpose, path) = purpose_of(request.method(), uri.path())?;
    let (flags, query) = read_query(uri.query())?;
    if flags.directread && matches!(purpose, Purpose::Read | Purpose::OriginRead) {
        purpose = Purpose::DirectRead;
    }
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let mut route = view.route(&path, purpose, now).map_err(|no| match no {
        NoRoute::NoNamespace => {
            ApiError::not_found(format!("no server serves a namespace containing {path}"))
        }
        NoRoute::NotAllowed { prefix } if purpose == Purpose::DirectRead => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not_allowed",
            format!("no origin for namespace {prefix} allows direct reads"),
        ),
        NoRoute::NotAllowed { prefix } => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not_allowed",
            format!(
                "no origin for namespace {prefix} allows {}",
                request.method()
            ),
        ),
    })?;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // Affinity ignores where the client is: only an explanation needs it then.
    let client = if state.sort == SortMethod::Affinity && !flags.explain {
        crate::geo::ClientLocation::unknown()
    } else {
        state.geo.locate_client(peer, request.headers())
    };
    let locations = state.geo.servers().load();
    let input = SortInput {
        method: state.sort,
        client: client.location,
        client_addr: client.address,
        path: &path,
        signals: state.signals.as_ref(),
        locations: &locations,
        prefer_cached: flags.prefercached,
    };
    if flags.explain {
        let candidates = sort::explain(&mut route.candidates, &input);
        let headers = redirect::headers(&route, &path, Some(&query));
        let body = Explain {
            path: &path,
            namespace: &route.prefix,
            purpose: purpose_name(purpose),
            client,
            geoip_db: state.geo.db_description(),
            sort: state.sort,
            flags,
            candidates,
            order: route.candidates.iter().map(|c| c.name.as_str()).collect(),
            location: location_of(&headers),
            link_limit: redirect::MAX_LINKS,
        };
        return Ok((StatusCode::OK, headers, Json(body)).into_response());
    }
    sort::order(&mut route.candidates, &input);
    let headers = redirect::headers(&route, &path, Some(&query));
    if flags.no_redirect {
        let body = RouteBody {
            namespace: &route.prefix,
            location: location_of(&headers),
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

fn location_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
