//! The in-memory view of the federation and the redirect decision.
//!
//! [`View`] is an immutable snapshot built from persistent maps: an update clones it in
//! O(1) and changes it in O(log n), then publishes the new snapshot atomically. Readers
//! (every redirect) load the current snapshot without taking any lock.

mod rank;
pub mod signals;
pub mod sort;

use std::collections::HashSet;
use std::sync::Arc;

use imbl::HashMap;
use rustc_hash::FxBuildHasher;

use crate::ad::StoredAd;
use crate::ad::{AdKey, AdStatus, NamespaceAd, ServerKind};
use crate::clock::UnixMillis;
use crate::paths::prefixes_longest_first;

pub use rank::{FNV_OFFSET, rank_by, score, stable_hash};

/// What a client wants to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Read through the best cache, else an origin.
    Read,
    /// Read from an origin.
    OriginRead,
    /// `?directread`: read from an origin whose namespace allows direct reads.
    DirectRead,
    /// Write to an origin whose namespace allows writes.
    Write,
}

/// One server a client may be sent to: the ad held for it, shared with the view (a
/// redirect copies no string of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Origin or cache.
    pub kind: ServerKind,
    /// The ad held for it (name, data URL, generation, key).
    pub ad: Arc<StoredAd>,
}

impl Candidate {
    /// The candidate for the server of `ad`.
    pub fn new(ad: Arc<StoredAd>) -> Self {
        Self {
            kind: ad.ad.kind,
            ad,
        }
    }

    /// Server name.
    pub fn name(&self) -> &str {
        &self.ad.ad.name
    }

    /// Base URL objects are fetched from.
    pub fn data_url(&self) -> &str {
        &self.ad.ad.data_url
    }
}

/// Where a path goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The longest advertised namespace prefix containing the path.
    pub prefix: String,
    /// The namespace as advertised (capabilities, issuers), origin's copy preferred.
    pub namespace: NamespaceAd,
    /// Servers in rank order, best first.
    pub candidates: Vec<Candidate>,
    /// An origin for the namespace that allows listings (for `collections-url`).
    pub collections_url: Option<String>,
}

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No live server advertises a namespace containing the path.
    NoNamespace,
    /// The namespace exists but no live server does what was asked (e.g. writes).
    NotAllowed {
        /// The namespace found.
        prefix: String,
    },
}

/// The servers advertising one prefix, each with the index of that namespace in its ad,
/// sorted by key. A prefix has few servers, so a small copy-on-write vector is smaller and
/// faster to scan than a persistent set (an `imbl::OrdSet` allocates a 64-slot node even
/// for one key), and holding the ads themselves spares `route` a map lookup per server.
type Servers = Arc<Vec<(Arc<StoredAd>, usize)>>;

/// An immutable snapshot of every live ad.
#[derive(Debug, Clone, Default)]
pub struct View {
    ads: HashMap<AdKey, Arc<StoredAd>>,
    /// Hashed with FxHash: a redirect looks up each prefix of its path, and SipHash cost
    /// more than the rest of the lookup. The keys are namespaces that trusted servers
    /// signed, so a client's path can probe the map but never shape it.
    by_prefix: HashMap<Arc<str>, Servers, FxBuildHasher>,
    /// Servers that federation records (downtime, ban) are about, with how many records
    /// each: a redirect only looks the records up for a candidate listed here.
    record_names: HashMap<Arc<str>, u8>,
}

/// Where the ad of `key` sits (or would sit) in a prefix's servers.
fn position(servers: &[(Arc<StoredAd>, usize)], key: &AdKey) -> Result<usize, usize> {
    servers.binary_search_by(|(a, _)| {
        (a.ad.kind, a.ad.name.as_str()).cmp(&(key.kind, key.name.as_str()))
    })
}

impl View {
    /// Builds a view from loaded ads (in place: nothing is shared yet, so nothing is copied).
    pub fn from_ads(ads: impl IntoIterator<Item = StoredAd>) -> Self {
        let mut view = View::default();
        for ad in ads {
            view.insert(Arc::new(ad));
        }
        view
    }

