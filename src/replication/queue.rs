//! A per-peer outbox that coalesces by ad key: only the newest version waits to be sent.
//!
//! Each entry is either *wanted* (the peer is known to lack it: send the full ad when it
//! is due) or *to offer* (ask the peer first, with its compact version, and send only if
//! it answers that it lacks it). Ads accepted from services are queued to offer after
//! `peers.forward_delay`: by then the peer has normally had its own copy from the
//! service, and the offer costs a few bytes instead of a full ad.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ad::StoredAd;
use crate::ad::{AdKey, is_newer};

/// One waiting ad.
struct Entry {
    ad: Arc<StoredAd>,
    /// Not sent (nor offered) before this.
    due: Instant,
    /// The peer is known to lack it: no offer needed.
    wanted: bool,
}

/// Ads taken from a queue to send now, split by what to do with them.
#[derive(Default)]
pub struct Due {
    /// Send in full.
    pub wanted: Vec<Arc<StoredAd>>,
    /// Offer first.
    pub to_offer: Vec<Arc<StoredAd>>,
}

/// Ads waiting to be forwarded to one peer.
#[derive(Default)]
pub struct PeerQueue {
    pending: Mutex<HashMap<AdKey, Entry>>,
    ready: Notify,
}

impl PeerQueue {
    /// Queues `ad` to send in full now (the peer lacks it, or this is this director's own
    /// ad), replacing an older version of the same key; ignores an older one. The same
    /// version already waiting to be offered becomes wanted and due now.
    pub fn push(&self, ad: Arc<StoredAd>) {
        self.insert(ad, Instant::now(), true);
    }

    /// Queues `ad` to be offered to the peer at `due`, replacing an older version (and
    /// keeping the earlier due time, so a steady stream of versions is never held back
    /// for ever); ignores an older one.
    pub fn push_offer(&self, ad: Arc<StoredAd>, due: Instant) {
        self.insert(ad, due, false);
    }

    fn insert(&self, ad: Arc<StoredAd>, due: Instant, wanted: bool) {
        let key = ad.ad.key();
        let version = ad.ad.version();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = pending.is_empty();
        let changed = match pending.get_mut(&key) {
            Some(held) if held.ad.ad.version() == version => {
                let upgrade = wanted && !held.wanted;
                if upgrade {
                    held.wanted = true;
                    held.due = held.due.min(due);
                }
                upgrade
            }
            Some(held) if !is_newer(version, Some(held.ad.ad.version())) => false,
            held => {
                let due = held.map_or(due, |h| h.due.min(due));
                pending.insert(key, Entry { ad, due, wanted });
                true
            }
        };
        drop(pending);
        // The worker sleeps until the earliest entry is due. An ad to offer is due after
        // every entry already waiting (the delay is the same for all), so it needs to
        // wake the worker only if nothing waited: waking it for every ad (hundreds a
        // second at scale) would cost a scan of the queue each time.
        if changed && (wanted || was_empty) {
            self.ready.notify_one();
        }
    }

    /// Puts back ads that failed to send (due now, in full), unless a newer version
    /// arrived meanwhile.
    pub fn put_back(&self, ads: Vec<Arc<StoredAd>>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for ad in ads {
            let key = ad.ad.key();
            let held = pending.get(&key).map(|e| e.ad.ad.version());
            if is_newer(ad.ad.version(), held) {
                pending.insert(
                    key,
                    Entry {
                        ad,
                        due: now,
                        wanted: true,
                    },
                );
            }
        }
    }

    /// Puts back ads whose offer failed (due now, to offer again), unless a newer
    /// version arrived meanwhile.
    pub fn put_back_offers(&self, ads: Vec<Arc<StoredAd>>) {
        let now = Instant::now();
        for ad in ads {
            self.insert(ad, now, false);
        }
    }

    /// Takes the ads due at `now`: up to `max_wanted` wanted ones if any are due (they go
    /// first, in full), else up to `max_offers` to offer.
    pub fn take_due(&self, now: Instant, max_wanted: usize, max_offers: usize) -> Due {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let due = |e: &Entry| e.due <= now;
        let any_wanted = pending.values().any(|e| e.wanted && due(e));
        let max = if any_wanted { max_wanted } else { max_offers };
        let keys: Vec<AdKey> = pending
            .iter()
            .filter(|(_, e)| due(e) && e.wanted == any_wanted)
            .take(max)
            .map(|(k, _)| k.clone())
            .collect();
        let ads = keys
            .iter()
            .filter_map(|k| pending.remove(k))
            .map(|e| e.ad)
            .collect();
        if any_wanted {
            Due {
                wanted: ads,
                to_offer: Vec::new(),
            }
        } else {
            Due {
                wanted: Vec::new(),
                to_offer: ads,
            }
        }
    }

    /// Takes up to `max` ads, due or not, to send in full (tests of batching).
    #[cfg(test)]
    pub fn take(&self, max: usize) -> Vec<Arc<StoredAd>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<AdKey> = pending.keys().take(max).cloned().collect();
        keys.iter()
            .filter_map(|k| pending.remove(k))
            .map(|e| e.ad)
            .collect()
    }

    /// When the worker should next take from the queue (`None`: nothing waits): when the
    /// earliest wanted ad is due, or `slack` after the earliest ad to offer is due, so
    /// that one offer carries every ad that fell due meanwhile.
    pub fn next_wake(&self, slack: Duration) -> Option<Instant> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .values()
            .map(|e| if e.wanted { e.due } else { e.due + slack })
            .min()
    }

    /// Number of ads waiting (due or not).
    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when something was pushed since the last call.
    pub async fn wait(&self) {
        self.ready.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::fixtures;

    fn stored(generation: u64) -> Arc<StoredAd> {
        let ad = fixtures::ad("o", ServerKind::Origin, &["/o"], 10, generation);
        Arc::new(StoredAd::new(
            ad.sign(&fixtures::key_for("o")),
            10,
            u64::MAX,
        ))
    }

    #[test]
    fn coalesces_to_the_newest_version() {
        let q = PeerQueue::default();
        q.push(stored(1));
        q.push(stored(3));
        q.push(stored(2));
        assert_eq!(q.len(), 1);
        let taken = q.take(10);
        assert_eq!(taken[0].ad.generation, 3);
        q.push(stored(4));
        q.put_back(taken);
        assert_eq!(q.take(10)[0].ad.generation, 4, "put_back never downgrades");
    }

    #[tokio::test(start_paused = true)]
    async fn offers_wait_until_due_and_wanted_ads_go_first() {
        let q = PeerQueue::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        q.push_offer(stored(1), later);
        assert_eq!(q.next_wake(Duration::ZERO), Some(later));
        assert_eq!(
            q.next_wake(Duration::from_secs(1)),
            Some(later + Duration::from_secs(1))
        );
        let due = q.take_due(now, 10, 10);
        assert!(
            due.wanted.is_empty() && due.to_offer.is_empty(),
            "not due yet"
        );
        // A newer version keeps the earlier due time: a stream of versions still goes.
        q.push_offer(stored(2), later + Duration::from_secs(2));
        assert_eq!(q.next_wake(Duration::ZERO), Some(later));
        let due = q.take_due(later, 10, 10);
        assert_eq!(due.to_offer.len(), 1);
        assert_eq!(due.to_offer[0].ad.generation, 2);
        // The same version pushed in full (a digest found the peer lacks it) becomes
        // wanted and due at once.
        q.push_offer(stored(3), later);
        q.push(stored(3));
        let due = q.take_due(now, 10, 10);
        assert_eq!(due.wanted.len(), 1);
        assert!(due.to_offer.is_empty());
    }
}
