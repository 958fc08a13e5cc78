//! The in-memory view of the federation and the redirect decision.
//!
//! [`View`] is an immutable snapshot built from persistent maps and copy-on-write shards
//! (the prefix index): an update clones it in O(1), changes it in O(log n) plus a copy
//! of each prefix shard it touches, then publishes the new snapshot atomically. Readers
//! (every redirect) load the current snapshot without taking any lock.

mod prefixes;
mod rank;
pub mod signals;
pub mod slots;
pub mod sort;

use std::collections::HashSet;
use std::sync::Arc;

use imbl::HashMap;

use crate::ad::StoredAd;
use crate::ad::{AdKey, AdStatus, Capabilities, NamespaceAd, ServerKind};
use crate::clock::UnixMillis;
use crate::paths::{depth, prefixes_longest_first};
use prefixes::PrefixIndex;
use slots::Slot;

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

/// One server a client may be sent to: the ad held for it, borrowed from the view for
/// as long as the redirect holds the view (a redirect copies no string of it, and
/// touches no reference count: two connection threads counting the same ads up and down
/// would pass those counts' cache lines back and forth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'v> {
    /// Origin or cache.
    pub kind: ServerKind,
    /// The ad held for it (name, data URL, generation, key).
    pub ad: &'v StoredAd,
    /// The server's rendezvous seed ([`rank::name_seed`] of its name).
    seed: u64,
    /// Its rendezvous score for the path its route was found for, worked out once by the
    /// route (hashing a path costs a pass over it per server): `None` when made alone.
    affinity: Option<u64>,
    /// The server's slot: where its health and location are read.
    slot: Slot,
}

impl<'v> Candidate<'v> {
    /// The candidate for the server of `ad`.
    pub fn new(ad: &'v StoredAd) -> Self {
        Self {
            kind: ad.ad.kind,
            seed: rank::name_seed(&ad.ad.name),
            affinity: None,
            slot: slots::slot_of(ad.ad.kind, &ad.ad.name),
            ad,
        }
    }

    /// The server's slot ([`slots`]).
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The rendezvous score of this server for `object` ([`score`] of its name).
    pub fn score(&self, object: &str) -> u64 {
        rank::score_from(self.seed, object)
    }

    /// [`Candidate::score`] for the path this candidate's route was found for, where
    /// `path` is that path: the route's own score when it kept one.
    pub fn affinity(&self, path: &str) -> u64 {
        self.affinity.unwrap_or_else(|| self.score(path))
    }

    /// Server name.
    pub fn name(&self) -> &'v str {
        &self.ad.ad.name
    }

    /// Base URL objects are fetched from.
    pub fn data_url(&self) -> &'v str {
        &self.ad.ad.data_url
    }
}

/// Where a path goes. It borrows what it needs from the view (the prefix, the ads), so
/// a redirect copies no string of them and counts no reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'v> {
    /// The longest advertised namespace prefix containing the path.
    pub prefix: &'v str,
    /// The ad whose copy of the namespace is followed (an origin's preferred), and the
    /// index of that namespace in it.
    namespace_from: (&'v StoredAd, usize),
    /// Servers in rank order, best first.
    pub candidates: Vec<Candidate<'v>>,
    /// An origin for the namespace that allows listings (for `collections-url`).
    collections_from: Option<&'v StoredAd>,
    /// What the followed namespace allows, copied in.
    terms: Terms,
}

/// What a redirect tells of a namespace besides its servers, copied out of its ad when
/// the view indexes it: the namespace itself lies elsewhere in memory (a likely cache
/// miss on every redirect), and a public namespace needs nothing else of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The namespace's capabilities.
    pub caps: Capabilities,
    /// It names a token issuer or a token generation (only then is the namespace read).
    pub names_tokens: bool,
}

impl Terms {
    /// The terms of `ns`.
    pub fn of(ns: &NamespaceAd) -> Self {
        Self {
            caps: ns.caps,
            names_tokens: !ns.issuers.is_empty() || !ns.generation.is_empty(),
        }
    }
}

impl<'v> Route<'v> {
    /// A route for `prefix` following the `index`-th namespace of `namespace_ad`, with
    /// `collections_from`'s data URL as its collections URL; `None` if `namespace_ad` has
    /// no such namespace.
    pub fn new(
        prefix: &'v str,
        namespace_ad: &'v StoredAd,
        index: usize,
        candidates: Vec<Candidate<'v>>,
        collections_from: Option<&'v StoredAd>,
    ) -> Option<Self> {
        let terms = Terms::of(namespace_ad.ad.namespaces.get(index)?);
        Some(Self {
            prefix,
            namespace_from: (namespace_ad, index),
            candidates,
            collections_from,
            terms,
        })
    }

