//! The director's embedded database: sled behind a narrow API. Nothing sled-typed leaks.
//!
//! Trees: `ads` (ad key -> [`StoredAd`]), `peers` (advertise URL -> [`PeerRecord`]),
//! `meta` (schema version, last start time), `quarantine` (values that failed their
//! checksum, kept for inspection). Every value is a [`codec`] envelope.

mod durability;
mod migrate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ad::{Ad, AdKey, SignedAd};
use crate::clock::UnixMillis;
use crate::codec::{self, CodecError};

pub use durability::GroupCommit;
pub use migrate::SCHEMA_VERSION;

/// An ad as a director keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAd {
    /// The ad as signed by its server.
    pub ad: Ad,
    /// Its signature (base64url).
    pub signature: String,
    /// When this director first accepted this version.
    pub received_at: UnixMillis,
    /// When this director drops it: `min(ad.expires_at, received_at + max_lifetime)`.
    /// Never later than the signed expiry, so copies cannot extend an ad's life.
    pub expires_at: UnixMillis,
}

impl StoredAd {
    /// Wraps a verified signed ad received at `received_at`, clamping its lifetime.
    pub fn new(signed: SignedAd, received_at: UnixMillis, max_lifetime_ms: u64) -> Self {
        let expires_at = signed
            .ad
            .expires_at
            .min(received_at.saturating_add(max_lifetime_ms));
        Self {
            ad: signed.ad,
            signature: signed.signature,
            received_at,
            expires_at,
        }
    }

    /// The signed form, as sent to peers.
    pub fn signed(&self) -> SignedAd {
        SignedAd {
            ad: self.ad.clone(),
            signature: self.signature.clone(),
        }
    }
}

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

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or written.
    #[error("store at {path}: {message}")]
    Database {
        /// Data directory.
        path: PathBuf,
        /// sled's message.
        message: String,
    },
    /// The database files are damaged (sled reports corruption or panics opening them, or
    /// our schema record is unreadable).
    #[error("store at {path} is damaged: {message}")]
    Damaged {
        /// Data directory.
        path: PathBuf,
        /// What was found.
        message: String,
    },
    /// A value failed its checks.
    #[error("stored value {key}: {source}")]
    Corrupt {
        /// Key of the value.
        key: String,
        /// What failed.
        source: CodecError,
    },
    /// The database was written by a newer Skein.
    #[error("store schema version {found} is newer than this build understands ({supported})")]
    FutureSchema {
        /// Version on disk.
        found: u32,
        /// Newest this build reads.
        supported: u32,
    },
}

/// Opens sled, waiting briefly for its file lock: a previous handle in this process (or
/// a process that is just exiting) releases it from a background thread.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let config = sled::Config::new().path(dir).cache_capacity(64 << 20);
    let mut attempts = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && attempts < 30 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Sorts sled's errors into damage (move the store aside) and everything else.
fn classify(dir: &Path, error: sled::Error) -> StoreError {
    let path = dir.to_path_buf();
    let message = error.to_string();
    match error {
        sled::Error::Corruption { .. }
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_) => StoreError::Damaged { path, message },
        _ => StoreError::Database { path, message },
    }
}

/// What [`Store::load_ads`] found.
#[derive(Debug, Default)]
pub struct LoadedAds {
    /// Sound ads.
    pub ads: Vec<StoredAd>,
    /// Keys of values that failed their checks (moved to quarantine).
    pub quarantined: Vec<String>,
}

/// The director's database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    ads: sled::Tree,
    peers: sled::Tree,
    meta: sled::Tree,
    quarantine: sled::Tree,
    commits: GroupCommit,
}

const LAST_STARTED_AT: &[u8] = b"last_started_at";

