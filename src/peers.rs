//! The one owner of every peer: who the other directors are, and each one's work.
//!
//! A URL from the discovery document, the static list, another director's list or a
//! director ad is only a *candidate*. It becomes a peer once it serves, from that URL, a
//! director ad signed by a director key in the trust file (`GET
//! /api/v1.0/director/self`). Peers are identified by the instance UUID in that ad, so
//! aliases of one director (or of this one) collapse into one. Each peer owns a
//! [`Link`]: its forward queue, its worker (forwards and the digest-sync schedule) and
//! the child cancellation token that stops that worker when the peer is forgotten.
//!
//! Rules (from Pelican's multi-director incidents): a director always counts itself; a
//! peer missing from somebody else's list is never removed for that; only a peer that
//! is neither configured (in the *current* config) nor in the discovery document, and
//! has been unreachable for `forget_after`, is forgotten. Candidates are capped, probed
//! with backoff, never forwarded to and never a metric label.

mod record;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::ad::{Ad, ServerKind, SignedAd};
use crate::clock::{SharedClock, UnixMillis};
use crate::replication::{PeerQueue, Replicator};
use crate::store::Store;
use crate::trust::Trust;
use crate::wire::DirectorInfo;

pub use record::{PeerRecord, PeerSources};

/// Candidates probed at once.
const PROBE_PARALLEL: usize = 4;
/// First delay before probing a candidate again after a failure; doubles per failure.
const PROBE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest delay between probes of one learned candidate.
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest delay between probes of a configured or discovered URL.
const SEED_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A learned candidate that failed this many probes may make room for a new one.
const EVICTABLE_AFTER: u32 = 2;
/// One warning per unreachable director (peer or seed) at most this often.
const LOG_EVERY_MS: u64 = 10 * 60 * 1000;

/// How a URL was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `federation.directors` in the current config.
    Configured,
    /// The discovery document.
    Discovery,
    /// A peer's list or a director ad.
    Learned,
}

/// Timing of the per-peer work.
#[derive(Debug, Clone, Copy)]
pub struct PeerTiming {
    /// Base of the digest-sync period (a peer syncs every `poll_interval` × peers).
    pub poll_interval: Duration,
    /// Most candidates held at once.
    pub max_candidates: usize,
    /// A peer (or learned candidate) unreachable this long is forgotten.
    pub forget_after: Duration,
    /// How long an accepted ad waits before it is offered to peers (zero: sent in full
    /// at once).
    pub forward_delay: Duration,
}

/// What this director is.
#[derive(Debug, Clone)]
pub struct SelfInfo {
    /// Its advertise URL.
    pub url: String,
    /// Its instance UUID.
    pub uuid: Uuid,
    /// Its name (the key of its own director ad).
    pub name: String,
}

/// A verified peer's work: its queue, its worker's token and its sync trigger.
#[derive(Clone)]
pub struct Link {
    /// Ads waiting to be forwarded to it.
    pub queue: Arc<PeerQueue>,
    /// Cancelled when the peer is forgotten (a child of the director's token).
    pub cancel: CancellationToken,
    /// Wakes the worker for a digest sync now.
    pub sync_now: Arc<Notify>,
}

struct Candidate {
    sources: PeerSources,
    first_seen: UnixMillis,
    /// When it last answered as a verified peer (an earlier life's record; 0: never).
    last_ok: UnixMillis,
    failures: u32,
    next_probe: Instant,
    probing: bool,
    /// A fresh director ad for it came during a probe: probe again at once if it failed.
    poked: bool,
    last_logged: Option<UnixMillis>,
}

struct Peer {
    record: PeerRecord,
    aliases: BTreeSet<String>,
    reachable: bool,
    last_error: Option<String>,
    last_logged: Option<UnixMillis>,
    /// Its latest accepted director ad: what verified it, checked again when the trust
    /// changes.
    signed: SignedAd,
    link: Link,
    /// The last digest exchange found nothing to pull or push (None: none yet).
    in_sync: Option<bool>,
}

