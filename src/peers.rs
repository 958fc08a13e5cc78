//! The set of known directors: seeds, learned peers and this director itself.
//!
//! Rules (from Pelican's multi-director incidents): a director always counts itself;
//! configured and discovery seeds are never dropped; a peer missing from somebody
//! else's list is never removed for that; only a learned peer that has been unreachable
//! for `forget_after` is forgotten. Every change is persisted.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ad::{Ad, InstanceId};
use crate::clock::{SharedClock, UnixMillis};
use crate::store::{PeerRecord, PeerSources, Store};
use crate::wire::DirectorInfo;

/// How a URL was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `federation.directors`.
    Configured,
    /// The discovery document.
    Discovery,
    /// A peer's list or ad.
    Learned,
}

#[derive(Debug, Clone)]
struct Peer {
    record: PeerRecord,
    reachable: bool,
    last_error: Option<String>,
    ad: Option<DirectorAdInfo>,
    /// The last digest exchange found nothing to pull or push (None: none yet).
    in_sync: Option<bool>,
}

#[derive(Debug, Clone)]
struct DirectorAdInfo {
    name: String,
    instance: InstanceId,
    generation: u64,
    version: String,
    expiry: UnixMillis,
}

impl DirectorAdInfo {
    fn of(ad: &Ad) -> Self {
        Self {
            name: ad.name.clone(),
            instance: ad.instance_id,
            generation: ad.generation,
            version: ad.version.clone(),
            expiry: ad.expires_at,
        }
    }
}

/// Known directors other than this one, plus what this one is.
pub struct PeerSet {
    self_url: String,
    self_uuid: Uuid,
    aliases: Mutex<Vec<String>>,
    peers: Mutex<BTreeMap<String, Peer>>,
    store: Store,
    clock: SharedClock,
    added: mpsc::UnboundedSender<String>,
}

/// Normalises a director URL for comparison.
pub fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

impl PeerSet {
    /// Loads persisted peers; the receiver yields the URL of every peer added later.
    pub fn load(
        self_url: &str,
        self_uuid: Uuid,
        store: Store,
        clock: SharedClock,
    ) -> (Self, mpsc::UnboundedReceiver<String>) {
        let persisted = store.load_peers().unwrap_or_else(|error| {
            tracing::error!(%error, "could not read stored peers; starting with seeds only");
            Vec::new()
        });
        let self_url = normalize(self_url);
        let peers = persisted
            .into_iter()
            .filter(|r| normalize(&r.url) != self_url)
            .map(|record| {
                (
                    record.url.clone(),
                    Peer {
                        record,
                        reachable: false,
                        last_error: None,
                        ad: None,
                        in_sync: None,
                    },
                )
            })
            .collect();
        let (added, added_rx) = mpsc::unbounded_channel();
        let set = Self {
            self_url,
            self_uuid,
            aliases: Mutex::new(Vec::new()),
            peers: Mutex::new(peers),
            store,
            clock,
            added,
        };
        (set, added_rx)
    }

    /// This director's advertise URL.
    pub fn self_url(&self) -> &str {
        &self.self_url
    }

