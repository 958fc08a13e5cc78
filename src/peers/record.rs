//! A known director as persisted ([`PeerRecord`]) and its stored bytes (a codec envelope).
//!
//! The store keeps these bytes under the peer's URL and knows nothing of their shape.

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::codec::{self, CodecError};
use crate::store::{Store, StoreError};

/// How a director learned of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeerSources {
    /// From `federation.directors` in config.
    pub configured: bool,
    /// From the federation discovery document.
    pub discovery: bool,
    /// From another director's list or ad.
    pub learned: bool,
}

/// A known director, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Its advertise URL.
    pub url: String,
    /// How it was learned.
    pub sources: PeerSources,
    /// When it was first learned.
    pub first_seen: UnixMillis,
    /// When it last answered (0: never).
    pub last_ok: UnixMillis,
}

impl PeerRecord {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads bytes written by [`PeerRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes)
    }

    /// Writes this record under its URL.
    pub fn save(&self, store: &Store) -> Result<(), StoreError> {
        store.put_peer(&self.url, &self.encode())
    }

    /// Reads every sound record (damaged ones are skipped with a log).
    pub fn load_all(store: &Store) -> Result<Vec<PeerRecord>, StoreError> {
        let mut peers = Vec::new();
        for (key, value) in store.load_peers()? {
            match PeerRecord::decode(&value) {
                Ok(peer) => peers.push(peer),
                Err(error) => {
                    tracing::error!(%key, %error, "stored peer is damaged; skipped")
                }
            }
        }
        Ok(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pelican::token::sha256_hex;

    fn record() -> PeerRecord {
        PeerRecord {
            url: "http://d.example:1".into(),
            sources: PeerSources {
                configured: true,
                discovery: false,
                learned: true,
            },
            first_seen: 5,
            last_ok: 6,
        }
    }

    /// Pinned against the bytes this build wrote when the type moved here from the store.
    #[test]
    fn stored_bytes_are_pinned() {
        assert_eq!(
            sha256_hex(&record().encode()),
            "5ac1aea8a29f11917c5b59ee524592aa5cd9ad31f3d5340d4e1fb5b7990fc7d9"
        );
        assert_eq!(PeerRecord::decode(&record().encode()), Ok(record()));
    }

    #[tokio::test]
    async fn saved_records_load_back_and_damaged_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        record().save(&store).unwrap();
        let mut damaged = record().encode();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        store.put_peer("http://e.example:1", &damaged).unwrap();
        store.flush().await.unwrap();
        assert_eq!(PeerRecord::load_all(&store).unwrap(), vec![record()]);
    }
}
