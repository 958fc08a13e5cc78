//! The director's embedded database: sled behind a narrow API. Nothing sled-typed leaks.
//!
//! Trees: `ads` (ad key -> [`StoredAd`]), `peers` (advertise URL -> the bytes of a
//! `crate::peers::PeerRecord`), `meta` (schema version, last start time), `quarantine`
//! (values that failed their checksum, kept for inspection). Every value is a [`codec`]
//! envelope. The domain types and their encodings live with the domain (`crate::ad`,
//! `crate::peers`); the store depends on `ad` (it checks ad values at load) and never
//! on routing, replication or peers. Beside sled, a
//! manifest ([`manifest`]) records what the `ads` tree should hold; a store that does not
//! match it is damaged, and [`Store::open_or_recover`] moves it aside loudly.

mod durability;
mod manifest;
mod migrate;
mod recover;
pub mod upkeep;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ad::{AdKey, StoredAd};
use crate::clock::UnixMillis;
use crate::codec::{self, CodecError};

pub use manifest::{FILE as MANIFEST_FILE, Tally, TreeState};
pub use migrate::SCHEMA_VERSION;
pub use recover::{Damage, stuck_readers};

use durability::{GroupCommit, Handles, scan_state};

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

/// sled 0.34 writes a snapshot to `snap.<lsn>.generating` and then renames it. A write
/// that fails (a full disk) leaves that file behind, and sled, which does not skip such
/// names, reads it as its newest snapshot and reports corruption at every later open: a
/// full disk would brick the store for good. The file is never a finished snapshot, so it
/// is removed before sled opens the directory.
fn remove_unfinished_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::warn!(file = %entry.path().display(), "removed sled's unfinished snapshot (left by a failed write)")
                }
                Err(error) => {
                    tracing::warn!(file = %entry.path().display(), %error, "cannot remove sled's unfinished snapshot")
                }
            }
        }
    }
}

/// Opens sled, waiting briefly for its file lock: a previous handle in this process (or
/// a process that is just exiting) releases it from a background thread.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    remove_unfinished_snapshots(dir);
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

/// What [`Store::load_ads_with`] found besides the sound ads.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Keys of values that failed their checks (moved to quarantine).
    pub quarantined: Vec<String>,
    /// The tree does not match the manifest: what was found. The store is damaged; see
    /// [`Store::replace_damaged`].
    pub mismatch: Option<String>,
}