    /// A copy with `stored` replacing any ad of the same key.
    pub fn with_ad(&self, stored: Arc<StoredAd>) -> Self {
        let mut next = self.clone();
        next.insert(stored);
        next
    }

    /// A copy without the ad at `key`.
    pub fn without(&self, key: &AdKey) -> Self {
        let mut next = self.clone();
        next.remove(key);
        next
    }

    /// Indexes `stored`, replacing any ad of the same key. A new version usually keeps its
    /// namespaces, so entries are replaced where they are: each prefix's map path is copied
    /// once rather than once to remove and again to insert.
    fn insert(&mut self, stored: Arc<StoredAd>) {
        let key = stored.ad.key();
        let indexed = stored.ad.kind != ServerKind::Director && !stored.ad.kind.is_record();
        let old = self.ads.insert(key.clone(), stored.clone());
        if key.kind.is_record() && old.is_none() {
            *self
                .record_names
                .entry(Arc::from(key.name.as_str()))
                .or_insert(0) += 1;
        }
        if let Some(old) = old {
            let kept: HashSet<&str> = if indexed {
                stored
                    .ad
                    .namespaces
                    .iter()
                    .map(|ns| ns.path.as_str())
                    .collect()
            } else {
                HashSet::new()
            };
            for ns in &old.ad.namespaces {
                if !kept.contains(ns.path.as_str()) {
                    self.unindex(&ns.path, &key);
                }
            }
        }
        if !indexed {
            return;
        }
        for (index, ns) in stored.ad.namespaces.iter().enumerate() {
            let path: &str = &ns.path;
            let entry = (stored.clone(), index);
            match self.by_prefix.get_mut(path) {
                Some(servers) => match position(servers, &key) {
                    // Already this version: the same path twice in one ad, first one counts.
                    Ok(at) if Arc::ptr_eq(&servers[at].0, &stored) => {}
                    Ok(at) => Arc::make_mut(servers)[at] = entry,
                    Err(at) => Arc::make_mut(servers).insert(at, entry),
                },
                None => {
                    self.by_prefix
                        .insert(Arc::from(path), Arc::new(vec![entry]));
                }
            }
        }
    }

    fn remove(&mut self, key: &AdKey) {
        if let Some(old) = self.ads.remove(key) {
            if key.kind.is_record() {
                let name: &str = &key.name;
                match self.record_names.get(name).copied() {
                    Some(n) if n > 1 => {
                        self.record_names.insert(Arc::from(name), n - 1);
                    }
                    _ => {
                        self.record_names.remove(name);
                    }
                }
            }
            for ns in &old.ad.namespaces {
                self.unindex(&ns.path, key);
            }
        }
    }

    /// Drops `key` from the servers of `path`.
    fn unindex(&mut self, path: &str, key: &AdKey) {
        if let Some(servers) = self.by_prefix.get_mut(path) {
            if let Ok(at) = position(servers, key) {
                Arc::make_mut(servers).remove(at);
            }
            if servers.is_empty() {
                self.by_prefix.remove(path);
            }
        }
    }

    /// True if a live record keeps the server `name` out of redirects at `now`: it is
    /// banned, or inside a downtime window.
    pub fn held_back(&self, name: &str, now: UnixMillis) -> bool {
        if self.record_names.is_empty() || !self.record_names.contains_key(name) {
            return false;
        }
        [ServerKind::Downtime, ServerKind::Ban]
            .into_iter()
            .any(|kind| {
                let key = AdKey {
                    kind,
                    name: name.to_string(),
                };
                self.ads.get(&key).is_some_and(|a| {
                    a.expires_at > now && a.ad.record.as_ref().is_some_and(|r| r.holds_back(now))
                })
            })
    }

    /// The ad held for `key`.
    pub fn get(&self, key: &AdKey) -> Option<&Arc<StoredAd>> {
        self.ads.get(key)
    }

    /// Every ad held (live or not yet pruned).
    pub fn ads(&self) -> impl Iterator<Item = &Arc<StoredAd>> {
        self.ads.values()
    }

    /// Number of ads held.
    pub fn len(&self) -> usize {
        self.ads.len()
    }

