//! The director's HTTP service: requests for no route of the router go straight to the
//! object handler, everything else through the router.
//!
//! Object paths are nearly every request a director answers, and the router would only
//! send them to its fallback: after matching the path against every route, boxing the
//! request body and a copy of the fallback service, and recording the connection's peer
//! in the request's extensions. [`RouteClass::is_unrouted`] is the one test of which
//! requests those are; the tests check it against every route the router declares. Both
//! ways pass the same budgets, timing and access log ([`Observe`]), and an answer leaves
//! with what the router would have added (`Content-Length`, no body for `HEAD`, `Server`).
//! An object request that needs no wait (no presence check due) is answered within the
//! call, by reference, with no future to box and nothing shared cloned.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use tokio_util::task::AbortOnDropHandle;
use tower::{Layer, Service};

use super::asked::Asked;
use super::clients::Answer;
use super::observe::{Observe, ObserveLayer, Observed};
use super::{AppState, SERVER_HEADER, clients, redirect};
use crate::route_class::RouteClass;

/// The director's HTTP service (what [`super::router`] builds); cheap to clone.
#[derive(Clone)]
pub struct App {
    unrouted: Observe<Unrouted>,
    /// Every other request: the router, behind the same layers.
    routed: Router,
    /// The connection's peer, when the listener set it.
    peer: Option<SocketAddr>,
    /// Where routed requests that [run apart](RouteClass::runs_apart) go when the
    /// connection's own runtime is a connection thread's (see `serve`): forwarded
    /// batches, bulk reads and the status page then never hold up the redirects served
    /// beside them.
    routed_on: Option<tokio::runtime::Handle>,
}

impl App {
    /// Requests for no route go to the object handler behind `observe`; the rest to
    /// `routed`.
    pub(super) fn new(state: Arc<AppState>, observe: &ObserveLayer, routed: Router) -> Self {
        Self {
            unrouted: observe.layer(Unrouted { state, peer: None }),
            routed,
            peer: None,
            routed_on: None,
        }
    }

    /// The same service, running the routed requests that run apart on `runtime`.
    pub fn routed_on(&self, runtime: tokio::runtime::Handle) -> Self {
        let mut app = self.clone();
        app.routed_on = Some(runtime);
        app
    }

    /// The same service for the requests of a connection from `peer` (handlers find it
    /// as axum's `ConnectInfo`).
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        let mut app = self.clone();
        app.unrouted.inner_mut().peer = Some(peer);
        app.peer = Some(peer);
        app
    }

    /// Counts a connection thread's yield (see `rest`) in the director's metrics.
    pub(super) fn yielded(&self) {
        self.unrouted
            .inner()
            .state
            .metrics
            .connection_thread_yielded();
    }

    /// The router alone, as every request went before (to compare with, in tests).
    #[cfg(test)]
    pub(super) fn routed(&self) -> Router {
        self.routed.clone()
    }
}