    /// True if `url` is this director (its advertise URL or a known alias).
    pub fn is_self(&self, url: &str) -> bool {
        let url = normalize(url);
        url == self.self_url
            || self
                .aliases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&url)
    }

    /// Adds `url` (or marks how else it is known). Returns true if it is new.
    pub fn add(&self, url: &str, source: Source) -> bool {
        let url = normalize(url);
        if url.is_empty() || self.is_self(&url) || crate::config::check_url(&url).is_err() {
            return false;
        }
        let now = self.clock.now_ms();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let (is_new, record) = match peers.get_mut(&url) {
            Some(peer) => {
                let before = peer.record.sources;
                mark(&mut peer.record.sources, source);
                if before == peer.record.sources {
                    return false;
                }
                (false, peer.record.clone())
            }
            None => {
                let mut sources = PeerSources::default();
                mark(&mut sources, source);
                let record = PeerRecord {
                    url: url.clone(),
                    sources,
                    first_seen: now,
                    last_ok: 0,
                };
                peers.insert(
                    url.clone(),
                    Peer {
                        record: record.clone(),
                        reachable: false,
                        last_error: None,
                        ad: None,
                        in_sync: None,
                    },
                );
                (true, record)
            }
        };
        drop(peers);
        if let Err(error) = self.store.put_peer(&record) {
            tracing::warn!(peer = %url, %error, "could not persist peer");
        }
        if is_new {
            tracing::info!(peer = %url, ?source, "learned of a director");
            let _ = self.added.send(url.clone());
        }
        is_new
    }

    /// Learns from a director's ad: its URL, or that the URL is this director.
    pub fn note_director_ad(&self, ad: &Ad) {
        if ad.instance_id.uuid == self.self_uuid {
            let url = normalize(&ad.data_url);
            if url != self.self_url {
                self.aliases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(url.clone());
                self.peers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&url);
                let _ = self.store.remove_peer(&url);
            }
            return;
        }
        self.add(&ad.data_url, Source::Learned);
        let url = normalize(&ad.data_url);
        if let Some(peer) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&url)
        {
            peer.ad = Some(DirectorAdInfo::of(ad));
        }
    }

    /// Records a successful contact. Returns true if the peer was unreachable before
    /// (it came back: time to catch up with it).
    pub fn mark_ok(&self, url: &str) -> bool {
        let url = normalize(url);
        let now = self.clock.now_ms();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(peer) = peers.get_mut(&url) else {
            return false;
        };
        let came_back = !peer.reachable;
        peer.reachable = true;
        peer.last_error = None;
        let persist = now.saturating_sub(peer.record.last_ok) > 10_000 || came_back;
        peer.record.last_ok = now;
        let record = peer.record.clone();
        drop(peers);
        if persist {
            let _ = self.store.put_peer(&record);
        }
        came_back
    }

    /// Records a failed contact.
    pub fn mark_failed(&self, url: &str, error: &str) {
        let url = normalize(url);
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.get_mut(&url) {
            if peer.reachable {
                tracing::warn!(peer = %url, %error, "director unreachable");
            } else {
                tracing::debug!(peer = %url, %error, "director still unreachable");
            }
            peer.reachable = false;
            peer.last_error = Some(error.to_string());
        }
    }

    /// Forgets learned peers unreachable for longer than `forget_after_ms`.
    pub fn forget_stale(&self, forget_after_ms: u64) -> Vec<String> {
        let now = self.clock.now_ms();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<String> = peers
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
            .collect();
        for url in &stale {
            peers.remove(url);
            let _ = self.store.remove_peer(url);
            tracing::info!(peer = %url, "forgot a director unreachable for too long");
        }
        stale
    }

    /// URLs of every known peer (never this director).
    pub fn urls(&self) -> Vec<String> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Number of directors known, this one included.
    pub fn count_with_self(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len() + 1
    }

    /// Every known director as listed by `/api/v1.0/director/directors`, self first.
    pub fn listing(&self, me: DirectorInfo) -> Vec<DirectorInfo> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![me];
        out.extend(peers.values().map(|p| {
            let ad = p.ad.as_ref();
            DirectorInfo {
                name: ad.map(|a| a.name.clone()).unwrap_or_default(),
                start_time: ad.map(|a| a.instance.started_at).unwrap_or(0),
                instance_id: ad.map(|a| a.instance.uuid.to_string()).unwrap_or_default(),
                generation_id: ad.map(|a| a.generation).unwrap_or(0),
                version: ad.map(|a| a.version.clone()).unwrap_or_default(),
                expiry: ad.map(|a| a.expiry).unwrap_or(0),
                advertise_url: p.record.url.clone(),
                last_seen: p.record.last_ok,
                reachable: p.reachable,
                is_self: false,
            }
        }));
        out
    }

    /// Records the outcome of a digest exchange with `url`.
    pub fn note_sync(&self, url: &str, in_sync: bool) {
        let url = normalize(url);
        if let Some(peer) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&url)
        {
            peer.in_sync = Some(in_sync);
        }
    }

    /// Per peer: URL, in sync at the last digest exchange, last successful contact
    /// (metrics).
    pub fn sync_states(&self) -> Vec<(String, Option<bool>, UnixMillis)> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| (p.record.url.clone(), p.in_sync, p.record.last_ok))
            .collect()
    }

    /// Last error seen per peer (status page).
    pub fn errors(&self) -> Vec<(String, Option<String>)> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| (p.record.url.clone(), p.last_error.clone()))
            .collect()
    }
}

fn mark(sources: &mut PeerSources, source: Source) {
    match source {
        Source::Configured => sources.configured = true,
        Source::Discovery => sources.discovery = true,
        Source::Learned => sources.learned = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::clock::ManualClock;
    use crate::fixtures;

    fn set(
        dir: &std::path::Path,
        clock: Arc<ManualClock>,
    ) -> (PeerSet, mpsc::UnboundedReceiver<String>) {
        let store = Store::open(dir).unwrap();
        PeerSet::load("http://me:1/", Uuid::from_u128(7), store, clock)
    }

    use std::sync::Arc;

    #[test]
    fn self_is_never_a_peer_and_seeds_are_never_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let (peers, mut added) = set(dir.path(), clock.clone());
        assert!(
            !peers.add("http://me:1", Source::Configured),
            "never itself"
        );
        assert!(!peers.add("not a url", Source::Learned));
        assert!(peers.add("http://seed:1/", Source::Configured));
        assert!(peers.add("http://learned:1", Source::Learned));
        assert!(
            !peers.add("http://learned:1", Source::Learned),
            "already known"
        );
        assert_eq!(added.try_recv().unwrap(), "http://seed:1");
        assert_eq!(added.try_recv().unwrap(), "http://learned:1");
        peers.mark_failed("http://seed:1", "down");
        peers.mark_failed("http://learned:1", "down");
        clock.advance(10_000);
        assert_eq!(
            peers.forget_stale(5_000),
            vec!["http://learned:1".to_string()]
        );
        assert_eq!(peers.urls(), vec!["http://seed:1".to_string()]);
        assert_eq!(peers.count_with_self(), 2);
        let listing = peers.listing(crate::wire::DirectorInfo {
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
        });
        assert!(listing[0].is_self && listing.len() == 2);
    }

    #[test]
    fn peers_survive_a_restart_and_aliases_of_self_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        {
            let (peers, _) = set(dir.path(), clock.clone());
            peers.add("http://other:1", Source::Discovery);
            peers.add("http://me-alias:1", Source::Learned);
        }
        let (peers, _) = set(dir.path(), clock);
        assert_eq!(peers.urls().len(), 2);
        // A director ad carrying this process's UUID under another URL: that URL is me.
        let mut ad = fixtures::ad("me", ServerKind::Director, &[], 5, 1);
        ad.instance_id.uuid = Uuid::from_u128(7);
        ad.data_url = "http://me-alias:1".into();
        peers.note_director_ad(&ad);
        assert!(peers.is_self("http://me-alias:1"));
        assert_eq!(peers.urls(), vec!["http://other:1".to_string()]);
        assert!(
            peers.mark_ok("http://other:1"),
            "first contact counts as coming back"
        );
        assert!(!peers.mark_ok("http://other:1"));
    }
}
