//! A per-peer outbox that coalesces by ad key: only the newest version waits to be sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::ad::StoredAd;
use crate::ad::{AdKey, is_newer};

/// Ads waiting to be forwarded to one peer.
#[derive(Default)]
pub struct PeerQueue {
    pending: Mutex<HashMap<AdKey, Arc<StoredAd>>>,
    ready: Notify,
}

impl PeerQueue {
    /// Queues `ad`, replacing an older version of the same key; ignores an older one.
    pub fn push(&self, ad: Arc<StoredAd>) {
        let key = ad.ad.key();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let held = pending.get(&key).map(|a| a.ad.version());
        if is_newer(ad.ad.version(), held) {
            pending.insert(key, ad);
            drop(pending);
            self.ready.notify_one();
        }
    }

    /// Puts back ads that failed to send, unless a newer version arrived meanwhile.
    pub fn put_back(&self, ads: Vec<Arc<StoredAd>>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for ad in ads {
            let key = ad.ad.key();
            let held = pending.get(&key).map(|a| a.ad.version());
            if is_newer(ad.ad.version(), held) {
                pending.insert(key, ad);
            }
        }
    }

    /// Takes up to `max` ads to send.
    pub fn take(&self, max: usize) -> Vec<Arc<StoredAd>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<AdKey> = pending.keys().take(max).cloned().collect();
        keys.iter().filter_map(|k| pending.remove(k)).collect()
    }

    /// Number of ads waiting.
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
}