/// The director's database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The manifest found at open, checked (and taken) by the first load's scan.
    expected: std::sync::Mutex<Option<manifest::Manifest>>,
    /// Damage found at open or load.
    damage: std::sync::Mutex<Option<recover::Found>>,
    commits: GroupCommit,
    /// Held by the one [`Store::flush`] whose commit is under way (the others wait here
    /// without a thread, and the next commit covers all of them); holds when the last
    /// commit started.
    turn: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Least time between the starts of two commits, unless a batch fills first. A commit (a
/// manifest slot rewritten with one `fdatasync`, and sled's flush of its log) costs
/// about the same for one ad as for a hundred; at a steady trickle of registrations (167 a
/// second at 10,000 servers a minute) commits back to back carried one or two ads each,
/// and cost a quarter of a director's CPU. Writers arriving within the gap share the next
/// commit; after an idle moment a commit starts at once. The gap bounds how long a
/// registration waits for its acknowledgement at a trickle.
pub(crate) const MIN_COMMIT_GAP: std::time::Duration = std::time::Duration::from_millis(100);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const LAST_STARTED_AT: &[u8] = b"last_started_at";
/// `meta` key: the damage this store replaced, until a peer refilled it ([`Damage`]).
const DAMAGE: &[u8] = b"damage";
/// `meta` key: the signers' fingerprint of the trust every held signed ad was last
/// checked against (see [`Store::swept_signers`]).
const SWEPT_SIGNERS: &[u8] = b"swept_signers";

impl Store {
    /// Opens (creating if needed) and migrates the store in `dir`. A damaged manifest, a
    /// missing manifest where the schema says one is kept, or sled files without a
    /// database are [`StoreError::Damaged`]; the `ads` tree is checked against the
    /// manifest by the first load's scan, which the director runs before any write.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let damaged = |message: String| StoreError::Damaged {
            path: dir.to_path_buf(),
            message,
        };
        let had_files = dir.join("conf").exists() || dir.join("db").exists();
        let recorded = manifest::read(dir).map_err(|e| match e {
            manifest::ManifestError::Damaged { .. } => damaged(e.to_string()),
            manifest::ManifestError::Io { .. } => StoreError::Database {
                path: dir.to_path_buf(),
                message: e.to_string(),
            },
        })?;
        let err = |e: sled::Error| classify(dir, e);
        let db = open_db(dir).map_err(err)?;
        let previous_schema = migrate::migrate(&db, dir)?;
        let handles = Handles::open(db).map_err(err)?;
        let found = match (recorded, previous_schema) {
            // Checked against the tree by the load's one scan (`load_ads_with`).
            (Some(_), _) => None,
            (None, Some(v)) if v >= migrate::MANIFEST_SINCE => {
                return Err(damaged(format!(
                    "the manifest {} is missing",
                    manifest::FILE
                )));
            }
            (None, None) if had_files => {
                return Err(damaged(
                    "sled's files are present but hold no database, and there is no manifest"
                        .into(),
                ));
            }
            // A new store, or one from before manifests: start the record now.
            (None, _) => {
                let found = scan_state(&handles.ads).map_err(err)?;
                let first = manifest::Manifest {
                    generation: 0,
                    committed: found.state(),
                    pending: found.state(),
                    clock_high_water: 0,
                };
                manifest::write(dir, &first).map_err(|e| StoreError::Database {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                })?;
                Some(found)
            }
        };
        let generation = recorded.map_or(0, |m| m.generation);
        let clock_high_water = recorded.map_or(0, |m| m.clock_high_water);
        let store = Self {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                expected: std::sync::Mutex::new(recorded),
                damage: std::sync::Mutex::new(None),
                commits: GroupCommit::new(dir, handles, found, generation, clock_high_water),
                turn: tokio::sync::Mutex::new(None),
            }),
        };
        *lock(&store.inner.damage) = store.recorded_damage();
        Ok(store)
    }

    fn handles(&self) -> Result<Handles, StoreError> {
        self.inner
            .commits
            .handles()
            .ok_or_else(|| StoreError::Database {
                path: self.inner.path.clone(),
                message: "sled is being reopened after a failed commit".into(),
            })
    }

    /// Reads every entry of every tree, so that a page sled cannot read is found now:
    /// its corruption is damage ([`StoreError::Damaged`]).
    pub(super) fn read_every_entry(&self) -> Result<(), StoreError> {
        let handles = self.handles()?;
        for tree in [
            &handles.ads,
            &handles.peers,
            &handles.meta,
            &handles.quarantine,
        ] {
            for entry in tree.iter() {
                entry.map_err(|e| classify(&self.inner.path, e))?;
            }
        }
        Ok(())
    }

    fn db_error(&self, e: sled::Error) -> StoreError {
        classify(&self.inner.path, e)
    }

    /// Writes an ad (not yet durable: see [`Store::flush`]).
    pub fn put_ad(&self, stored: &StoredAd) -> Result<(), StoreError> {
        let key = stored.ad.key().to_string();
        self.inner
            .commits
            .stage(key.into_bytes(), Some(stored.encode()));
        Ok(())
    }

    /// Removes an ad.
    pub fn remove_ad(&self, key: &AdKey) -> Result<(), StoreError> {
        self.inner.commits.stage(key.to_string().into_bytes(), None);
        Ok(())
    }

    /// Reads every ad; values that fail their checks are moved to quarantine and reported.
    /// A tree that does not match the manifest found at open is
    /// [`StoreError::Damaged`] (see [`Store::load_or_recover`]).
    pub fn load_ads(&self) -> Result<LoadedAds, StoreError> {
        let mut ads = Vec::new();
        let report = self.load_ads_with(|ad| ads.push(ad))?;
        match report.mismatch {
            Some(message) => Err(StoreError::Damaged {
                path: self.inner.path.clone(),
                message,
            }),
            None => Ok(LoadedAds {
                ads,
                quarantined: report.quarantined,
            }),
        }
    }

    /// The one scan of the `ads` tree at load: hands each sound ad to `sink` as it is
    /// decoded (so a caller can index while the scan goes on), and checks the tree against
    /// the manifest found at open (the first load only). On a mismatch nothing is
    /// quarantined and the report says what was found.
    pub fn load_ads_with(&self, mut sink: impl FnMut(StoredAd)) -> Result<LoadReport, StoreError> {
        let handles = self.handles()?;
        let mut found = Tally::default();
        let mut damaged = Vec::new();
        for entry in handles.ads.iter() {
            let (key, value) = entry.map_err(|e| self.db_error(e))?;
            found.add(&key, &value);
            match StoredAd::decode(&value) {
                Ok(ad) => sink(ad),
                Err(error) => damaged.push((key, value, error)),
            }
        }
        let expected = lock(&self.inner.expected).take();
        if let Some(m) = expected.filter(|m| !m.accepts(found.state())) {
            let pending = if m.pending == m.committed {
                String::new()
            } else {
                format!(" (or {} once its last commit lands)", m.pending)
            };
            return Ok(LoadReport {
                quarantined: Vec::new(),
                mismatch: Some(format!(
                    "the database holds {} but the manifest of commit {} says {}{pending}",
                    found.state(),
                    m.generation,
                    m.committed
                )),
            });
        }
        self.inner.commits.set_tree(found);
        let mut quarantined = Vec::new();
        for (key, value, error) in damaged {
            let key_text = String::from_utf8_lossy(&key).into_owned();
            tracing::error!(key = %key_text, %error, "stored ad is damaged; quarantined");
            handles
                .quarantine
                .insert(&key, value)
                .map_err(|e| self.db_error(e))?;
            self.inner.commits.stage(key.to_vec(), None);
            quarantined.push(key_text);
        }
        if !quarantined.is_empty() {
            self.flush_blocking()?;
        }
        Ok(LoadReport {
            quarantined,
            mismatch: None,
        })
    }

    /// Bytes the database takes on disk (walks its files: for scrapes, not hot paths).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        fn walk(dir: &Path) -> std::io::Result<u64> {
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                total += if meta.is_dir() {
                    walk(&entry.path())?
                } else {
                    meta.len()
                };
            }
            Ok(total)
        }
        walk(&self.inner.path).map_err(|e| StoreError::Database {
            path: self.inner.path.clone(),
            message: e.to_string(),
        })
    }

    /// Reads one ad (a write waiting for its commit included).
    pub fn get_ad(&self, key: &AdKey) -> Result<Option<StoredAd>, StoreError> {
        let key_text = key.to_string();
        let value = match self.inner.commits.staged(key_text.as_bytes()) {
            Some(staged) => staged,
            None => self
                .handles()?
                .ads
                .get(key_text.as_bytes())
                .map_err(|e| self.db_error(e))?
                .map(|v| v.to_vec()),
        };
        match value {
            None => Ok(None),
            Some(value) => {
                StoredAd::decode(&value)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        key: key_text,
                        source,
                    })
            }
        }
    }

    /// Writes a peer's record (bytes the peer layer encoded) under its URL.
    pub fn put_peer(&self, url: &str, value: &[u8]) -> Result<(), StoreError> {
        self.handles()?
            .peers
            .insert(url.as_bytes(), value)
            .map_err(|e| self.db_error(e))?;
        self.inner.commits.note_write();
        Ok(())
    }

    /// Forgets a peer.
    pub fn remove_peer(&self, url: &str) -> Result<(), StoreError> {
        self.handles()?
            .peers
            .remove(url.as_bytes())
            .map_err(|e| self.db_error(e))?;
        self.inner.commits.note_write();
        Ok(())
    }

    /// Every peer record as stored: (URL, bytes), for the peer layer to decode.
    pub fn load_peers(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut peers = Vec::new();
        for entry in self.handles()?.peers.iter() {
            let (key, value) = entry.map_err(|e| self.db_error(e))?;
            peers.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(peers)
    }

    /// The start time of this director's previous life, if any.
    pub fn last_started_at(&self) -> Result<Option<UnixMillis>, StoreError> {
        let value = self.read_meta(LAST_STARTED_AT)?;
        Ok(value.and_then(|v| codec::decode::<UnixMillis>(&v).ok()))
    }

    /// Records this life's start time (durable before returning).
    pub fn set_last_started_at(&self, started_at: UnixMillis) -> Result<(), StoreError> {
        self.write_meta(LAST_STARTED_AT, Some(&codec::encode(&started_at)))
    }

    /// The signers' fingerprint ([`crate::trust::Trust::signers_fingerprint`]) of the
    /// trust that every signed ad held here was checked against, if one is recorded.
    pub fn swept_signers(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let value = self.read_meta(SWEPT_SIGNERS)?;
        Ok(value.and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok()))
    }

    /// Records (or, with `None`, forgets) that fingerprint; durable before returning.
    pub fn set_swept_signers(&self, fingerprint: Option<[u8; 32]>) -> Result<(), StoreError> {
        self.write_meta(SWEPT_SIGNERS, fingerprint.as_ref().map(|f| &f[..]))
    }

    fn read_meta(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.handles()?.meta.get(key).map_err(|e| self.db_error(e))
    }

    /// Sets (or, with `None`, removes) a `meta` entry; durable before returning.
    fn write_meta(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let handles = self.handles()?;
        match value {
            Some(v) => handles.meta.insert(key, v).map(|_| ()),
            None => handles.meta.remove(key).map(|_| ()),
        }
        .map_err(|e| self.db_error(e))?;
        handles.db.flush().map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// The latest wall-clock reading recorded by this store's previous commits (Unix ms;
    /// 0 if none): a floor for the clock after a restart (see [`crate::clock::Floor`]).
    pub fn clock_high_water(&self) -> UnixMillis {
        self.inner.commits.clock_high_water()
    }

    /// Raises the wall-clock reading that the next commit records.
    pub fn note_time(&self, now: UnixMillis) {
        self.inner.commits.note_time(now);
    }

    /// While commits fail (a full disk), why the last one failed.
    pub fn write_failing(&self) -> Option<String> {
        self.inner.commits.failing()
    }

    /// Runs `work` on the group commit off the async runtime (it blocks on fsync).
    async fn blocking(
        &self,
        work: impl FnOnce(&GroupCommit) -> Result<(), String> + Send + 'static,
    ) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner.commits))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|message| self.commit_error(message))
    }

    fn commit_error(&self, message: String) -> StoreError {
        StoreError::Database {
            path: self.inner.path.clone(),
            message,
        }
    }

    /// Waits until every write made before the call is on disk. Concurrent callers share
    /// one commit (group commit): one commit runs at a time, at least [`MIN_COMMIT_GAP`]
    /// after the previous one started, and covers every write made before it starts.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let target = self.inner.commits.written();
        if self.inner.commits.covers(target) {
            return Ok(());
        }
        let mut last_start = self.inner.turn.lock().await;
        if self.inner.commits.covers(target) {
            return Ok(()); // the commit we waited behind covered our writes
        }
        if let Some(last) = *last_start {
            let gap = tokio::time::sleep_until(last + MIN_COMMIT_GAP);
            tokio::pin!(gap);
            // A batch that fills up meanwhile starts the commit early.
            while !self.inner.commits.is_full() {
                tokio::select! {
                    _ = gap.as_mut() => break,
                    _ = self.inner.commits.filled() => {}
                }
            }
        }
        *last_start = Some(tokio::time::Instant::now());
        self.blocking(move |commits| commits.commit(target)).await
    }

    /// Commits whatever waits, even if no write was noted since the last failed commit.
    pub async fn flush_pending(&self) -> Result<(), StoreError> {
        self.blocking(|commits| commits.commit(u64::MAX)).await
    }

    /// True if a write is not yet covered by a flush (tests of durability promises).
    pub fn has_unflushed_writes(&self) -> bool {
        self.inner.commits.pending()
    }

    /// Commits synchronously and confirms the commit in the manifest (shutdown, tools).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let target = self.inner.commits.written();
        let commits = &self.inner.commits;
        commits
            .commit(target)
            .and_then(|()| commits.confirm())
            .map_err(|message| self.commit_error(message))
    }

    /// Records in the manifest that the last commit is on disk (see `manifest`).
    pub async fn confirm(&self) -> Result<(), StoreError> {
        self.blocking(|commits| commits.confirm()).await
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Raw access for tests that damage values on purpose (bypasses the manifest).
    #[doc(hidden)]
    pub fn overwrite_raw_ad(&self, key: &AdKey, bytes: &[u8]) -> Result<(), StoreError> {
        self.handles()?
            .ads
            .insert(key.to_string().as_bytes(), bytes)
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
