//! Group commit: many writers share one commit (manifest, atomic batch, fsync).
//!
//! Writes to the `ads` tree wait in memory until the next commit, which records the
//! before and after states in the manifest, applies them to sled as one atomic batch
//! and flushes. A failed commit (a full disk) keeps its writes pending and marks sled
//! broken: sled's I/O error is sticky for the life of the handle, so the next commit
//! reopens sled first. That is how ingest recovers by itself when space returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use super::manifest::{self, Manifest, Tally, TreeState};
use crate::clock::UnixMillis;

/// Writes waiting that start the next commit without waiting out the gap between
/// commits: bulk ingest (forward batches, catch-up pages) commits as fast as the disk
/// allows, a trickle of registrations shares one commit per gap.
const FULL_BATCH: usize = 512;

/// Writes of the `ads` tree not yet committed: key -> new value (`None`: removed).
#[derive(Default)]
pub(super) struct Pending {
    pub(super) ops: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Writes noted so far (ads, peers and meta alike).
    pub(super) written: u64,
}

/// The open sled handles.
#[derive(Clone)]
pub(super) struct Handles {
    pub(super) db: sled::Db,
    pub(super) ads: sled::Tree,
    pub(super) peers: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) quarantine: sled::Tree,
}

impl Handles {
    pub(super) fn open(db: sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            ads: db.open_tree("ads")?,
            peers: db.open_tree("peers")?,
            meta: db.open_tree("meta")?,
            quarantine: db.open_tree("quarantine")?,
            db,
        })
    }
}

/// The tally of a tree as it is (a full scan).
pub(super) fn scan_state(tree: &sled::Tree) -> Result<Tally, sled::Error> {
    let mut tally = Tally::default();
    for entry in tree.iter() {
        let (key, value) = entry?;
        tally.add(&key, &value);
    }
    Ok(tally)
}

struct CommitState {
    /// What the `ads` tree holds on disk (`None` until the load's scan has counted it).
    tree: Option<Tally>,
    /// The manifest's generation.
    generation: u64,
    /// sled failed: reopen before the next commit.
    broken: bool,
    /// The manifest on disk still names the last commit as pending.
    unconfirmed: bool,
    /// Writes the manifest.
    manifest: manifest::Writer,
}

/// Commits writes in batches and keeps the manifest.
pub(super) struct GroupCommit {
    dir: PathBuf,
    handles: RwLock<Option<Handles>>,
    pending: Mutex<Pending>,
    state: Mutex<CommitState>,
    durable: AtomicU64,
    clock_high_water: AtomicU64,
    failing: Mutex<Option<String>>,
    /// Signalled when the writes waiting reach [`FULL_BATCH`].
    full: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCommit {
    pub(super) fn new(
        dir: &Path,
        handles: Handles,
        tree: Option<Tally>,
        generation: u64,
        clock_high_water: u64,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            handles: RwLock::new(Some(handles)),
            pending: Mutex::new(Pending::default()),
            state: Mutex::new(CommitState {
                tree,
                generation,
                broken: false,
                unconfirmed: false,
                manifest: manifest::Writer::new(dir),
            }),
            durable: AtomicU64::new(0),
            clock_high_water: AtomicU64::new(clock_high_water),
            failing: Mutex::new(None),
            full: tokio::sync::Notify::new(),
        }
    }

