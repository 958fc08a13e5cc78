//! Every request's way in: a place in its route class's budget (shed at once beyond it),
//! then the duration histogram by route class and the optional access log (one line per
//! request: method, path class, status, duration).
//!
//! One plain service around the router rather than `from_fn` middleware, which boxes a
//! future and a copy of the inner stack on every request. A request answered at once
//! ([`Observe::now`], nearly every redirect) costs two clock reads, one read of its
//! budget and the histogram's per-thread adds; one that waits takes a place and a
//! reference count too. The path itself is never logged (it may name private objects),
//! only its class.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::AppState;
use super::asked::Asked;
use super::budgets::{Admitted, Budgets};
use crate::route_class::RouteClass;

/// What [`Observe::now`] answers with: a response, or something standing for one whose
/// status is known.
pub(super) trait Answered: From<Response> {
    /// The status it answers with.
    fn status(&self) -> StatusCode;
}

impl Answered for Response {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
}

/// What every request's observation shares.
struct Shared {
    budgets: Budgets,
    state: Arc<AppState>,
}

/// Wraps a service in [`Observe`] (every service it wraps shares its budgets).
#[derive(Clone)]
pub(super) struct ObserveLayer(Arc<Shared>);

impl ObserveLayer {
    /// Budgets from `budgets`; metrics and the access-log switch from `state`.
    pub(super) fn new(budgets: Budgets, state: Arc<AppState>) -> Self {
        Self(Arc::new(Shared { budgets, state }))
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// Admits, times and logs each request to `inner`.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Observe<S> {
    /// The wrapped service.
    pub(super) fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped service.
    pub(super) fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Answers `request` at once with `answer` (given the wrapped service), observed as a
    /// call would be: shed if its class is at its limit, then timed and logged. `None`
    /// when `answer` cannot answer without waiting: the request is then to be called.
    ///
    /// Most redirects are answered so, by reference: no future, no place taken in the
    /// budget ([`Budgets::admit_now`]) and nothing shared is cloned, where a call clones
    /// the service (hyper's tower adapter does, per request) and this layer's state.
    pub(super) fn now<A: Answered>(
        &self,
        request: &Asked<'_>,
        answer: impl FnOnce(&S, &Asked<'_>) -> Option<A>,
    ) -> Option<A> {
        let class = RouteClass::of(request.method, request.path());
        if let Err(shed) = self.shared.budgets.admit_now(class) {
            return Some(A::from(shed.into_response()));
        }
        let began = Instant::now();
        let answered = answer(&self.inner, request)?;
        self.shared
            .record(class, request.method, answered.status(), began.elapsed());
        Some(answered)
    }
}

impl Shared {
    /// A request of `class` answered with `response` after `elapsed`: the duration
    /// histogram, and the access log if it is on.
    fn record(&self, class: RouteClass, method: &Method, status: StatusCode, elapsed: Duration) {
        let state = &self.state;
        state.metrics.request(class, elapsed);
        if state.access_log.load(Ordering::Relaxed) {
            tracing::info!(
                target: "skein::access",
                method = %method,
                class = class.as_str(),
                status = status.as_u16(),
                duration_us = elapsed.as_micros() as u64,
                "request"
            );
        }
    }
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let class = RouteClass::of(request.method(), request.uri().path());
        let admitted = match self.shared.budgets.admit(class, &request) {
            Ok(admitted) => admitted,
            // Shed before the handler: neither timed nor logged.
            Err(shed) => {
                return Observed::Shed {
                    response: Some(shed.into_response()),
                };
            }
        };
        let began = Instant::now();
        let method = request.method().clone();
        Observed::Running {
            future: self.inner.call(request),
            admitted: Some(admitted),
            began,
            class,
            method,
            shared: self.shared.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`Observe`].
    #[project = ObservedProj]
    pub enum Observed<F> {
        /// Shed by its budget.
        Shed { response: Option<Response> },
        /// Let through: the handler's future, and what to record when it is done.
        Running {
            #[pin]
            future: F,
            admitted: Option<Admitted>,
            began: Instant,
            class: RouteClass,
            method: Method,
            shared: Arc<Shared>,
        },
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ObservedProj::Shed { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
            ObservedProj::Running {
                future,
                admitted,
                began,
                class,
                method,
                shared,
            } => {
                let response = match ready!(future.poll(cx)) {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                // The budget place is given back as soon as the handler is done.
                drop(admitted.take());
                shared.record(*class, method, response.status(), began.elapsed());
                Poll::Ready(Ok(response))
            }
        }
    }
}
