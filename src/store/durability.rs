//! Group commit: many writers wait on one fsync instead of one each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tracks writes and makes them durable in batches.
pub struct GroupCommit {
    db: sled::Db,
    written: AtomicU64,
    durable: Arc<AtomicU64>,
    flusher: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    pub(super) fn new(db: sled::Db) -> Self {
        Self {
            db,
            written: AtomicU64::new(0),
            durable: Arc::new(AtomicU64::new(0)),
            flusher: tokio::sync::Mutex::new(()),
        }
    }

    /// Records that a write happened (call after the write).
    pub(super) fn note_write(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// True if some noted write is not durable yet.
    pub(super) fn pending(&self) -> bool {
        self.durable.load(Ordering::SeqCst) < self.written.load(Ordering::SeqCst)
    }

    /// Returns once every write noted before the call is durable.
    pub(super) async fn flush(&self) -> Result<(), String> {
        let target = self.written.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let _turn = self.flusher.lock().await;
        if self.durable.load(Ordering::SeqCst) >= target {
            return Ok(()); // someone else's fsync covered our writes
        }
        let covered = self.written.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}
