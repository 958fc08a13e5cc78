//! The client side (Pelican-compatible): discovery document, redirects, namespaces.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::asked::Asked;
use super::error::ApiError;
use super::{AppState, redirect};
use crate::geo::{ClientLocation, X_FORWARDED_FOR};
use crate::metrics::RedirectResult;
use crate::paths::parse_object_path;
use crate::probe::Ask;
use crate::route_class::DISCOVERY;
use crate::routing::sort::{self, Scored, SortInput, SortMethod};
use crate::routing::{NoRoute, Purpose, Route, View};
use crate::wire::FederationDiscovery;

const OBJECT_API: &str = "/api/v1.0/director/object";
const ORIGIN_API: &str = "/api/v1.0/director/origin";

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(DISCOVERY, get(discovery))
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
pub(super) const CORS: [(HeaderName, HeaderValue); 4] = [
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

/// Every path not routed elsewhere: the router's fallback (the outer service sends most
/// such requests to [`unrouted`] directly).
async fn object(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, _body) = request.into_parts();
    unrouted(&state, peer, &Asked::of(&parts)).await
}

/// A request for no route of the router, from `peer`: object paths (with CORS),
/// preflights, and unknown API paths (never mistaken for objects).
pub(super) async fn unrouted(
    state: &AppState,
    peer: Option<SocketAddr>,
    request: &Asked<'_>,
) -> Response {
    match unrouted_now(state, peer, request) {
        Some(answer) => answer.into_response(),
        None => redirect_after_checks(state, peer, request).await,
    }
}

/// A redirect whose presence checks are due (what [`unrouted_now`] left), after them.
pub(super) async fn redirect_after_checks(
    state: &AppState,
    peer: Option<SocketAddr>,
    request: &Asked<'_>,
) -> Response {
    counted(state, redirect_for(state, peer, request).await).into_response()
}

/// [`unrouted`] when its answer needs no wait (every request but a redirect whose
/// presence checks are due): the answer at once; `None` when it must wait.
pub(super) fn unrouted_now(
    state: &AppState,
    peer: Option<SocketAddr>,
    request: &Asked<'_>,
) -> Option<Answer> {
    let path = request.path();
    let response = if *request.method == Method::OPTIONS {
        ([(header::ALLOW, ALLOW)], "").into_response()
    } else if path.starts_with("/api/")
        && !path.starts_with(OBJECT_API)
        && !path.starts_with(ORIGIN_API)
    {
        return Some(Answer::Other(
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_endpoint",
                format!("{path} is not an endpoint of this director"),
            )
            .into_response(),
        ));
    } else {
        // A redirect's answer carries CORS already (see `counted`).
        return Some(counted(state, redirect_now(state, peer, request)?));
    };
    Some(Answer::Other(with_cors(response)))
}

/// The object handler's answer: a plain redirect still as its header values (the
/// connection's writer writes them out, or makes them a [`Response`]), or a response.
pub(super) enum Answer {
    /// `307 Temporary Redirect` with these headers and the CORS headers, no body.
    Redirect(redirect::Values),
    /// Anything else (an error, `?explain`, `?redirect=false`, a preflight).
    Other(Response),
}

impl super::observe::Answered for Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Redirect(_) => StatusCode::TEMPORARY_REDIRECT,
            Answer::Other(response) => response.status(),
        }
    }
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Answer::Other(response)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Redirect(values) => {
                let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
                *response.headers_mut() = values.into_headers(cors_headers());
                response
            }
            Answer::Other(response) => response,
        }
    }
}

fn with_cors(mut response: Response) -> Response {
    response.headers_mut().extend(CORS);
    response
}