    /// What the namespace allows, and whether it names tokens ([`Terms`]).
    pub fn terms(&self) -> Terms {
        self.terms
    }

    /// The namespace as advertised (capabilities, issuers), origin's copy preferred.
    pub fn namespace(&self) -> &'v NamespaceAd {
        let (ad, index) = self.namespace_from;
        // `new` checked the index, and the ad is immutable.
        &ad.ad.namespaces[index]
    }

    /// The data URL of an origin for the namespace that allows listings.
    pub fn collections_url(&self) -> Option<&'v str> {
        self.collections_from.map(|a| a.ad.data_url.as_str())
    }
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

/// The servers advertising one prefix, sorted by key. A prefix has few servers, so a small
/// copy-on-write vector is smaller and faster to scan than a persistent set (an
/// `imbl::OrdSet` allocates a 64-slot node even for one key), and holding the ads
/// themselves spares `route` a map lookup per server.
type Servers = Arc<Vec<Indexed>>;

/// One server of a prefix, with what a redirect checks of it copied in: choosing among a
/// prefix's servers reads these small records, side by side, instead of several parts of
/// each ad (its expiry, its namespaces, its name), each a likely cache miss.
#[derive(Debug, Clone)]
struct Indexed {
    ad: Arc<StoredAd>,
    /// Where the prefix's namespace is in the ad's namespaces.
    index: usize,
    kind: ServerKind,
    /// The ad's expiry, or 0 while it is withdrawing: it serves while this is after now.
    serving_until: UnixMillis,
    /// What the namespace allows, and whether it names tokens.
    terms: Terms,
    /// The server's rendezvous seed ([`rank::name_seed`]).
    seed: u64,
    /// The server's slot ([`slots`]).
    slot: Slot,
}

impl Indexed {
    /// The `index`-th namespace of `ad` (whose server has `slot`), if it has one.
    fn new(ad: Arc<StoredAd>, index: usize, slot: Slot) -> Option<Self> {
        let terms = Terms::of(ad.ad.namespaces.get(index)?);
        Some(Self {
            slot,
            index,
            kind: ad.ad.kind,
            serving_until: if ad.ad.status == AdStatus::Ok {
                ad.expires_at
            } else {
                0
            },
            terms,
            seed: rank::name_seed(&ad.ad.name),
            ad,
        })
    }

    /// True if the server is live and not withdrawing at `now`.
    fn is_serving(&self, now: UnixMillis) -> bool {
        self.serving_until > now
    }
}

/// An immutable snapshot of every live ad.
#[derive(Debug, Clone, Default)]
pub struct View {
    ads: HashMap<AdKey, Arc<StoredAd>>,
    /// Each namespace prefix and its servers: a redirect looks up each prefix of its path.
    by_prefix: PrefixIndex<Servers>,
    /// Servers that federation records (downtime, ban) are about, with how many records
    /// each: a redirect only looks the records up for a candidate listed here.
    record_names: HashMap<Arc<str>, u8>,
    /// No prefix ever indexed here (or in the views this one was made from) has more
    /// components: a redirect looks up only its path's prefixes this deep or shallower.
    deepest_prefix: usize,
}