impl App {
    /// The answer to `request`, by reference: what both service traits below call.
    pub(super) fn answer<B>(&self, request: Request<B>) -> AppFuture
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if RouteClass::is_unrouted(request.method(), request.uri().path()) {
            let head = request.method() == Method::HEAD;
            return match self.answer_unrouted(request) {
                ObjectAnswer::Redirect(values) => {
                    let mut response = Answer::Redirect(values).into_response();
                    finish(&mut response, head);
                    AppFuture::Ready {
                        response: Some(response),
                    }
                }
                ObjectAnswer::Response(future) => *future,
            };
        }
        let mut request = request;
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let apart = RouteClass::of(request.method(), request.uri().path()).runs_apart();
        let future = self.routed.clone().call(request);
        match &self.routed_on {
            Some(runtime) if apart => AppFuture::Elsewhere {
                handle: AbortOnDropHandle::new(runtime.spawn(future)),
            },
            _ => AppFuture::Routed { future },
        }
    }

    /// The answer to a request for no route of the router ([`RouteClass::is_unrouted`]):
    /// a plain redirect as its header values, for the caller to write out, or a response
    /// (finished as the router would have: see [`finish`]).
    pub(super) fn answer_unrouted<B>(&self, request: Request<B>) -> ObjectAnswer
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (parts, body) = request.into_parts();
        // Nearly every object request is answered here, in this one call.
        match self.answer_now(&Asked::of(&parts)) {
            Some(answer) => answer,
            None => ObjectAnswer::Response(Box::new(
                self.answer_later(Request::from_parts(parts, body)),
            )),
        }
    }

    /// [`App::answer_unrouted`] for a request that needs no wait; `None` when it must
    /// wait (a presence check is due): then [`App::answer_later`] answers the request.
    pub(super) fn answer_now(&self, request: &Asked<'_>) -> Option<ObjectAnswer> {
        let head = *request.method == Method::HEAD;
        Some(match self.unrouted.now(request, Unrouted::now)? {
            Answer::Redirect(values) => ObjectAnswer::Redirect(values),
            Answer::Other(mut response) => {
                finish(&mut response, head);
                ObjectAnswer::Response(Box::new(AppFuture::Ready {
                    response: Some(response),
                }))
            }
        })
    }

    /// The answer to a request that [`App::answer_now`] found must wait.
    pub(super) fn answer_later<B>(&self, request: Request<B>) -> AppFuture
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let head = request.method() == Method::HEAD;
        AppFuture::Unrouted {
            future: self.unrouted.clone().call(request),
            head,
        }
    }
}

/// What [`App::answer_unrouted`] gives.
pub(super) enum ObjectAnswer {
    /// `307` with these headers, the CORS headers, `Content-Length: 0` and `Server`.
    Redirect(redirect::Values),
    /// Any other answer (at once or after a wait), finished. Boxed: a redirect, nearly
    /// every answer, is a tenth of its size.
    Response(Box<AppFuture>),
}

impl<B> Service<Request<B>> for App
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both ways are always ready (the router and the object handler hold no capacity;
        // budgets are taken per request, in `call`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> AppFuture {
        self.answer(request)
    }
}

/// What the listener serves a connection with. hyper's own service trait takes the
/// service by reference, where its adapter for a tower service clones the whole service
/// for each request: every clone of an `App` counts references that every connection
/// thread shares, so each request would move those counters' cache lines between cores.
impl hyper::service::Service<Request<hyper::body::Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn call(&self, request: Request<hyper::body::Incoming>) -> AppFuture {
        self.answer(request)
    }
}

pin_project_lite::pin_project! {
    /// The response of [`App`].
    #[project = AppFutureProj]
    pub enum AppFuture {
        /// From the object handler, answered at once.
        Ready { response: Option<Response> },
        /// From the object handler, after a wait.
        Unrouted {
            #[pin]
            future: Observed<UnroutedFuture>,
            head: bool,
        },
        /// From the router.
        Routed {
            #[pin]
            future: RouteFuture<Infallible>,
        },
        /// From the router, on another runtime (cancelled if this is dropped, as a
        /// request on this runtime would be).
        Elsewhere {
            #[pin]
            handle: AbortOnDropHandle<Result<Response, Infallible>>,
        },
    }
}

impl Future for AppFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AppFutureProj::Ready { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_default()))
            }
            AppFutureProj::Unrouted { future, head } => {
                let Ok(mut response) = ready!(future.poll(cx));
                finish(&mut response, *head);
                Poll::Ready(Ok(response))
            }
            AppFutureProj::Routed { future } => future.poll(cx),
            AppFutureProj::Elsewhere { handle } => Poll::Ready(match ready!(handle.poll(cx)) {
                Ok(answer) => answer,
                // A handler that panicked: the client gets a 500, not a reset.
                Err(error) => Ok(super::error::ApiError::internal(error).into_response()),
            }),
        }
    }
}

/// What the router adds to an answer of its fallback, in the same order: the length of
/// a body of known size, no body for `HEAD`, then (outside the budgets' timing) `Server`.
fn finish(response: &mut Response, head: bool) {
    if !response.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(size) = response.body().size_hint().exact() {
            // A redirect's body is empty: its length needs no formatting (nor a buffer).
            let length = if size == 0 {
                HeaderValue::from_static("0")
            } else {
                HeaderValue::from(size)
            };
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, length);
        }
    }
    if head {
        *response.body_mut() = Body::empty();
    }
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
}