impl Store {
    /// Opens (creating if needed) and migrates the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let err = |e: sled::Error| classify(dir, e);
        let db = open_db(dir).map_err(err)?;
        migrate::migrate(&db, dir)?;
        let ads = db.open_tree("ads").map_err(err)?;
        let peers = db.open_tree("peers").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        let quarantine = db.open_tree("quarantine").map_err(err)?;
        let commits = GroupCommit::new(db.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                db,
                ads,
                peers,
                meta,
                quarantine,
                commits,
            }),
        })
    }

    /// Opens the store; if it is damaged, moves the directory aside (loudly) and starts
    /// empty, so the director can serve and catch up from its peers. Errors that are not
    /// damage (a lock held by another process, permissions, a newer schema) are returned.
    pub fn open_or_recover(
        dir: &Path,
        now: UnixMillis,
    ) -> Result<(Self, Option<PathBuf>), StoreError> {
        // sled panics on some damage rather than reporting it.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::open(dir)))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "sled panicked while opening".into());
                Err(StoreError::Damaged {
                    path: dir.to_path_buf(),
                    message,
                })
            });
        match opened {
            Ok(store) => Ok((store, None)),
            // Only damage is moved aside: an I/O error (a full disk, or another process
            // holding the lock on this directory) must never cost a sound store.
            Err(first @ StoreError::Damaged { .. }) => {
                let aside = dir.with_extension(format!("corrupt-{now}"));
                tracing::error!(
                    path = %dir.display(),
                    moved_to = %aside.display(),
                    error = %first,
                    "store cannot be opened; moving it aside and starting empty"
                );
                std::fs::rename(dir, &aside).map_err(|e| StoreError::Database {
                    path: dir.to_path_buf(),
                    message: format!("cannot move damaged store aside: {e}"),
                })?;
                Ok((Self::open(dir)?, Some(aside)))
            }
            Err(other) => Err(other),
        }
    }

    fn db_error(&self, e: sled::Error) -> StoreError {
        StoreError::Database {
            path: self.inner.path.clone(),
            message: e.to_string(),
        }
    }

    /// Writes an ad (not yet durable: see [`Store::flush`]).
    pub fn put_ad(&self, stored: &StoredAd) -> Result<(), StoreError> {
        let key = stored.ad.key().to_string();
        self.inner
            .ads
            .insert(key.as_bytes(), codec::encode(stored))
            .map_err(|e| self.db_error(e))?;
        self.inner.commits.note_write();
        Ok(())
    }

    /// Removes an ad.
    pub fn remove_ad(&self, key: &AdKey) -> Result<(), StoreError> {
        self.inner
            .ads
            .remove(key.to_string().as_bytes())
            .map_err(|e| self.db_error(e))?;
        self.inner.commits.note_write();
        Ok(())
    }

    /// Reads every ad; values that fail their checks are moved to quarantine and reported.
    pub fn load_ads(&self) -> Result<LoadedAds, StoreError> {
        let mut ads = Vec::new();
        let quarantined = self.load_ads_with(|ad| ads.push(ad))?;
        Ok(LoadedAds { ads, quarantined })
    }

    /// Like [`Store::load_ads`], handing each sound ad to `sink` as it is decoded (so a
    /// caller can index while the scan goes on); returns the quarantined keys.
    pub fn load_ads_with(&self, mut sink: impl FnMut(StoredAd)) -> Result<Vec<String>, StoreError> {
        let mut loaded = LoadedAds::default();
        for entry in self.inner.ads.iter() {
            let (key, value) = entry.map_err(|e| self.db_error(e))?;
            match codec::decode::<StoredAd>(&value) {
                Ok(ad) => sink(ad),
                Err(error) => {
                    let key_text = String::from_utf8_lossy(&key).into_owned();
                    tracing::error!(key = %key_text, %error, "stored ad is damaged; quarantined");
                    self.inner
                        .quarantine
                        .insert(&key, value)
                        .map_err(|e| self.db_error(e))?;
                    self.inner.ads.remove(&key).map_err(|e| self.db_error(e))?;
                    loaded.quarantined.push(key_text);
                }
            }
        }
        if !loaded.quarantined.is_empty() {
            self.inner.commits.note_write();
        }
        Ok(loaded.quarantined)
    }

    /// Bytes the database takes on disk (walks its files: for scrapes, not hot paths).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(|e| self.db_error(e))
    }

    /// Reads one ad.
    pub fn get_ad(&self, key: &AdKey) -> Result<Option<StoredAd>, StoreError> {
        let key_text = key.to_string();
        match self
            .inner
            .ads
            .get(key_text.as_bytes())
            .map_err(|e| self.db_error(e))?
        {
            None => Ok(None),
            Some(value) => codec::decode(&value)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: key_text,
                    source,
                }),
        }
    }

    /// Writes a peer record.
    pub fn put_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        self.inner
            .peers
            .insert(peer.url.as_bytes(), codec::encode(peer))
            .map_err(|e| self.db_error(e))?;
        self.inner.commits.note_write();
        Ok(())
    }

    /// Forgets a peer.
    pub fn remove_peer(&self, url: &str) -> Result<(), StoreError> {
        self.inner
            .peers
            .remove(url.as_bytes())
            .map_err(|e| self.db_error(e))?;
        self.inner.commits.note_write();
        Ok(())
    }

    /// Reads every sound peer record (damaged ones are skipped with a log).
    pub fn load_peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        let mut peers = Vec::new();
        for entry in self.inner.peers.iter() {
            let (key, value) = entry.map_err(|e| self.db_error(e))?;
            match codec::decode::<PeerRecord>(&value) {
                Ok(peer) => peers.push(peer),
                Err(error) => tracing::error!(
                    key = %String::from_utf8_lossy(&key), %error, "stored peer is damaged; skipped"
                ),
            }
        }
        Ok(peers)
    }

    /// The start time of this director's previous life, if any.
    pub fn last_started_at(&self) -> Result<Option<UnixMillis>, StoreError> {
        let value = self
            .inner
            .meta
            .get(LAST_STARTED_AT)
            .map_err(|e| self.db_error(e))?;
        Ok(value.and_then(|v| codec::decode::<UnixMillis>(&v).ok()))
    }

    /// Records this life's start time (durable before returning).
    pub fn set_last_started_at(&self, started_at: UnixMillis) -> Result<(), StoreError> {
        self.inner
            .meta
            .insert(LAST_STARTED_AT, codec::encode(&started_at))
            .map_err(|e| self.db_error(e))?;
        self.inner.db.flush().map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Waits until every write made before the call is on disk. Concurrent callers share
    /// one fsync (group commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner
            .commits
            .flush()
            .await
            .map_err(|message| StoreError::Database {
                path: self.inner.path.clone(),
                message,
            })
    }

    /// Flushes synchronously (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|e| self.db_error(e))
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Raw access for tests that damage values on purpose.
    #[doc(hidden)]
    pub fn overwrite_raw_ad(&self, key: &AdKey, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner
            .ads
            .insert(key.to_string().as_bytes(), bytes)
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