/// Where the ad of `key` sits (or would sit) in a prefix's servers.
fn position(servers: &[Indexed], key: &AdKey) -> Result<usize, usize> {
    servers
        .binary_search_by(|s| (s.kind, s.ad.ad.name.as_str()).cmp(&(key.kind, key.name.as_str())))
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

    /// Indexes `stored`, replacing any ad of the same key, in place: a writer applying
    /// many ads clones the view once, inserts them all, then publishes it. A new version
    /// usually keeps its namespaces, so entries are replaced where they are: each prefix's
    /// map path is copied once rather than once to remove and again to insert.
    pub fn insert(&mut self, stored: Arc<StoredAd>) {
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
        let slot = slots::slot_of_key(&key);
        for (index, ns) in stored.ad.namespaces.iter().enumerate() {
            let path: &str = &ns.path;
            self.deepest_prefix = self.deepest_prefix.max(depth(path));
            let Some(entry) = Indexed::new(stored.clone(), index, slot) else {
                continue;
            };
            match self.by_prefix.get_mut(path) {
                Some(servers) => match position(servers, &key) {
                    // Already this version: the same path twice in one ad, first one counts.
                    Ok(at) if Arc::ptr_eq(&servers[at].ad, &stored) => {}
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

    /// True if `server` is serving at `now` and no record holds it back. Its ad (elsewhere
    /// in memory) is read only when some server has a record.
    #[inline]
    fn redirects_to(&self, server: &Indexed, now: UnixMillis) -> bool {
        server.is_serving(now)
            && (self.record_names.is_empty() || !self.held_back(&server.ad.ad.name, now))
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
            .filter(|(_, servers)| servers.iter().any(|s| self.redirects_to(s, now)))
            .map(|(prefix, _)| prefix.to_string())
            .collect();
        out.sort();
        out
    }

    /// Decides where `path` (clean, absolute) goes for `purpose` at time `now`.
    pub fn route(
        &self,
        path: &str,
        purpose: Purpose,
        now: UnixMillis,
    ) -> Result<Route<'_>, NoRoute> {
        let mut refused_prefix = None;
        // Longest first, so the deeper ones come first: each prefix of a clean path has one
        // component fewer than the one before it.
        let too_deep = depth(path).saturating_sub(self.deepest_prefix);
        let indexed = prefixes_longest_first(path).skip(too_deep);
        for prefix in indexed.chain(std::iter::once("/")) {
            let Some((prefix, servers)) = self.by_prefix.get_key_value(prefix) else {
                continue;
            };
            match self.build_route(prefix, servers, path, purpose, now) {
                Built::Route(route) => return Ok(route),
                Built::Refused => {
                    refused_prefix.get_or_insert_with(|| prefix.to_string());
                }
                Built::NoneLive => {}
            }
        }
        Err(match refused_prefix {
            Some(prefix) => NoRoute::NotAllowed { prefix },
            None => NoRoute::NoNamespace,
        })
    }

    /// The route through `servers` (those advertising `prefix`), in one pass over them:
    /// candidates of the kinds asked, each kind ranked in its own run (caches first), the
    /// namespace as an origin advertises it (the first by name; else the first server's
    /// copy) and the collections URL.
    fn build_route<'v>(
        &'v self,
        prefix: &'v str,
        servers: &'v [Indexed],
        path: &str,
        purpose: Purpose,
        now: UnixMillis,
    ) -> Built<'v> {
        // Each candidate keeps its rendezvous score, so the ranking hashes the path once
        // per server rather than once per comparison (and the sort after it not again).
        let mut candidates: Vec<Candidate<'v>> = Vec::with_capacity(servers.len());
        let mut namespace_from: Option<&Indexed> = None;
        let mut collections_from: Option<&StoredAd> = None;
        let mut any_live = false;
        for server in servers {
            if !self.redirects_to(server, now) {
                continue;
            }
            any_live = true;
            let (kind, caps) = (server.kind, server.terms.caps);
            if kind == ServerKind::Origin {
                // Servers are sorted by (kind, name): the first origin is the least by name.
                if namespace_from.is_none_or(|s| s.kind != ServerKind::Origin) {
                    namespace_from = Some(server);
                }
                if caps.listings
                    && collections_from.is_none_or(|c| server.ad.ad.data_url < c.ad.data_url)
                {
                    collections_from = Some(&*server.ad);
                }
            } else if namespace_from.is_none() {
                namespace_from = Some(server);
            }
            let wanted = match (purpose, kind) {
                (Purpose::Read, ServerKind::Cache) => true,
                (Purpose::Read | Purpose::OriginRead, ServerKind::Origin) => true,
                (Purpose::DirectRead, ServerKind::Origin) => caps.direct_reads,
                (Purpose::Write, ServerKind::Origin) => caps.writes,
                _ => false,
            };
            if !wanted {
                continue;
            }
            candidates.push(Candidate {
                kind,
                ad: &server.ad,
                seed: server.seed,
                affinity: Some(rank::score_from(server.seed, path)),
                slot: server.slot,
            });
        }
        if !any_live {
            return Built::NoneLive;
        }
        let Some(namespace_from) = namespace_from else {
            return Built::NoneLive;
        };
        if candidates.is_empty() {
            return Built::Refused;
        }
        // Caches first, then origins; best first within each: highest score, ties by name
        // (descending). The name is read only for a tie: it lives in the ad, elsewhere in
        // memory.
        let is_origin = |c: &Candidate| c.kind != ServerKind::Cache;
        candidates.sort_unstable_by(|a, b| {
            is_origin(a)
                .cmp(&is_origin(b))
                .then_with(|| b.affinity.cmp(&a.affinity))
                .then_with(|| b.name().cmp(a.name()))
        });
        // `Indexed::new` checked that the ad has the namespace.
        Built::Route(Route {
            prefix,
            namespace_from: (&namespace_from.ad, namespace_from.index),
            candidates,
            collections_from,
            terms: namespace_from.terms,
        })
    }
}

/// What one prefix's servers give a request.
enum Built<'v> {
    /// A route.
    Route(Route<'v>),
    /// Live servers, but none does what was asked.
    Refused,
    /// No live server.
    NoneLive,
}

#[cfg(test)]
mod tests;