    /// True if no ad is held.
    pub fn is_empty(&self) -> bool {
        self.ads.is_empty()
    }

    /// The earliest expiry among held ads.
    pub fn next_expiry(&self) -> Option<UnixMillis> {
        self.ads.values().map(|a| a.expires_at).min()
    }

    /// Namespace prefixes with at least one live, serving server.
    pub fn namespaces(&self, now: UnixMillis) -> Vec<String> {
        let mut out: Vec<String> = self
            .by_prefix
            .iter()
            .filter(|(_, servers)| {
                servers
                    .iter()
                    .any(|(a, _)| is_serving(a, now) && !self.held_back(&a.ad.name, now))
            })
            .map(|(prefix, _)| prefix.to_string())
            .collect();
        out.sort();
        out
    }

    /// Decides where `path` (clean, absolute) goes for `purpose` at time `now`.
    pub fn route(&self, path: &str, purpose: Purpose, now: UnixMillis) -> Result<Route, NoRoute> {
        let mut refused_prefix = None;
        for prefix in prefixes_longest_first(path).chain(std::iter::once("/")) {
            let Some(servers) = self.by_prefix.get(prefix) else {
                continue;
            };
            let live: Vec<(&Arc<StoredAd>, &NamespaceAd)> = servers
                .iter()
                .filter(|(a, _)| is_serving(a, now) && !self.held_back(&a.ad.name, now))
                .filter_map(|(a, index)| a.ad.namespaces.get(*index).map(|ns| (a, ns)))
                .collect();
            if live.is_empty() {
                continue;
            }
            match build_route(prefix, &live, path, purpose) {
                Some(route) => return Ok(route),
                None => {
                    refused_prefix.get_or_insert_with(|| prefix.to_string());
                }
            }
        }
        Err(match refused_prefix {
            Some(prefix) => NoRoute::NotAllowed { prefix },
            None => NoRoute::NoNamespace,
        })
    }
}

/// True if `ad` is live and not withdrawing at `now`.
fn is_serving(ad: &StoredAd, now: UnixMillis) -> bool {
    ad.ad.status == AdStatus::Ok && ad.expires_at > now
}

fn build_route(
    prefix: &str,
    live: &[(&Arc<StoredAd>, &NamespaceAd)],
    path: &str,
    purpose: Purpose,
) -> Option<Route> {
    // One vector for every kind asked, each kind ranked in its own run.
    let mut candidates: Vec<Candidate> = Vec::with_capacity(live.len());
    let mut add = |kind: ServerKind, keep: &dyn Fn(&NamespaceAd) -> bool| {
        let start = candidates.len();
        candidates.extend(
            live.iter()
                .filter(|(a, ns)| a.ad.kind == kind && keep(ns))
                .map(|(a, _)| Candidate::new(Arc::clone(a))),
        );
        rank_by(&mut candidates[start..], path, |c| c.name());
    };
    match purpose {
        Purpose::Read => {
            add(ServerKind::Cache, &|_| true);
            add(ServerKind::Origin, &|_| true);
        }
        Purpose::OriginRead => add(ServerKind::Origin, &|_| true),
        Purpose::DirectRead => add(ServerKind::Origin, &|ns| ns.caps.direct_reads),
        Purpose::Write => add(ServerKind::Origin, &|ns| ns.caps.writes),
    }
    if candidates.is_empty() {
        return None;
    }
    let origin_ns = live
        .iter()
        .filter(|(a, _)| a.ad.kind == ServerKind::Origin)
        .min_by(|x, y| x.0.ad.name.cmp(&y.0.ad.name));
    let namespace = origin_ns
        .or_else(|| live.first())
        .map(|(_, ns)| (*ns).clone())?;
    let collections_url = live
        .iter()
        .filter(|(a, ns)| a.ad.kind == ServerKind::Origin && ns.caps.listings)
        .map(|(a, _)| a.ad.data_url.as_str())
        .min()
        .map(str::to_string);
    Some(Route {
        prefix: prefix.to_string(),
        namespace,
        candidates,
        collections_url,
    })
}

#[cfg(test)]
mod tests;
