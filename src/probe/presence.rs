//! Object presence: which candidate servers hold an object, asked with `HEAD` only when the
//! route needs it, and remembered briefly (present and absent answers have their own TTLs).
//!
//! Asked when (as Pelican's director stats): an origin read (or a read with no cache) in a
//! namespace served by several origins (or by one, with `presence.single_origin`), and a
//! read with `?prefercached` (caches, asked `only-if-cached`). Never for writes, listings
//! (`PROPFIND`), `?skipstat`, or a namespace without public reads when the request carries
//! no token. At most `presence.fan_out` servers of each kind are asked per request, the
//! best-ranked first, all at once, each within `presence.timeout`; past
//! `presence.max_in_flight` `HEAD`s over all requests, a request is routed unchecked.
//! Concurrent requests for one object share each server's `HEAD` (single flight).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::http::HttpProber;
use crate::ad::{AdKey, ServerKind};
use crate::config::PresenceConfig;
use crate::flight::Flights;
use crate::paths::encode_path;
use crate::routing::signals::{KeyBuf, Presence, Signals};
use crate::routing::{Candidate, Purpose, Route};

/// One cached answer.
#[derive(Debug, Clone)]
struct Answer {
    key: AdKey,
    presence: Presence,
    until: Instant,
}

/// Answers by object path; each row is short (the servers of one namespace).
type Answers = imbl::HashMap<String, Arc<Vec<Answer>>>;

/// Cached presence answers, read lock-free; writers swap in a new map. Checks in the
/// air are shared: concurrent requests for one object at one server wait for one `HEAD`.
#[derive(Debug)]
pub struct PresenceCache {
    answers: ArcSwap<Answers>,
    config: PresenceConfig,
    /// `HEAD`s in the air by (server, object path): at most one each. Bounded by the
    /// checks in progress (`presence.max_in_flight`, see `Probes::prepare`).
    flights: Flights<(AdKey, String), Presence>,
}

impl PresenceCache {
    /// An empty cache with the TTLs and capacity of `config`.
    pub fn new(config: PresenceConfig) -> Self {
        Self {
            answers: ArcSwap::default(),
            config,
            flights: Flights::default(),
        }
    }

    /// The cached answer for `key` and `path`, `Unknown` if none or expired.
    pub fn get(&self, key: &AdKey, path: &str) -> Presence {
        self.remembered(path)
            .map_or(Presence::Unknown, |answers| answers.of(key))
    }

    /// The cached answers for `path` as one lookup: each candidate's is then found by
    /// [`Remembered::of`]. `None` when nothing is cached for it. Asked on every read:
    /// no hashing of the path while nothing is cached, no clock read unless answers for
    /// the path are there.
    pub fn remembered(&self, path: &str) -> Option<Remembered> {
        let answers = self.answers.load();
        if answers.is_empty() {
            return None;
        }
        answers.get(path).map(|row| Remembered {
            row: Arc::clone(row),
            now: Instant::now(),
        })
    }

