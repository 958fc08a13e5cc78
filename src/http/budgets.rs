//! Concurrency budgets per route class, so client redirects never wait behind ingest.
//!
//! Every request is classified by method and path into a [`RouteClass`] (the one
//! classifier, in `crate::route_class`); each class draws on a [`Budget`] of requests in
//! flight, and a request beyond its budget is shed at once with 503 + `Retry-After`. Requests that read a body (registrations, forwards,
//! catch-up fetches) are also limited per client address, so one client trickling bodies
//! over many connections cannot take the whole ingest budget from the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::route_class::{Budget, RouteClass};

/// How many requests of each class may be in flight.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    /// Client redirects.
    pub redirect: usize,
    /// Requests that read a body.
    pub ingest: usize,
    /// Listings, digests, metrics, the status page.
    pub bulk: usize,
    /// Body-reading requests in flight from one client address.
    pub ingest_per_client: usize,
}

/// The budgets of one director, shared by every request (cheap to clone).
#[derive(Debug, Clone)]
pub struct Budgets {
    redirect: Arc<Limit>,
    ingest: Arc<Limit>,
    bulk: Arc<Limit>,
    per_client: Arc<PerClient>,
}

impl Budgets {
    /// Budgets with these limits.
    pub fn new(limits: BudgetLimits) -> Self {
        Self {
            redirect: Arc::new(Limit::new(limits.redirect)),
            ingest: Arc::new(Limit::new(limits.ingest)),
            bulk: Arc::new(Limit::new(limits.bulk)),
            per_client: Arc::new(PerClient {
                limit: limits.ingest_per_client,
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn limit(&self, budget: Budget) -> &Arc<Limit> {
        match budget {
            Budget::Redirect => &self.redirect,
            Budget::Ingest => &self.ingest,
            Budget::Bulk => &self.bulk,
        }
    }
}

/// Requests of one class in flight, against its limit. A place is only ever tried for,
/// never waited for, so taking one and giving it back are one atomic operation each,
/// with no lock: every redirect takes one (a semaphore's release takes its waiters' lock,
/// though nobody waits).
#[derive(Debug)]
struct Limit {
    limit: usize,
    in_flight: AtomicUsize,
}

impl Limit {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// True while every place is taken.
    fn is_full(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= self.limit
    }

    /// A place, if fewer than `limit` are taken.
    fn enter(self: &Arc<Self>) -> Option<Place> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()?;
        Some(Place(Arc::clone(self)))
    }
}

/// One place in a [`Limit`]; given back on drop.
struct Place(Arc<Limit>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Body-reading requests in flight per client address. The map is touched only by ingest
/// requests (never by redirects), twice per request, for a few instructions each.
#[derive(Debug)]
struct PerClient {
    limit: usize,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
}

impl PerClient {
    fn enter(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let count = in_flight.entry(client).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            owner: self.clone(),
            client,
        })
    }
}

/// One request's place in its client's share; given back on drop.
struct ClientSlot {
    owner: Arc<PerClient>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut in_flight = self
            .owner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = in_flight.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.client);
            }
        }
    }
}

/// A request's place in its class budget (and, for ingest, in its client's share), held
/// for as long as the handler runs; given back on drop.
pub struct Admitted {
    _place: Option<Place>,
    _slot: Option<ClientSlot>,
}

impl Budgets {
    /// Takes a place for `request` (of `class`) or answers why not: 503 when the class is
    /// at its limit, 429 when an ingest client is at its share.
    pub fn admit<B>(&self, class: RouteClass, request: &Request<B>) -> Result<Admitted, Shed> {
        let Some(budget) = class.budget() else {
            return Ok(Admitted {
                _place: None,
                _slot: None,
            });
        };
        let Some(place) = self.limit(budget).enter() else {
            return Err(Shed::overloaded(budget));
        };
        let slot = if budget == Budget::Ingest {
            match request.extensions().get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(peer)) => match self.per_client.enter(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        return Err(Shed(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too_many_requests",
                            format!(
                                "{} has {} requests with bodies in flight already; retry shortly",
                                peer.ip(),
                                self.per_client.limit
                            ),
                        ));
                    }
                },
                None => None,
            }
        } else {
            None
        };
        Ok(Admitted {
            _place: Some(place),
            _slot: slot,
        })
    }

    /// Whether a request of `class` answered at once (in one poll, without waiting) may
    /// run: 503 while its class is at its limit, as [`Budgets::admit`] answers. It takes
    /// no place: it is never in flight while its thread serves another request, so it
    /// cannot crowd the others out, and taking one would write to a counter that every
    /// connection thread shares, twice per request.
    pub fn admit_now(&self, class: RouteClass) -> Result<(), Shed> {
        match class.budget() {
            Some(budget) if self.limit(budget).is_full() => Err(Shed::overloaded(budget)),
            _ => Ok(()),
        }
    }
}