    /// The sled handles (`None` while a failed sled is being reopened).
    pub(super) fn handles(&self) -> Option<Handles> {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a write of the `ads` tree, applied at the next commit.
    pub(super) fn stage(&self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let mut pending = lock(&self.pending);
        pending.ops.insert(key, value);
        pending.written += 1;
        if pending.ops.len() == FULL_BATCH {
            self.full.notify_one();
        }
    }

    /// True if enough writes wait to start a commit without waiting out the gap.
    pub(super) fn is_full(&self) -> bool {
        lock(&self.pending).ops.len() >= FULL_BATCH
    }

    /// Completes when the writes waiting reach a full batch (or already had, unnoticed).
    pub(super) async fn filled(&self) {
        self.full.notified().await
    }

    /// The staged value for `key`, if a write waits: `Some(None)` is a staged removal.
    pub(super) fn staged(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        lock(&self.pending).ops.get(key).cloned()
    }

    /// Records that a direct write (peers, meta) happened.
    pub(super) fn note_write(&self) {
        lock(&self.pending).written += 1;
    }

    /// Writes noted so far.
    pub(super) fn written(&self) -> u64 {
        lock(&self.pending).written
    }

    /// Raises the latest wall-clock reading recorded in the next manifest.
    pub(super) fn note_time(&self, now: u64) {
        self.clock_high_water.fetch_max(now, Ordering::SeqCst);
    }

    /// The latest wall-clock reading noted (or read from the manifest at open).
    pub(super) fn clock_high_water(&self) -> u64 {
        self.clock_high_water.load(Ordering::SeqCst)
    }

    /// Why the last commit failed, while commits are failing.
    pub(super) fn failing(&self) -> Option<String> {
        lock(&self.failing).clone()
    }

    /// True if some noted write is not durable yet.
    pub(super) fn pending(&self) -> bool {
        !self.covers(self.written())
    }

    /// True if every write up to `target` is durable.
    pub(super) fn covers(&self, target: u64) -> bool {
        self.durable.load(Ordering::SeqCst) >= target
    }

    /// Makes every write noted up to `target` durable (blocking: run it off the runtime).
    pub(super) fn commit(&self, target: u64) -> Result<(), String> {
        let mut state = lock(&self.state);
        if self.covers(target) {
            return Ok(()); // someone else's commit covered our writes
        }
        let (ops, covered) = {
            let mut pending = lock(&self.pending);
            (std::mem::take(&mut pending.ops), pending.written)
        };
        let result = if state.broken {
            self.reopen(&mut state)
        } else {
            Ok(())
        }
        .and_then(|()| self.apply(&mut state, &ops));
        match result {
            Ok(()) => {
                self.durable.fetch_max(covered, Ordering::SeqCst);
                if lock(&self.failing).take().is_some() {
                    tracing::warn!(dir = %self.dir.display(), "store writes succeed again");
                }
                Ok(())
            }
            Err(message) => {
                state.broken = true;
                // Put the writes back under any newer ones staged meanwhile.
                let mut pending = lock(&self.pending);
                for (key, value) in ops {
                    pending.ops.entry(key).or_insert(value);
                }
                drop(pending);
                let mut failing = lock(&self.failing);
                if failing.is_none() {
                    tracing::error!(dir = %self.dir.display(), error = %message, "store commit failed; ingest refuses ads until a commit succeeds");
                }
                *failing = Some(message.clone());
                Err(message)
            }
        }
    }

    /// Records in the manifest that the last commit is on disk, so that from now on a
    /// tree that lost it is damage, not a crash before its flush.
    pub(super) fn confirm(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        let tree = state.tree.as_ref().map(Tally::state);
        let Some(tree) = tree.filter(|_| state.unconfirmed && !state.broken) else {
            return Ok(());
        };
        let manifest = Manifest {
            generation: state.generation,
            committed: tree,
            pending: tree,
            clock_high_water: self.clock_high_water.load(Ordering::SeqCst),
        };
        state.manifest.write(&manifest).map_err(|e| e.to_string())?;
        state.unconfirmed = false;
        Ok(())
    }

    fn apply(
        &self,
        state: &mut CommitState,
        ops: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<(), String> {
        let handles = self.handles().ok_or("the store is closed")?;
        let text = |e: sled::Error| e.to_string();
        if !ops.is_empty() {
            let tally = match &mut state.tree {
                Some(tally) => tally,
                tree @ None => tree.insert(scan_state(&handles.ads).map_err(text)?),
            };
            let current = tally.state();
            let mut next = current;
            let mut batch = sled::Batch::default();
            let mut hashes = Vec::with_capacity(ops.len());
            for (key, value) in ops {
                let hash = value.as_ref().map(|value| Tally::hash(key, value));
                next = tally.after(next, key, hash);
                hashes.push(hash);
                match value {
                    Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                    None => batch.remove(key.as_slice()),
                }
            }
            let manifest = Manifest {
                generation: state.generation + 1,
                committed: current,
                pending: next,
                clock_high_water: self.clock_high_water.load(Ordering::SeqCst),
            };
            state.manifest.write(&manifest).map_err(|e| e.to_string())?;
            state.generation += 1;
            state.unconfirmed = true;
            handles.ads.apply_batch(batch).map_err(text)?;
            handles.db.flush().map_err(text)?;
            for (key, hash) in ops.keys().zip(hashes) {
                tally.set(key, hash);
            }
            debug_assert_eq!(tally.state(), next);
        } else {
            handles.db.flush().map_err(text)?;
        }
        Ok(())
    }

    /// Records what the load's scan counted in the `ads` tree.
    pub(super) fn set_tree(&self, found: Tally) {
        lock(&self.state).tree = Some(found);
    }

    /// Closes sled, moves the damaged store aside ([`super::recover::move_aside`]), and
    /// continues in a fresh store in the data directory (its first manifest written);
    /// writes waiting to be committed are kept. Returns where the damaged files went.
    pub(super) fn replace(&self, now: UnixMillis) -> Result<PathBuf, String> {
        let mut state = lock(&self.state);
        *self.handles.write().unwrap_or_else(|e| e.into_inner()) = None;
        let aside = super::recover::move_aside(&self.dir, now)?;
        let db = super::open_db(&self.dir).map_err(|e| e.to_string())?;
        super::migrate::migrate(&db, &self.dir).map_err(|e| e.to_string())?;
        let handles = Handles::open(db).map_err(|e| e.to_string())?;
        let empty = TreeState::default();
        let manifest = Manifest {
            generation: 0,
            committed: empty,
            pending: empty,
            clock_high_water: self.clock_high_water.load(Ordering::SeqCst),
        };
        let mut writer = manifest::Writer::new(&self.dir);
        writer.write(&manifest).map_err(|e| e.to_string())?;
        *state = CommitState {
            tree: Some(Tally::default()),
            generation: 0,
            broken: false,
            unconfirmed: false,
            manifest: writer,
        };
        *self.handles.write().unwrap_or_else(|e| e.into_inner()) = Some(handles);
        Ok(aside)
    }

    /// Drops the failed sled handle and opens the database again; the tree's state is
    /// read back, since the failed commit may or may not have reached the disk.
    fn reopen(&self, state: &mut CommitState) -> Result<(), String> {
        *self.handles.write().unwrap_or_else(|e| e.into_inner()) = None;
        let db = super::open_db(&self.dir).map_err(|e| format!("reopening sled: {e}"))?;
        let handles = Handles::open(db).map_err(|e| format!("reopening sled: {e}"))?;
        let found = scan_state(&handles.ads).map_err(|e| e.to_string())?;
        let before = state.tree.as_ref().map(Tally::state);
        if before.is_some_and(|tree| tree != found.state()) {
            tracing::warn!(found = %found.state(), "the failed commit reached the disk after all");
        }
        state.tree = Some(found);
        state.broken = false;
        *self.handles.write().unwrap_or_else(|e| e.into_inner()) = Some(handles);
        tracing::info!(dir = %self.dir.display(), "sled reopened after a failed commit");
        Ok(())
    }
}