/// The object handler: answers a request for no route of the router at once
/// ([`Unrouted::now`]), or, called as a service, a redirect after its presence checks.
#[derive(Clone)]
pub struct Unrouted {
    state: Arc<AppState>,
    peer: Option<SocketAddr>,
}

/// The object handler's answer (it may wait for presence checks).
pub type UnroutedFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Unrouted {
    /// The answer to `request` if it needs no wait (see [`clients::unrouted_now`]).
    fn now(&self, request: &Asked<'_>) -> Option<Answer> {
        clients::unrouted_now(&self.state, self.peer_of(request), request)
    }

    /// The connection's peer: the listener's, else what the request carries (a router
    /// served by axum's `into_make_service_with_connect_info`, or a test).
    fn peer_of(&self, request: &Asked<'_>) -> Option<SocketAddr> {
        self.peer.or_else(|| request.connect_info())
    }
}

impl<B> Service<Request<B>> for Unrouted {
    type Response = Response;
    type Error = Infallible;
    type Future = UnroutedFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> UnroutedFuture {
        // The object handler reads no body.
        let (parts, _body) = request.into_parts();
        let peer = self.peer_of(&Asked::of(&parts));
        let state = self.state.clone();
        // A call comes after `Unrouted::now` found a presence check due (see `App`).
        Box::pin(async move {
            let request = Asked::of(&parts);
            Ok(clients::redirect_after_checks(&state, peer, &request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The modules whose routers `super::router` merges, with their source.
    const ROUTERS: [(&str, &str); 7] = [
        ("services", include_str!("services.rs")),
        ("peers", include_str!("peers.rs")),
        ("health", include_str!("health.rs")),
        ("status", include_str!("status/mod.rs")),
        ("catalog", include_str!("catalog.rs")),
        ("servers", include_str!("servers.rs")),
        ("clients", include_str!("clients.rs")),
    ];

    /// Every path a router declares with `.route(...)`: a string literal, or `DISCOVERY`.
    fn declared_paths() -> Vec<String> {
        let mut paths = Vec::new();
        for (module, source) in ROUTERS {
            for call in source.split(".route(").skip(1) {
                let argument = call.trim_start();
                let path = if let Some(literal) = argument.strip_prefix('"') {
                    literal.split('"').next().unwrap_or_default()
                } else if argument.starts_with("DISCOVERY") {
                    crate::route_class::DISCOVERY
                } else if argument.starts_with('&') {
                    // `View::route`, not a router's.
                    continue;
                } else {
                    panic!("{module}: a route whose path this test cannot read: {argument:.40}");
                };
                paths.push(path.to_string());
            }
        }
        paths
    }

    #[test]
    fn every_router_module_is_read() {
        let merged: Vec<&str> = include_str!("mod.rs")
            .split(".merge(")
            .skip(1)
            .filter_map(|call| call.split("::router()").next())
            .filter(|name| !name.contains(|c: char| !c.is_alphanumeric() && c != '_'))
            .collect();
        let read: Vec<&str> = ROUTERS.iter().map(|(module, _)| *module).collect();
        assert_eq!(merged, read);
    }

    #[test]
    fn no_declared_route_is_taken_for_unrouted() {
        let paths = declared_paths();
        assert!(paths.len() >= 20, "{paths:?}");
        let methods = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PROPFIND",
        ]
        .map(|m| Method::from_bytes(m.as_bytes()).unwrap());
        for path in &paths {
            for method in &methods {
                assert!(
                    !RouteClass::is_unrouted(method, path),
                    "{method} {path} is routed"
                );
            }
        }
        // And object paths are unrouted, in every form.
        for path in [
            "/ns/obj",
            "/api/v1.0/director/object/ns/obj",
            "/api/v1.0/director/origin/ns/obj",
            "/health/",
            "/api/v9/unknown",
        ] {
            assert!(RouteClass::is_unrouted(&Method::GET, path), "{path}");
        }
    }
}