/// Why a request was shed; its response is a JSON error with `Retry-After: 1`.
pub struct Shed(StatusCode, &'static str, String);

impl Shed {
    /// 503: `budget` is at its limit.
    fn overloaded(budget: Budget) -> Self {
        Shed(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "the director is at its limit of {} requests in flight; retry shortly",
                budget.as_str()
            ),
        )
    }
}

impl IntoResponse for Shed {
    fn into_response(self) -> Response {
        let Shed(status, error, detail) = self;
        let mut response = ApiError::new(status, error, detail).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_limit_is_never_passed_and_every_place_comes_back() {
        let limit = Arc::new(Limit::new(3));
        let held: Vec<Place> = (0..3).map(|_| limit.enter().unwrap()).collect();
        assert!(limit.enter().is_none(), "a fourth place");
        drop(held);
        // Eight threads taking and giving back places at once: never more than 3 held.
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limit, most) = (limit.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(place) = limit.enter() {
                            let now = limit.in_flight.load(Ordering::Acquire);
                            most.fetch_max(now, Ordering::Relaxed);
                            drop(place);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(most.load(Ordering::Relaxed) <= 3);
        assert_eq!(limit.in_flight.load(Ordering::Acquire), 0);
        let again: Vec<Place> = (0..3).filter_map(|_| limit.enter()).collect();
        assert_eq!(again.len(), 3);
        assert!(limit.enter().is_none());
    }

    #[test]
    fn an_answer_at_once_is_shed_only_while_its_class_is_full() {
        let budgets = Budgets::new(BudgetLimits {
            redirect: 2,
            ingest: 2,
            bulk: 2,
            ingest_per_client: 2,
        });
        let class = RouteClass::of(&axum::http::Method::GET, "/ns/obj");
        assert_eq!(class.budget(), Some(Budget::Redirect));
        assert!(budgets.admit_now(class).is_ok());
        // Answers at once take no place: any number of them leave the budget whole.
        for _ in 0..10 {
            assert!(budgets.admit_now(class).is_ok());
        }
        assert_eq!(budgets.redirect.in_flight.load(Ordering::Acquire), 0);
        // Redirects that wait (presence checks) hold both places: the class is full.
        let held: Vec<Place> = (0..2).filter_map(|_| budgets.redirect.enter()).collect();
        assert_eq!(held.len(), 2);
        let shed = budgets.admit_now(class).expect_err("shed while full");
        assert_eq!(shed.0, StatusCode::SERVICE_UNAVAILABLE);
        // Another class is not affected, and the place given back lets answers through.
        let bulk = RouteClass::of(&axum::http::Method::GET, "/api/v1.0/director/ads");
        assert!(budgets.admit_now(bulk).is_ok());
        drop(held);
        assert!(budgets.admit_now(class).is_ok());
    }

    #[test]
    fn a_client_share_is_given_back_when_its_requests_end() {
        let per_client = Arc::new(PerClient {
            limit: 2,
            in_flight: Mutex::new(HashMap::new()),
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = per_client.enter(a).unwrap();
        let second = per_client.enter(a).unwrap();
        assert!(per_client.enter(a).is_none(), "a third request from a");
        assert!(
            per_client.enter(b).is_some(),
            "another client is not affected"
        );
        drop(first);
        assert!(per_client.enter(a).is_some());
        drop(second);
        assert!(per_client.in_flight.lock().unwrap().is_empty());
    }
}