    /// Remembers answers for `path` (unknown ones are not kept). When full, expired
    /// answers are dropped first; if it is still full, new answers are not kept.
    pub fn put(&self, path: &str, answers: &[(AdKey, Presence)]) {
        let now = Instant::now();
        let fresh: Vec<Answer> = answers
            .iter()
            .filter_map(|(key, presence)| {
                let ttl = match presence {
                    Presence::Present => self.config.present_ttl,
                    Presence::Absent => self.config.absent_ttl,
                    Presence::Unknown => return None,
                };
                Some(Answer {
                    key: key.clone(),
                    presence: *presence,
                    until: now + ttl,
                })
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.answers.rcu(|current| {
            let mut next = Answers::clone(current);
            if next.len() >= self.config.capacity && !next.contains_key(path) {
                next.retain(|_, row| row.iter().any(|a| a.until > now));
                if next.len() >= self.config.capacity {
                    return next;
                }
            }
            let mut row: Vec<Answer> = next
                .get(path)
                .map(|row| {
                    row.iter()
                        .filter(|a| a.until > now && !fresh.iter().any(|f| f.key == a.key))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            row.extend(fresh.iter().cloned());
            next.insert(path.to_string(), Arc::new(row));
            next
        });
    }

    /// Presence checks in the air, by (server, object path).
    pub fn flights(&self) -> &Flights<(AdKey, String), Presence> {
        &self.flights
    }

    /// The settings this cache was built with.
    pub fn config(&self) -> &PresenceConfig {
        &self.config
    }

    /// Number of objects with answers held (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.answers.load().len()
    }

    /// True if no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answers cached for one object path, read at one moment.
pub struct Remembered {
    row: Arc<Vec<Answer>>,
    now: Instant,
}

impl Remembered {
    /// The answer for the server `key`, `Unknown` if none or expired.
    pub fn of(&self, key: &AdKey) -> Presence {
        self.row
            .iter()
            .find(|a| &a.key == key)
            .filter(|a| a.until > self.now)
            .map_or(Presence::Unknown, |a| a.presence)
    }
}

/// What the request asks for, as far as presence checks care.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The object path (clean).
    pub path: &'a str,
    /// Read, origin read or write.
    pub purpose: Purpose,
    /// False for `PROPFIND` (listings are never checked).
    pub is_object_read: bool,
    /// The query string (flags `prefercached`, `skipstat`, token `authz`).
    pub query: &'a str,
    /// The bearer token of the request, if any (`Authorization` header).
    pub bearer: Option<&'a str>,
}

impl<'a> Ask<'a> {
    /// What a redirect request for `path` asks: its `method`, its `Authorization` header
    /// (if any), and `query` without Skein's own flags.
    pub fn of(
        method: &axum::http::Method,
        authorization: Option<&'a str>,
        path: &'a str,
        purpose: Purpose,
        query: &'a str,
    ) -> Self {
        let bearer = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        Ask {
            path,
            purpose,
            is_object_read: is_object_read(method),
            query,
            bearer,
        }
    }

    /// True if the object's presence counts for this request: a read of an object, not a
    /// write or a listing.
    pub fn object_presence(&self) -> bool {
        self.is_object_read && self.purpose != Purpose::Write
    }

    /// [`Ask::object_presence`] of a request with `method` for `purpose`.
    pub fn counts_presence(method: &axum::http::Method, purpose: Purpose) -> bool {
        is_object_read(method) && purpose != Purpose::Write
    }

    fn flag(&self, name: &str) -> bool {
        // Most redirects have no query left once the director's own flags are taken out.
        !self.query.is_empty()
            && self
                .query
                .split('&')
                .any(|pair| pair == name || pair.split_once('=').is_some_and(|(k, _)| k == name))
    }

    fn token(&self) -> Option<&str> {
        self.bearer.or_else(|| {
            self.query
                .split('&')
                .find_map(|pair| pair.strip_prefix("authz="))
                .filter(|t| !t.is_empty())
        })
    }
}

/// `GET` and `HEAD` read an object (`PROPFIND` lists, `PUT` and `DELETE` write).
fn is_object_read(method: &axum::http::Method) -> bool {
    matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
}

fn key_of(c: &Candidate) -> AdKey {
    AdKey {
        kind: c.kind,
        name: c.name().to_string(),
    }
}

/// The servers of `route` to ask for `ask`, best first, at most `fan_out` of each kind.
pub fn to_check<'r, 'v>(
    config: &PresenceConfig,
    route: &'r Route<'v>,
    ask: &Ask,
) -> Vec<&'r Candidate<'v>> {
    if !config.enabled || !ask.is_object_read || ask.purpose == Purpose::Write {
        return Vec::new();
    }
    let of = |kind| route.candidates.iter().filter(move |c| c.kind == kind);
    let caches = of(ServerKind::Cache).count();
    let origins = of(ServerKind::Origin).count();
    let origins_matter = ask.purpose == Purpose::OriginRead || caches == 0;
    let check_origins = origins_matter && (origins >= 2 || (origins == 1 && config.single_origin));
    let may_check_caches = config.caches && ask.purpose == Purpose::Read && caches > 0;
    // The query is read only when the route has servers to check (most redirects do not).
    if !check_origins && !may_check_caches {
        return Vec::new();
    }
    if ask.flag("skipstat") || (!route.terms().caps.public_reads && ask.token().is_none()) {
        return Vec::new();
    }
    let mut picked = Vec::new();
    if check_origins {
        picked.extend(of(ServerKind::Origin).take(config.fan_out));
    }
    if may_check_caches && ask.flag("prefercached") {
        picked.extend(of(ServerKind::Cache).take(config.fan_out));
    }
    picked
}

/// Asks the servers `cache` has no fresh answer for, all at once, and caches the answers.
/// Returns the fresh answers.
pub async fn check(
    prober: &HttpProber,
    cache: &PresenceCache,
    servers: &[&Candidate<'_>],
    ask: &Ask<'_>,
) -> Vec<(AdKey, Presence)> {
    let stale: Vec<&Candidate> = servers
        .iter()
        .copied()
        .filter(|c| cache.get(&key_of(c), ask.path) == Presence::Unknown)
        .collect();
    if stale.is_empty() {
        return Vec::new();
    }
    let encoded = encode_path(ask.path);
    let token = ask.token();
    let timeout = cache.config.timeout;
    // `to_check` caps the list at `fan_out` per kind, so all are asked at once; a check
    // of the same object at the same server already in the air is joined, not repeated.
    let mut asks = Vec::with_capacity(stale.len());
    for c in stale {
        let url = format!("{}{encoded}", c.data_url().trim_end_matches('/'));
        let key = key_of(c);
        let kind = c.kind;
        let (prober, token) = (prober.clone(), token.map(str::to_owned));
        let flight = (key.clone(), ask.path.to_owned());
        asks.push(async move {
            let head =
                move || async move { prober.presence(&url, kind, token.as_deref(), timeout).await };
            (key, cache.flights.run(flight, head).await)
        });
    }
    let answers: Vec<(AdKey, Presence)> = futures::future::join_all(asks).await;
    cache.put(ask.path, &answers);
    answers
}

/// Every origin of the route is known to lack the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllAbsent;

/// Orders `route` by what the signals say (stable, so the ranking's order stands within
/// each class): servers down or origins lacking the object go last, servers known to hold
/// it first. `object` is the path whose presence counts (`None` for writes and listings,
/// where only health does). An origin read (or a read with no cache) whose origins all
/// lack the object is [`AllAbsent`].
pub fn order(
    route: &mut Route,
    signals: &dyn Signals,
    object: Option<&str>,
    purpose: Purpose,
) -> Result<(), AllAbsent> {
    // rank = (demoted, not known to hold it).
    let mut key = KeyBuf::default();
    let mut ranked: Vec<((bool, bool), Presence, Candidate)> = route
        .candidates
        .drain(..)
        .map(|c| {
            let key = key.of(c.kind, c.name());
            let presence = object.map_or(Presence::Unknown, |path| signals.presence(key, path));
            let down = signals.health(key).is_some_and(|h| !h.up);
            let demoted = down || (c.kind == ServerKind::Origin && presence == Presence::Absent);
            ((demoted, presence != Presence::Present), presence, c)
        })
        .collect();
    ranked.sort_by_key(|(rank, _, _)| *rank);
    route.candidates = ranked.into_iter().map(|(_, _, c)| c).collect();
    if all_absent(route, signals, object, purpose) {
        Err(AllAbsent)
    } else {
        Ok(())
    }
}

/// True if `object` counts and every server that could take the request lacks it: an
/// origin read (or a read with no cache) whose origins all lack the object. A read with
/// a cache is never all absent, so it looks nothing up.
pub fn all_absent(
    route: &Route,
    signals: &dyn Signals,
    object: Option<&str>,
    purpose: Purpose,
) -> bool {
    let Some(path) = object else {
        return false;
    };
    let origins_only = purpose != Purpose::Read
        || route
            .candidates
            .iter()
            .all(|c| c.kind == ServerKind::Origin);
    if !origins_only {
        return false;
    }
    let mut key = KeyBuf::default();
    route
        .candidates
        .iter()
        .all(|c| signals.presence(key.of(c.kind, c.name()), path) == Presence::Absent)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::fixtures;
    use crate::routing::signals::ServerHealth;

    fn config() -> PresenceConfig {
        PresenceConfig {
            enabled: true,
            single_origin: false,
            caches: true,
            timeout: Duration::from_secs(1),
            fan_out: 2,
            present_ttl: Duration::from_secs(60),
            absent_ttl: Duration::from_secs(10),
            capacity: 2,
            max_in_flight: 16,
        }
    }

    fn key(kind: ServerKind, name: &str) -> AdKey {
        AdKey {
            kind,
            name: name.into(),
        }
    }

    fn candidate(kind: ServerKind, name: &str) -> Candidate<'static> {
        fixtures::candidate(name, kind)
    }

    fn route(candidates: &[(ServerKind, &str)]) -> Route<'static> {
        fixtures::route_in(
            fixtures::public_namespace("/ns"),
            candidates.iter().map(|(k, n)| candidate(*k, n)).collect(),
        )
    }

    fn ask<'a>(purpose: Purpose, query: &'a str) -> Ask<'a> {
        Ask {
            path: "/ns/obj",
            purpose,
            is_object_read: true,
            query,
            bearer: None,
        }
    }