/// One known peer as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its advertise URL.
    pub url: String,
    /// Its name, once its ad is known.
    pub name: Option<String>,
    /// Its software version, once its ad is known.
    pub version: Option<String>,
    /// Whether the last contact succeeded.
    pub reachable: bool,
    /// When it last answered (Unix ms, 0: never).
    pub last_ok: UnixMillis,
    /// The last error, if the last contact failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Members {
    self_aliases: BTreeSet<String>,
    candidates: BTreeMap<String, Candidate>,
    peers: BTreeMap<Uuid, Peer>,
    /// Every URL of a verified peer (its advertise URL and aliases) to its UUID.
    by_url: HashMap<String, Uuid>,
}

/// Known directors other than this one, and the work each one gets.
pub struct PeerSet {
    me: SelfInfo,
    members: Mutex<Members>,
    store: Store,
    clock: SharedClock,
    timing: PeerTiming,
    probe_wake: Notify,
    workers: AtomicUsize,
    replicator: Weak<Replicator>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Normalises a director URL for comparison.
pub fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

/// A directors-list entry for a URL with no verified ad behind it (unreachable).
pub fn unverified_listing(url: &str) -> DirectorInfo {
    DirectorInfo {
        name: String::new(),
        start_time: 0,
        instance_id: String::new(),
        generation_id: 0,
        version: String::new(),
        expiry: 0,
        advertise_url: url.to_string(),
        last_seen: 0,
        reachable: false,
        is_self: false,
    }
}

/// Counts a running peer worker while alive.
pub struct WorkerGuard<'a>(&'a AtomicUsize);

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PeerSet {
    /// Loads persisted peers as candidates to verify again (they were verified in an
    /// earlier life, but which are configured comes from the current config only).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        me: SelfInfo,
        store: Store,
        clock: SharedClock,
        timing: PeerTiming,
        replicator: Weak<Replicator>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let persisted = PeerRecord::load_all(&store).unwrap_or_else(|error| {
            tracing::error!(%error, "could not read stored peers; starting with seeds only");
            Vec::new()
        });
        let me = SelfInfo {
            url: normalize(&me.url),
            ..me
        };
        let now = clock.now_ms();
        let mut members = Members::default();
        for record in persisted {
            let url = normalize(&record.url);
            if url == me.url {
                continue;
            }
            let sources = PeerSources {
                learned: true,
                ..PeerSources::default()
            };
            let mut candidate = Candidate::new(sources, record.first_seen.min(now), Instant::now());
            candidate.last_ok = record.last_ok.min(now);
            members.candidates.insert(url, candidate);
        }
        Self {
            me,
            members: Mutex::new(members),
            store,
            clock,
            timing,
            probe_wake: Notify::new(),
            workers: AtomicUsize::new(0),
            replicator,
            tracker,
            cancel,
        }
    }

    /// True if `ad` is this director's (this life's, or an earlier life's by name).
    fn is_me(&self, ad: &Ad) -> bool {
        ad.instance_id.uuid == self.me.uuid || ad.name == self.me.name
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This director's advertise URL.
    pub fn self_url(&self) -> &str {
        &self.me.url
    }

    /// This director's name.
    pub fn self_name(&self) -> &str {
        &self.me.name
    }

    /// True if `url` is this director (its advertise URL or a verified alias).
    pub fn is_self(&self, url: &str) -> bool {
        let url = normalize(url);
        url == self.me.url || self.members().self_aliases.contains(&url)
    }

    /// Notes `url` as a candidate (or marks how else it is known). Returns true if it
    /// is new. A URL already verified only gains the source.
    pub fn add(&self, url: &str, source: Source) -> bool {
        let url = normalize(url);
        if url.is_empty() || self.is_self(&url) || crate::config::check_url(&url).is_err() {
            return false;
        }
        let now = self.clock.now_ms();
        let mut members = self.members();
        if let Some(uuid) = members.by_url.get(&url).copied() {
            if let Some(peer) = members.peers.get_mut(&uuid) {
                let before = peer.record.sources;
                mark(&mut peer.record.sources, source);
                if before != peer.record.sources {
                    let record = peer.record.clone();
                    drop(members);
                    self.persist(&record);
                }
            }
            return false;
        }
        if let Some(candidate) = members.candidates.get_mut(&url) {
            mark(&mut candidate.sources, source);
            return false;
        }
        let seed = source != Source::Learned;
        if !seed && members.candidates.len() >= self.timing.max_candidates {
            let evict = members
                .candidates
                .iter()
                .filter(|(_, c)| !c.is_seed() && !c.probing && c.failures >= EVICTABLE_AFTER)
                .max_by_key(|(_, c)| c.failures)
                .map(|(u, _)| u.clone());
            match evict {
                Some(old) => {
                    members.candidates.remove(&old);
                    tracing::debug!(candidate = %old, "dropped an unverified candidate to make room");
                }
                None => {
                    tracing::debug!(candidate = %url, "candidate list full; ignored");
                    return false;
                }
            }
        }
        let mut sources = PeerSources::default();
        mark(&mut sources, source);
        members
            .candidates
            .insert(url.clone(), Candidate::new(sources, now, Instant::now()));
        drop(members);
        tracing::debug!(candidate = %url, ?source, "director candidate");
        self.probe_wake.notify_one();
        true
    }

    /// Learns from a director ad accepted by the ledger: its URL is a candidate, or
    /// (same UUID) the ad refreshes what is known of a peer, or the URL is this director.
    pub fn note_director_ad(&self, signed: &SignedAd) {
        let ad = &signed.ad;
        let url = normalize(&ad.data_url);
        if self.is_me(ad) {
            if url != self.me.url && ad.instance_id.uuid == self.me.uuid {
                self.members().self_aliases.insert(url);
            }
            return;
        }
        let mut members = self.members();
        let known = members.by_url.get(&url).copied();
        match known.and_then(|uuid| members.peers.get_mut(&uuid)) {
            Some(peer) if peer.signed.ad.instance_id.uuid == ad.instance_id.uuid => {
                if crate::ad::is_newer(ad.version(), Some(peer.signed.ad.version())) {
                    peer.signed = signed.clone();
                }
            }
            Some(peer)
                if peer.signed.ad.name == ad.name
                    && crate::ad::is_newer(ad.version(), Some(peer.signed.ad.version())) =>
            {
                // The same director restarted at the same URL: a new instance UUID.
                let old = peer.signed.ad.instance_id.uuid;
                peer.signed = signed.clone();
                if let Some(peer) = members.peers.remove(&old) {
                    let uuid = ad.instance_id.uuid;
                    for alias in peer.aliases.iter().chain(Some(&peer.record.url)) {
                        members.by_url.insert(alias.clone(), uuid);
                    }
                    members.peers.insert(uuid, peer);
                }
            }
            Some(_) => {}
            None => {
                // A fresh signed ad says the director is up: probe a known candidate now.
                if let Some(candidate) = members.candidates.get_mut(&url) {
                    candidate.next_probe = Instant::now();
                    candidate.poked = candidate.probing;
                    drop(members);
                    self.probe_wake.notify_one();
                    return;
                }
                drop(members);
                self.add(&url, Source::Learned);
            }
        }
    }

    /// Records a successful contact with a peer. Returns true if it was unreachable
    /// before (it came back, or answered for the first time: time to catch up).
    pub fn mark_ok(&self, url: &str) -> bool {
        let url = normalize(url);
        let now = self.clock.now_ms();
        let mut members = self.members();
        let Some(uuid) = members.by_url.get(&url).copied() else {
            return false;
        };
        let Some(peer) = members.peers.get_mut(&uuid) else {
            return false;
        };
        let came_back = !peer.reachable;
        if came_back && peer.last_logged.is_some() {
            tracing::info!(peer = %peer.record.url, "director reachable again");
        }
        peer.reachable = true;
        peer.last_error = None;
        peer.last_logged = None;
        let persist = now.saturating_sub(peer.record.last_ok) > 10_000 || came_back;
        peer.record.last_ok = now;
        let record = peer.record.clone();
        drop(members);
        if persist {
            self.persist(&record);
        }
        came_back
    }

    /// Records a failed contact with a peer. Logged at warn when it becomes unreachable
    /// and again at most every 10 minutes while it stays so (including a peer that
    /// never answered since this director started).
    pub fn mark_failed(&self, url: &str, error: &str) {
        let url = normalize(url);
        let now = self.clock.now_ms();
        let mut members = self.members();
        let Some(uuid) = members.by_url.get(&url).copied() else {
            return;
        };
        let Some(peer) = members.peers.get_mut(&uuid) else {
            return;
        };
        if due(&mut peer.last_logged, now) {
            if peer.reachable {
                tracing::warn!(peer = %peer.record.url, %error, "director unreachable");
            } else {
                tracing::warn!(peer = %peer.record.url, %error, "director still unreachable");
            }
        } else {
            tracing::debug!(peer = %peer.record.url, %error, "director still unreachable");
        }
        peer.reachable = false;
        peer.last_error = Some(error.to_string());
    }

    /// Forgets the peer or candidate at `url` (any of its aliases): its worker stops,
    /// its queue is dropped and its record removed. Returns true if something was known.
    pub fn forget(&self, url: &str) -> bool {
        let url = normalize(url);
        let mut members = self.members();
        let removed_candidate = members.candidates.remove(&url).is_some();
        let Some(uuid) = members.by_url.get(&url).copied() else {
            return removed_candidate;
        };
        let Some(peer) = members.peers.remove(&uuid) else {
            return removed_candidate;
        };
        members.by_url.retain(|_, u| *u != uuid);
        drop(members);
        peer.link.cancel.cancel();
        if let Err(error) = self.store.remove_peer(&peer.record.url) {
            tracing::warn!(peer = %peer.record.url, %error, "could not remove a forgotten peer");
        }
        tracing::info!(peer = %peer.record.url, "forgot a director");
        true
    }

    /// Puts a new trust in force among the peers. A peer whose latest director ad the
    /// trust no longer admits (its name removed, its key changed, no longer a director)
    /// stops being a forward target at once: its worker stops and its queue is dropped.
    /// It stays known as a candidate (its record kept), probed like any other, so it
    /// becomes a peer again only once the director ad it serves is admitted. Every
    /// candidate is probed again now, so a director trusted again returns promptly.
    /// Returns the advertise URLs of the peers dropped.
    pub fn apply_trust(&self, trust: &Trust) -> Vec<String> {
        let now = Instant::now();
        let mut members = self.members();
        let untrusted: Vec<Uuid> = members
            .peers
            .iter()
            .filter(|(_, p)| trust.check(&p.signed).is_err())
            .map(|(uuid, _)| *uuid)
            .collect();
        let mut dropped = Vec::new();
        for uuid in untrusted {
            let Some(peer) = members.peers.remove(&uuid) else {
                continue;
            };
            members.by_url.retain(|_, u| *u != uuid);
            peer.link.cancel.cancel();
            tracing::warn!(peer = %peer.record.url, name = %peer.signed.ad.name, "director no longer trusted: not a forward target until its ad is admitted again");
            let mut candidate = Candidate::new(peer.record.sources, peer.record.first_seen, now);
            candidate.last_ok = peer.record.last_ok;
            members
                .candidates
                .insert(peer.record.url.clone(), candidate);
            dropped.push(peer.record.url);
        }
        for candidate in members.candidates.values_mut() {
            candidate.next_probe = now;
            // A probe in flight was checked against the old trust: probe again if it fails.
            candidate.poked = candidate.probing;
        }
        drop(members);
        self.probe_wake.notify_one();
        dropped
    }

    /// True if the trust in force admits `signed` (no replicator: nothing to ask).
    fn admitted(&self, signed: &SignedAd) -> bool {
        self.replicator
            .upgrade()
            .is_none_or(|r| r.ledger().trust().check(signed).is_ok())
    }

    /// Forgets peers and learned candidates that are neither configured nor in the
    /// discovery document and have been unreachable for longer than `forget_after_ms`.
    pub fn forget_stale(&self, forget_after_ms: u64) -> Vec<String> {
        let now = self.clock.now_ms();
        let mut dropped = Vec::new();
        let stale: Vec<String> = {
            let mut members = self.members();
            members.candidates.retain(|url, c| {
                let keep = c.is_seed()
                    || c.probing
                    || now.saturating_sub(c.first_seen.max(c.last_ok)) <= forget_after_ms;
                if !keep {
                    tracing::info!(candidate = %url, "forgot a director not verified for too long");
                    dropped.push(url.clone());
                }
                keep
            });
            members
                .peers
                .values()
                .filter(|p| {
                    let s = p.record.sources;
                    !s.configured
                        && !s.discovery
                        && !p.reachable
                        && now.saturating_sub(p.record.last_ok.max(p.record.first_seen))
                            > forget_after_ms
                })
                .map(|p| p.record.url.clone())
                .collect()
        };
        for url in &dropped {
            let _ = self.store.remove_peer(url);
        }
        for url in &stale {
            tracing::info!(peer = %url, "a director unreachable for too long");
            self.forget(url);
        }
        stale
    }

    /// Advertise URLs of every verified peer (never this director).
    pub fn urls(&self) -> Vec<String> {
        self.members()
            .peers
            .values()
            .map(|p| p.record.url.clone())
            .collect()
    }

    /// URLs whose `/directors` lists are read: verified peers, and candidates that
    /// came from the config or the discovery document (never a learned candidate's).
    pub fn list_sources(&self) -> Vec<String> {
        let members = self.members();
        members
            .peers
            .values()
            .map(|p| p.record.url.clone())
            .chain(
                members
                    .candidates
                    .iter()
                    .filter(|(_, c)| c.is_seed())
                    .map(|(u, _)| u.clone()),
            )
            .collect()
    }

    /// Where this director's withdrawal goes when it stops: every verified peer, and
    /// every configured or discovered URL not verified yet, so that a director stopped
    /// before its first probe answered still tells them. Never a learned candidate's
    /// URL (the same set as [`PeerSet::list_sources`]).
    pub fn withdrawal_targets(&self) -> Vec<String> {
        self.list_sources()
    }

    /// Unverified candidate URLs (status page, tests).
    pub fn candidates(&self) -> Vec<String> {
        self.members().candidates.keys().cloned().collect()
    }

    /// Peer workers running now (tests, status page).
    pub fn workers(&self) -> usize {
        self.workers.load(Ordering::SeqCst)
    }

    /// Number of directors known, this one included.
    pub fn count_with_self(&self) -> usize {
        self.members().peers.len() + 1
    }

    /// Every verified director as listed by `/api/v1.0/director/directors`, self first,
    /// then configured or discovered URLs not verified (yet), as unreachable and without
    /// an instance. Learned candidates are never listed: a list is no way to spread them.
    pub fn listing(&self, me: DirectorInfo) -> Vec<DirectorInfo> {
        let members = self.members();
        let mut out = vec![me];
        out.extend(
            members
                .candidates
                .iter()
                .filter(|(_, c)| c.is_seed())
                .map(|(url, _)| unverified_listing(url)),
        );
        out.extend(members.peers.values().map(|p| DirectorInfo {
            name: p.signed.ad.name.clone(),
            start_time: p.signed.ad.instance_id.started_at,
            instance_id: p.signed.ad.instance_id.uuid.to_string(),
            generation_id: p.signed.ad.generation,
            version: p.signed.ad.version.clone(),
            expiry: p.signed.ad.expires_at,
            advertise_url: p.record.url.clone(),
            last_seen: p.record.last_ok,
            reachable: p.reachable,
            is_self: false,
        }));
        out
    }

    /// Records the outcome of a digest exchange with `url` (any alias).
    pub fn note_sync(&self, url: &str, in_sync: bool) {
        let mut members = self.members();
        let Some(uuid) = members.by_url.get(&normalize(url)).copied() else {
            return;
        };
        if let Some(peer) = members.peers.get_mut(&uuid) {
            peer.in_sync = Some(in_sync);
        }
    }

    /// Per verified peer: URL, in sync at the last digest exchange, last successful
    /// contact (metrics).
    pub fn sync_states(&self) -> Vec<(String, Option<bool>, UnixMillis)> {
        self.members()
            .peers
            .values()
            .map(|p| (p.record.url.clone(), p.in_sync, p.record.last_ok))
            .collect()
    }

    /// What the status page shows of every known peer: verified peers, then configured or
    /// discovered URLs not verified (yet), in URL order.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        let members = self.members();
        let mut out: Vec<PeerStatus> = members
            .peers
            .values()
            .map(|p| PeerStatus {
                url: p.record.url.clone(),
                name: Some(p.signed.ad.name.clone()),
                version: Some(p.signed.ad.version.clone()),
                reachable: p.reachable,
                last_ok: p.record.last_ok,
                last_error: p.last_error.clone(),
            })
            .collect();
        out.extend(
            members
                .candidates
                .iter()
                .filter(|(_, c)| c.is_seed())
                .map(|(url, c)| PeerStatus {
                    url: url.clone(),
                    name: None,
                    version: None,
                    reachable: false,
                    last_ok: c.last_ok,
                    last_error: Some(format!("not verified yet ({} failed probes)", c.failures)),
                }),
        );
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// The link of the peer at `url` (any alias), if verified.
    pub fn link(&self, url: &str) -> Option<Link> {
        let members = self.members();
        let uuid = members.by_url.get(&normalize(url))?;
        members.peers.get(uuid).map(|p| p.link.clone())
    }

    /// Every verified peer's URL and link, except the one `except` names (any alias).
    pub fn links_except(&self, except: Option<&str>) -> Vec<(String, Link)> {
        let members = self.members();
        let skip = except.and_then(|u| members.by_url.get(&normalize(u)).copied());
        members
            .peers
            .iter()
            .filter(|(uuid, _)| Some(**uuid) != skip)
            .map(|(_, p)| (p.record.url.clone(), p.link.clone()))
            .collect()
    }

    /// Asks the peer at `url` for a digest sync soon.
    pub fn request_sync(&self, url: &str) {
        if let Some(link) = self.link(url) {
            link.sync_now.notify_one();
        }
    }

    /// How long a peer's worker waits between digest syncs: `poll_interval` per peer
    /// (so the cluster does about one sync per interval, as a whole), ±50 % jitter.
    pub fn sync_period(&self) -> Duration {
        let n = self.members().peers.len().max(1) as u32;
        let base = self.timing.poll_interval.saturating_mul(n);
        base.mul_f64(rand::random::<f64>() + 0.5)
    }

    /// How long an accepted ad waits before it is offered to peers.
    pub fn forward_delay(&self) -> Duration {
        self.timing.forward_delay
    }

    /// Counts a running worker until the guard drops.
    pub fn worker_started(&self) -> WorkerGuard<'_> {
        self.workers.fetch_add(1, Ordering::SeqCst);
        WorkerGuard(&self.workers)
    }

    fn persist(&self, record: &PeerRecord) {
        if let Err(error) = record.save(&self.store) {
            tracing::warn!(peer = %record.url, %error, "could not persist peer");
        }
    }

    /// The membership worker: verifies due candidates, a few at a time, and every
    /// `poll_interval` forgets what has been unreachable too long, until cancelled.
    pub async fn run(self: Arc<Self>) {
        let forget_every = self.timing.poll_interval;
        let mut forget_at = Instant::now() + forget_every;
        loop {
            if forget_at <= Instant::now() {
                self.forget_stale(self.timing.forget_after.as_millis() as u64);
                forget_at = Instant::now() + forget_every;
            }
            let due = self.take_due();
            if !due.is_empty() {
                let probes = due.iter().map(|url| self.probe(url));
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = join_all(probes) => {}
                }
                continue;
            }
            let next = self.next_probe().map_or(forget_at, |at| at.min(forget_at));
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.probe_wake.notified() => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    fn take_due(&self) -> Vec<String> {
        let now = Instant::now();
        let mut members = self.members();
        let mut due: Vec<(&String, &mut Candidate)> = members
            .candidates
            .iter_mut()
            .filter(|(_, c)| !c.probing && c.next_probe <= now)
            .collect();
        due.sort_by_key(|(_, c)| (!c.is_seed(), c.next_probe));
        due.into_iter()
            .take(PROBE_PARALLEL)
            .map(|(url, c)| {
                c.probing = true;
                url.clone()
            })
            .collect()
    }

    fn next_probe(&self) -> Option<Instant> {
        self.members()
            .candidates
            .values()
            .filter(|c| !c.probing)
            .map(|c| c.next_probe)
            .min()
    }

    async fn probe(&self, url: &str) {
        let Some(replicator) = self.replicator.upgrade() else {
            return;
        };
        let result = match replicator.client().director_self(url).await {
            Ok(signed) if signed.ad.kind != ServerKind::Director => {
                Err(format!("served a {} ad, not a director's", signed.ad.kind))
            }
            Ok(signed) => match replicator.accept(signed.clone(), Some(url)).await {
                Ok(_) => Ok(signed),
                Err(error) => Err(format!("its director ad is refused: {error}")),
            },
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(signed) => self.verified(url, &signed),
            Err(error) => self.probe_failed(url, &error),
        }
    }

    fn probe_failed(&self, url: &str, error: &str) {
        let now = self.clock.now_ms();
        let mut members = self.members();
        let Some(candidate) = members.candidates.get_mut(url) else {
            return;
        };
        candidate.probing = false;
        candidate.failures = candidate.failures.saturating_add(1);
        let exp =
            PROBE_BACKOFF.saturating_mul(1u32 << candidate.failures.min(16).saturating_sub(1));
        let max = if candidate.is_seed() {
            SEED_BACKOFF_MAX
        } else {
            PROBE_BACKOFF_MAX
        };
        candidate.next_probe = if std::mem::take(&mut candidate.poked) {
            Instant::now()
        } else {
            Instant::now() + exp.min(max)
        };
        // Seeds, and peers of an earlier life, are worth a warning; a URL merely heard of
        // is not.
        let expected = candidate.is_seed() || candidate.last_ok > 0;
        if expected && due(&mut candidate.last_logged, now) {
            tracing::warn!(candidate = %url, %error, failures = candidate.failures, "director not verified (no signed director ad from it yet)");
        } else {
            tracing::debug!(candidate = %url, %error, failures = candidate.failures, "candidate not verified");
        }
    }

    /// `url` served `signed`, a trusted director ad: it is this director, an alias of
    /// a peer, or a peer (new, or the same director restarted).
    fn verified(&self, url: &str, signed: &SignedAd) {
        let ad = &signed.ad;
        let canonical = normalize(&ad.data_url);
        let mut members = self.members();
        let Some(candidate) = members.candidates.remove(url) else {
            return;
        };
        if self.is_me(ad) {
            tracing::info!(url = %url, "this URL is this director");
            members.self_aliases.insert(url.to_string());
            return;
        }
        // Checked again under the members lock: a trust reload that lands after the
        // probe's check either is seen here or drops this peer right after (see
        // `apply_trust`), so a director no longer trusted never stays a peer.
        if !self.admitted(signed) {
            members.candidates.insert(url.to_string(), candidate);
            drop(members);
            self.probe_failed(url, "its director ad is no longer admitted by the trust");
            return;
        }
        let uuid = ad.instance_id.uuid;
        if canonical != url {
            // An alias: forward only to the URL the director signed for itself.
            match members.peers.get_mut(&uuid) {
                Some(peer) => {
                    mark_all(&mut peer.record.sources, candidate.sources);
                    peer.aliases.insert(url.to_string());
                    members.by_url.insert(url.to_string(), uuid);
                    tracing::info!(alias = %url, peer = %canonical, "alias of a known director");
                }
                None => {
                    drop(members);
                    tracing::debug!(alias = %url, peer = %canonical, "alias of a director; verifying its own URL");
                    self.add(&canonical, Source::Learned);
                }
            }
            return;
        }
        let now = self.clock.now_ms();
        // The same director restarted, or its ad reached us before the probe finished.
        if let Some(old) = members.by_url.get(&canonical).copied()
            && let Some(mut peer) = members.peers.remove(&old)
        {
            peer.signed = signed.clone();
            mark_all(&mut peer.record.sources, candidate.sources);
            members.by_url.retain(|_, u| *u != old);
            for alias in peer.aliases.iter().chain(Some(&peer.record.url)) {
                members.by_url.insert(alias.clone(), uuid);
            }
            members.peers.insert(uuid, peer);
            return;
        }
        let mut record = PeerRecord {
            url: canonical.clone(),
            sources: candidate.sources,
            first_seen: candidate.first_seen,
            last_ok: now,
        };
        if let Some(existing) = members.peers.get_mut(&uuid) {
            // Known under another URL: this one becomes an alias.
            mark_all(&mut existing.record.sources, record.sources);
            existing.aliases.insert(canonical.clone());
            members.by_url.insert(canonical, uuid);
            return;
        }
        let link = Link {
            queue: Arc::new(PeerQueue::default()),
            cancel: self.cancel.child_token(),
            sync_now: Arc::new(Notify::new()),
        };
        record.last_ok = now;
        members.by_url.insert(canonical.clone(), uuid);
        members.peers.insert(
            uuid,
            Peer {
                record: record.clone(),
                aliases: BTreeSet::new(),
                reachable: true,
                last_error: None,
                last_logged: None,
                signed: signed.clone(),
                link: link.clone(),
                in_sync: None,
            },
        );
        drop(members);
        self.persist(&record);
        tracing::info!(peer = %canonical, name = %ad.name, instance = %uuid, "verified a director");
        if let Some(replicator) = self.replicator.upgrade() {
            self.tracker.spawn(replicator.run_peer(canonical, link));
        }
    }
}

