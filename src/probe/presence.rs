//! Object presence: which candidate servers hold an object, asked with `HEAD` only when the
//! route needs it, and remembered briefly (present and absent answers have their own TTLs).
//!
//! Asked when (as Pelican's director stats): an origin read (or a read with no cache) in a
//! namespace served by several origins (or by one, with `presence.single_origin`), and a
//! read with `?prefercached` (caches, asked `only-if-cached`). Never for writes, listings
//! (`PROPFIND`), `?skipstat`, or a namespace without public reads when the request carries
//! no token. At most `presence.fan_out` servers of each kind are asked per request, the
//! best-ranked first, all at once, each within `presence.timeout`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::http::HttpProber;
use crate::ad::{AdKey, ServerKind};
use crate::config::PresenceConfig;
use crate::paths::encode_path;
use crate::routing::signals::{Presence, Signals};
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

/// Cached presence answers, read lock-free; writers swap in a new map.
#[derive(Debug)]
pub struct PresenceCache {
    answers: ArcSwap<Answers>,
    config: PresenceConfig,
}

impl PresenceCache {
    /// An empty cache with the TTLs and capacity of `config`.
    pub fn new(config: PresenceConfig) -> Self {
        Self {
            answers: ArcSwap::default(),
            config,
        }
    }

    /// The cached answer for `key` and `path`, `Unknown` if none or expired.
    pub fn get(&self, key: &AdKey, path: &str) -> Presence {
        let now = Instant::now();
        self.answers
            .load()
            .get(path)
            .and_then(|row| row.iter().find(|a| &a.key == key && a.until > now))
            .map_or(Presence::Unknown, |a| a.presence)
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
    /// What `request` (a redirect request for `path`) asks; `query` without Skein's own flags.
    pub fn of(
        request: &'a axum::http::request::Parts,
        path: &'a str,
        purpose: Purpose,
        query: &'a str,
    ) -> Self {
        let bearer = request
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        Ask {
            path,
            purpose,
            is_object_read: matches!(
                request.method,
                axum::http::Method::GET | axum::http::Method::HEAD
            ),
            query,
            bearer,
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.query
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

fn key_of(c: &Candidate) -> AdKey {
    AdKey {
        kind: c.kind,
        name: c.name.clone(),
    }
}

/// The servers of `route` to ask for `ask`, best first, at most `fan_out` of each kind.
pub fn to_check<'r>(config: &PresenceConfig, route: &'r Route, ask: &Ask) -> Vec<&'r Candidate> {
    if !config.enabled || !ask.is_object_read || ask.purpose == Purpose::Write {
        return Vec::new();
    }
    if ask.flag("skipstat") || (!route.namespace.caps.public_reads && ask.token().is_none()) {
        return Vec::new();
    }
    let of = |kind| route.candidates.iter().filter(move |c| c.kind == kind);
    let caches = of(ServerKind::Cache).count();
    let origins = of(ServerKind::Origin).count();
    let mut picked = Vec::new();
    let origins_matter = ask.purpose == Purpose::OriginRead || caches == 0;
    if origins_matter && (origins >= 2 || (origins == 1 && config.single_origin)) {
        picked.extend(of(ServerKind::Origin).take(config.fan_out));
    }
    if config.caches && ask.purpose == Purpose::Read && ask.flag("prefercached") {
        picked.extend(of(ServerKind::Cache).take(config.fan_out));
    }
    picked
}

/// Asks the servers `cache` has no fresh answer for, all at once, and caches the answers.
/// Returns the fresh answers.
pub async fn check(
    prober: &HttpProber,
    cache: &PresenceCache,
    servers: &[&Candidate],
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
    // `to_check` caps the list at `fan_out` per kind, so all are asked at once.
    let mut asks = Vec::with_capacity(stale.len());
    for c in stale {
        let url = format!("{}{encoded}", c.data_url.trim_end_matches('/'));
        let key = key_of(c);
        let kind = c.kind;
        asks.push(async move { (key, prober.presence(&url, kind, token, timeout).await) });
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
/// it first. An origin read (or a read with no cache) whose origins all lack the object
/// is [`AllAbsent`].
pub fn order(
    route: &mut Route,
    signals: &dyn Signals,
    path: &str,
    purpose: Purpose,
) -> Result<(), AllAbsent> {
    let presence = |c: &Candidate| signals.presence(&key_of(c), path);
    let origins_only = purpose != Purpose::Read
        || route
            .candidates
            .iter()
            .all(|c| c.kind == ServerKind::Origin);
    if purpose != Purpose::Write
        && origins_only
        && route
            .candidates
            .iter()
            .all(|c| presence(c) == Presence::Absent)
    {
        return Err(AllAbsent);
    }
    route.candidates.sort_by_cached_key(|c| {
        let down = signals.health(&key_of(c)).is_some_and(|h| !h.up);
        let p = presence(c);
        let demoted = down || (c.kind == ServerKind::Origin && p == Presence::Absent);
        (demoted, p != Presence::Present)
    });
    Ok(())
}