    const O: ServerKind = ServerKind::Origin;
    const C: ServerKind = ServerKind::Cache;

    /// Concurrent checks of one object at one server send one `HEAD` (counted by the
    /// server, which answers only once every check has joined); another object is its
    /// own `HEAD`; nothing stays in the air afterwards.
    #[tokio::test]
    async fn concurrent_checks_of_one_object_share_one_head() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let heads = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let app = {
            let (heads, release) = (heads.clone(), release.clone());
            axum::Router::new().fallback(move || {
                let (heads, release) = (heads.clone(), release.clone());
                async move {
                    heads.fetch_add(1, Ordering::SeqCst);
                    let _held = release.acquire().await;
                    axum::http::StatusCode::OK
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cache = PresenceCache::new(PresenceConfig {
            timeout: Duration::from_secs(30),
            ..config()
        });
        let prober = HttpProber::new(reqwest::Client::new());
        let origin = fixtures::candidate_at("o1", O, Some(&format!("http://{addr}")));
        let servers = [&origin];
        let asked = ask(Purpose::OriginRead, "");
        let checks =
            futures::future::join_all((0..16).map(|_| check(&prober, &cache, &servers, &asked)));
        let flight = (key(O, "o1"), "/ns/obj".to_string());
        let all_aboard = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while cache.flights().aboard(&flight) < 16 {
                assert!(Instant::now() < deadline, "checks never joined");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            release.add_permits(1_000);
        };
        let (answers, ()) = futures::join!(checks, all_aboard);
        for answer in answers {
            assert_eq!(answer, vec![(key(O, "o1"), Presence::Present)]);
        }
        assert_eq!(
            heads.load(Ordering::SeqCst),
            1,
            "one HEAD for sixteen checks"
        );
        assert!(cache.flights().is_empty());
        let other = Ask {
            path: "/ns/other",
            ..asked
        };
        let answer = check(&prober, &cache, &servers, &other).await;
        assert_eq!(answer, vec![(key(O, "o1"), Presence::Present)]);
        assert_eq!(heads.load(Ordering::SeqCst), 2);
        assert!(cache.flights().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_by_their_own_ttl() {
        let cache = PresenceCache::new(config());
        let (a, b) = (key(O, "a"), key(O, "b"));
        cache.put(
            "/ns/x",
            &[
                (a.clone(), Presence::Present),
                (b.clone(), Presence::Absent),
                (key(O, "c"), Presence::Unknown),
            ],
        );
        assert_eq!(cache.get(&a, "/ns/x"), Presence::Present);
        assert_eq!(cache.get(&b, "/ns/x"), Presence::Absent);
        assert_eq!(cache.get(&key(O, "c"), "/ns/x"), Presence::Unknown);
        assert_eq!(cache.get(&a, "/ns/y"), Presence::Unknown);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            cache.get(&b, "/ns/x"),
            Presence::Unknown,
            "absent TTL passed"
        );
        assert_eq!(cache.get(&a, "/ns/x"), Presence::Present);
        // A fresh answer replaces the old one for its server only.
        cache.put("/ns/x", &[(b.clone(), Presence::Present)]);
        assert_eq!(cache.get(&b, "/ns/x"), Presence::Present);
        assert_eq!(cache.get(&a, "/ns/x"), Presence::Present);
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(
            cache.get(&a, "/ns/x"),
            Presence::Unknown,
            "present TTL passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_answers_then_refuses_new_ones() {
        let cache = PresenceCache::new(config());
        let a = key(O, "a");
        cache.put("/1", &[(a.clone(), Presence::Absent)]);
        cache.put("/2", &[(a.clone(), Presence::Present)]);
        cache.put("/3", &[(a.clone(), Presence::Present)]);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&a, "/3"), Presence::Unknown, "full: not kept");
        tokio::time::advance(Duration::from_secs(11)).await;
        cache.put("/3", &[(a.clone(), Presence::Present)]);
        assert_eq!(
            cache.get(&a, "/3"),
            Presence::Present,
            "room made by expiry"
        );
        assert_eq!(cache.len(), 2);
    }

    fn names<'v>(picked: Vec<&Candidate<'v>>) -> Vec<&'v str> {
        picked.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn checks_only_where_presence_matters() {
        let c = config();
        let two = route(&[(O, "o1"), (O, "o2"), (O, "o3")]);
        let one = route(&[(O, "o1")]);
        let cached = route(&[(C, "c1"), (C, "c2"), (C, "c3"), (O, "o1"), (O, "o2")]);
        // Several origins: the best `fan_out` of them.
        assert_eq!(
            names(to_check(&c, &two, &ask(Purpose::OriginRead, ""))),
            ["o1", "o2"]
        );
        assert_eq!(
            names(to_check(&c, &two, &ask(Purpose::Read, ""))),
            ["o1", "o2"]
        );
        // One origin: assumed to hold it, unless configured otherwise.
        assert!(to_check(&c, &one, &ask(Purpose::OriginRead, "")).is_empty());
        let single = PresenceConfig {
            single_origin: true,
            ..config()
        };
        assert_eq!(
            names(to_check(&single, &one, &ask(Purpose::OriginRead, ""))),
            ["o1"]
        );
        // Reads through caches: the caches fetch; only ?prefercached asks them.
        assert!(to_check(&c, &cached, &ask(Purpose::Read, "")).is_empty());
        assert_eq!(
            names(to_check(
                &c,
                &cached,
                &ask(Purpose::Read, "a=1&prefercached")
            )),
            ["c1", "c2"]
        );
        // Never for writes, listings, ?skipstat, or off.
        assert!(to_check(&c, &two, &ask(Purpose::Write, "")).is_empty());
        let listing = Ask {
            is_object_read: false,
            ..ask(Purpose::OriginRead, "")
        };
        assert!(to_check(&c, &two, &listing).is_empty());
        assert!(to_check(&c, &two, &ask(Purpose::OriginRead, "skipstat")).is_empty());
        let off = PresenceConfig {
            enabled: false,
            ..config()
        };
        assert!(to_check(&off, &two, &ask(Purpose::OriginRead, "")).is_empty());
        // A private namespace only with a token to pass on.
        let mut namespace = two.namespace().clone();
        namespace.caps.public_reads = false;
        let private = fixtures::route_in(namespace, two.candidates.clone());
        assert!(to_check(&c, &private, &ask(Purpose::OriginRead, "")).is_empty());
        let with_token = ask(Purpose::OriginRead, "authz=tok");
        assert_eq!(with_token.token(), Some("tok"));
        assert_eq!(to_check(&c, &private, &with_token).len(), 2);
    }

    #[derive(Default)]
    struct Fake {
        down: Vec<&'static str>,
        presence: HashMap<&'static str, Presence>,
    }

    impl Signals for Fake {
        fn health(&self, key: &AdKey) -> Option<ServerHealth> {
            Some(ServerHealth {
                up: !self.down.contains(&key.name.as_str()),
                ewma: 1.0,
                latency_ms: 1.0,
                checked_at: 0,
            })
        }

        fn presence(&self, key: &AdKey, _path: &str) -> Presence {
            self.presence
                .get(key.name.as_str())
                .copied()
                .unwrap_or_default()
        }
    }

    fn order_of<'v>(r: &Route<'v>) -> Vec<&'v str> {
        r.candidates.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn down_and_absent_go_last_present_first() {
        let signals = Fake {
            down: vec!["c1"],
            presence: HashMap::from([("o1", Presence::Absent), ("o3", Presence::Present)]),
        };
        let mut r = route(&[(C, "c1"), (C, "c2"), (O, "o1"), (O, "o2"), (O, "o3")]);
        assert_eq!(
            order(&mut r, &signals, Some("/ns/obj"), Purpose::Read),
            Ok(())
        );
        assert_eq!(order_of(&r), ["o3", "c2", "o2", "c1", "o1"]);
        // Caches known to hold it come before the others, which keep their order.
        let signals = Fake {
            down: vec![],
            presence: HashMap::from([("c3", Presence::Present), ("c1", Presence::Absent)]),
        };
        let mut r = route(&[(C, "c1"), (C, "c2"), (C, "c3"), (O, "o1")]);
        order(&mut r, &signals, Some("/ns/obj"), Purpose::Read).unwrap();
        assert_eq!(order_of(&r), ["c3", "c1", "c2", "o1"]);
    }

    #[test]
    fn every_origin_lacking_the_object_is_all_absent() {
        let signals = Fake {
            down: vec![],
            presence: HashMap::from([("o1", Presence::Absent), ("o2", Presence::Absent)]),
        };
        let mut r = route(&[(O, "o1"), (O, "o2")]);
        assert_eq!(
            order(&mut r, &signals, Some("/ns/obj"), Purpose::OriginRead),
            Err(AllAbsent)
        );
        let mut r = route(&[(O, "o1"), (O, "o2")]);
        assert_eq!(
            order(&mut r, &signals, Some("/ns/obj"), Purpose::Read),
            Err(AllAbsent)
        );
        // Through a cache, or with one origin unknown, it is not decided here.
        let mut r = route(&[(C, "c1"), (O, "o1"), (O, "o2")]);
        assert_eq!(
            order(&mut r, &signals, Some("/ns/obj"), Purpose::Read),
            Ok(())
        );
        let mut r = route(&[(O, "o1"), (O, "o2"), (O, "o3")]);
        assert_eq!(
            order(&mut r, &signals, Some("/ns/obj"), Purpose::OriginRead),
            Ok(())
        );
        assert_eq!(order_of(&r), ["o3", "o1", "o2"]);
        // Writes and listings: presence does not count.
        let mut r = route(&[(O, "o1"), (O, "o2")]);
        assert_eq!(order(&mut r, &signals, None, Purpose::Write), Ok(()));
        assert_eq!(order_of(&r), ["o1", "o2"]);
    }
}