impl Candidate {
    fn new(sources: PeerSources, first_seen: UnixMillis, next_probe: Instant) -> Self {
        Self {
            sources,
            first_seen,
            last_ok: 0,
            failures: 0,
            next_probe,
            probing: false,
            poked: false,
            last_logged: None,
        }
    }

    fn is_seed(&self) -> bool {
        self.sources.configured || self.sources.discovery
    }
}

/// True (and notes `now`) if nothing was logged in the last [`LOG_EVERY_MS`].
fn due(last: &mut Option<UnixMillis>, now: UnixMillis) -> bool {
    if last.is_some_and(|t| now.saturating_sub(t) < LOG_EVERY_MS) {
        return false;
    }
    *last = Some(now);
    true
}

fn mark(sources: &mut PeerSources, source: Source) {
    match source {
        Source::Configured => sources.configured = true,
        Source::Discovery => sources.discovery = true,
        Source::Learned => sources.learned = true,
    }
}

fn mark_all(sources: &mut PeerSources, more: PeerSources) {
    sources.configured |= more.configured;
    sources.discovery |= more.discovery;
    sources.learned |= more.learned;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn set(dir: &std::path::Path, clock: Arc<ManualClock>, max_candidates: usize) -> PeerSet {
        let store = Store::open(dir).unwrap();
        PeerSet::load(
            SelfInfo {
                url: "http://me:1/".into(),
                uuid: Uuid::from_u128(7),
                name: "me".into(),
            },
            store,
            clock,
            PeerTiming {
                poll_interval: Duration::from_secs(60),
                max_candidates,
                forget_after: Duration::from_secs(5),
                forward_delay: Duration::from_secs(2),
            },
            Weak::new(),
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    #[test]
    fn candidates_are_capped_and_seeds_always_fit() {
        let dir = tempfile::tempdir().unwrap();
        let peers = set(dir.path(), ManualClock::new(1_000), 2);
        assert!(
            !peers.add("http://me:1", Source::Configured),
            "never itself"
        );
        assert!(!peers.add("not a url", Source::Learned));
        assert!(peers.add("http://a:1", Source::Learned));
        assert!(peers.add("http://b:1", Source::Learned));
        assert!(!peers.add("http://c:1", Source::Learned), "full");
        assert!(
            peers.add("http://seed:1", Source::Configured),
            "seeds always fit"
        );
        // A learned candidate that failed its probes makes room for a new one.
        for _ in 0..EVICTABLE_AFTER {
            peers.probe_failed("http://a:1", "refused");
        }
        assert!(peers.add("http://c:1", Source::Learned));
        assert_eq!(
            peers.candidates(),
            vec!["http://b:1", "http://c:1", "http://seed:1"]
        );
        assert!(peers.urls().is_empty(), "no candidate is a peer");
        let listed: Vec<String> = peers
            .listing(me_info())
            .into_iter()
            .map(|d| d.advertise_url)
            .collect();
        assert_eq!(
            listed,
            vec!["http://me:1", "http://seed:1"],
            "learned candidates are not listed"
        );
    }

    #[test]
    fn configured_comes_from_the_current_config_only() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        {
            let peers = set(dir.path(), clock.clone(), 8);
            // What an earlier life verified and persisted, configured at the time.
            peers.persist(&PeerRecord {
                url: "http://removed:1".into(),
                sources: PeerSources {
                    configured: true,
                    ..PeerSources::default()
                },
                first_seen: 1_000,
                last_ok: 1_000,
            });
        }
        let peers = set(dir.path(), clock.clone(), 8);
        peers.add("http://kept:1", Source::Configured);
        assert_eq!(
            peers.candidates(),
            vec!["http://kept:1", "http://removed:1"]
        );
        clock.advance(10_000);
        peers.forget_stale(5_000);
        assert_eq!(
            peers.candidates(),
            vec!["http://kept:1"],
            "a URL no longer in the config is forgotten like any learned one"
        );
        drop(peers);
        let peers = set(dir.path(), clock, 8);
        assert!(peers.candidates().is_empty(), "and not loaded again");
    }

    fn me_info() -> DirectorInfo {
        DirectorInfo {
            name: "me".into(),
            start_time: 1,
            instance_id: String::new(),
            generation_id: 0,
            version: String::new(),
            expiry: 0,
            advertise_url: "http://me:1".into(),
            last_seen: 0,
            reachable: true,
            is_self: true,
        }
    }
}