/// A header map holding the CORS headers, with room in its index for a redirect's: what
/// a redirect's headers are written onto. Copying a prepared map costs less than
/// inserting the CORS headers one by one (each hashed and placed) on every redirect.
fn cors_headers() -> HeaderMap {
    static PREPARED: LazyLock<HeaderMap> = LazyLock::new(|| {
        let mut headers = HeaderMap::with_capacity(16);
        headers.extend(CORS);
        headers
    });
    PREPARED.clone()
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

/// A redirect's answer, counted in the redirect metrics, with the CORS headers: a
/// redirect gets them where it is written out, an answer from [`cors_headers`], an error
/// here.
fn counted(state: &AppState, answer: Result<Answer, ApiError>) -> Answer {
    match answer {
        Ok(answer) => {
            state.metrics.redirect(RedirectResult::Redirected);
            answer
        }
        Err(error) => {
            state
                .metrics
                .redirect(if error.status() == StatusCode::NOT_FOUND {
                    RedirectResult::NotFound
                } else {
                    RedirectResult::Refused
                });
            Answer::Other(with_cors(error.into_response()))
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

/// `GET|HEAD|PUT|DELETE|PROPFIND /<path>` and the object/origin APIs: 307 to the best
/// server, after the presence checks the route needs (the one network wait a redirect
/// may have; bounded).
async fn redirect_for(
    state: &AppState,
    peer: Option<SocketAddr>,
    request: &Asked<'_>,
) -> Result<Answer, ApiError> {
    // The route borrows from the view, held whole across the checks (a guard is not to be
    // held across an `.await`).
    let view = state.ledger.view();
    let planned = Planned::of(state, &view, request)?;
    let checked = state
        .probes
        .prepare(&planned.route, &planned.ask(request))
        .await;
    checked.map_err(|_| planned.all_absent())?;
    planned.answer(state, peer, request)
}

/// [`redirect_for`] when no presence check is due: the answer at once; `None` when a
/// check is due (the caller then waits for `redirect_for`).
fn redirect_now(
    state: &AppState,
    peer: Option<SocketAddr>,
    request: &Asked<'_>,
) -> Option<Result<Answer, ApiError>> {
    let view = state.ledger.view_guard();
    let planned = match Planned::of(state, &view, request) {
        Ok(planned) => planned,
        Err(error) => return Some(Err(error)),
    };
    let verdict = state
        .probes
        .prepare_now(&planned.route, &planned.ask(request))?;
    Some(match verdict {
        Ok(()) => planned.answer(state, peer, request),
        Err(_) => Err(planned.all_absent()),
    })
}

/// A redirect request read and routed, before its candidates are ordered; its route
/// borrows from the view.
struct Planned<'v> {
    purpose: Purpose,
    /// The object path (clean).
    path: String,
    flags: Flags,
    /// The query passed on in `Location` (without the director's own flags).
    query: String,
    route: Route<'v>,
}

impl<'v> Planned<'v> {
    /// Reads `request` and finds its route in `view`.
    fn of(state: &AppState, view: &'v View, request: &Asked<'_>) -> Result<Self, ApiError> {
        let uri = request.uri;
        let (mut purpose, path) = purpose_of(request.method, uri.path())?;
        let (flags, query) = read_query(uri.query())?;
        if flags.directread && matches!(purpose, Purpose::Read | Purpose::OriginRead) {
            purpose = Purpose::DirectRead;
        }
        let now = state.ledger.clock().now_ms();
        let found = view.route(&path, purpose, now);
        let route = found.map_err(|no| match no {
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
                format!("no origin for namespace {prefix} allows {}", request.method),
            ),
        })?;
        Ok(Self {
            purpose,
            path,
            flags,
            query,
            route,
        })
    }

    /// What the request asks, as presence checks see it.
    fn ask<'a>(&'a self, request: &Asked<'a>) -> Ask<'a> {
        let authorization = request.header_text(&header::AUTHORIZATION);
        Ask::of(
            request.method,
            authorization,
            &self.path,
            self.purpose,
            &self.query,
        )
    }

    /// The answer when every origin is known to lack the object.
    fn all_absent(&self) -> ApiError {
        ApiError::not_found(format!(
            "no origin of {} holds {}",
            self.route.prefix, self.path
        ))
    }

    /// The candidates ordered for the client, as a 307 (or the route as JSON for
    /// `redirect=false`, or why for `explain`).
    fn answer(
        mut self,
        state: &AppState,
        peer: Option<SocketAddr>,
        request: &Asked<'_>,
    ) -> Result<Answer, ApiError> {
        // An origin known to lack the object stays behind the ones that may hold it; the
        // sort does it, so `?explain` shows the order served.
        let object_presence = Ask::counts_presence(request.method, self.purpose);
        let (path, query, flags) = (&self.path, &self.query, self.flags);
        let route = &mut self.route;
        // Affinity ignores where the client is: only an explanation needs it then.
        let method = state.geo.sort();
        let client = if method == SortMethod::Affinity && !flags.explain {
            crate::geo::ClientLocation::unknown()
        } else {
            state
                .geo
                .locate_client(peer, request.texts_named(&X_FORWARDED_FOR))
        };
        let locations = state.geo.servers().load();
        let input = SortInput {
            method,
            client: client.location,
            client_addr: client.address,
            path,
            signals: state.signals.as_ref(),
            locations: &locations,
            prefer_cached: flags.prefercached,
            object_presence,
        };
        if flags.explain {
            let candidates = sort::explain(&mut route.candidates, &input);
            let headers = redirect::headers(cors_headers(), route, path, Some(query));
            let body = Explain {
                path,
                namespace: route.prefix,
                purpose: purpose_name(self.purpose),
                client,
                geoip_db: state.geo.db_description(),
                sort: method,
                flags,
                candidates,
                order: route.candidates.iter().map(|c| c.name()).collect(),
                location: location_of(&headers),
                link_limit: redirect::MAX_LINKS,
            };
            return Ok(Answer::Other(
                (StatusCode::OK, headers, Json(body)).into_response(),
            ));
        }
        sort::order(&mut route.candidates, &input);
        if flags.no_redirect {
            let headers = redirect::headers(cors_headers(), route, path, Some(query));
            let body = RouteBody {
                namespace: route.prefix,
                location: location_of(&headers),
                servers: route.candidates.iter().map(|c| c.data_url()).collect(),
            };
            return Ok(Answer::Other(
                (StatusCode::OK, headers, Json(body)).into_response(),
            ));
        }
        Ok(Answer::Redirect(redirect::written(
            route,
            path,
            Some(query),
        )))
    }
}

fn location_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
