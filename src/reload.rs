//! Live trust: re-reads the trust file (on request or when it changes on disk), puts it
//! in force without a restart, and drops every held ad it no longer admits, and every
//! peer whose director ad it no longer admits (see [`PeerSet::apply_trust`]).
//!
//! One reload runs at a time; requests that arrive meanwhile are served together by
//! the next one, so a storm of SIGHUPs costs two re-reads. A file that
//! does not parse is refused whole and the trust in force stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::ad::{ServerKind, VerifyingKey};
use crate::ledger::{Ledger, Revoked};
use crate::metrics::Metrics;
use crate::peers::PeerSet;
use crate::store::StoreError;
use crate::trust::{Trust, TrustFileError};

/// What a reload (or the check at start) did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Entries in the trust now in force.
    pub servers: usize,
    /// Held ads dropped because the new trust refuses them.
    pub revoked: Vec<Revoked>,
    /// False if the trust no longer lists this director (with its key) as a director.
    pub self_trusted: bool,
    /// Peers dropped as forward targets because the trust no longer admits their
    /// director ad (advertise URLs); they stay candidates until admitted again.
    pub dropped_peers: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The trust file is unreadable or invalid: the previous trust stays in force.
    #[error(transparent)]
    Trust(#[from] TrustFileError),
    /// The new trust is in force but revoked ads could not all be removed from disk
    /// (they no longer route; the next start drops them again).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// This director's own entry, as the trust file must list it.
#[derive(Debug, Clone)]
pub struct SelfEntry {
    /// Its name.
    pub name: String,
    /// Its public key.
    pub key: VerifyingKey,
}

/// Owns the trust file's path and every change of trust.
pub struct TrustReloader {
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    /// The peers to hold to the new trust, once they exist (they start after the
    /// first check of the held ads).
    peers: OnceLock<Arc<PeerSet>>,
    own: SelfEntry,
    path: Mutex<PathBuf>,
    /// Reload requests so far; a request is served by any reload that read the file
    /// after it was made.
    requests: AtomicU64,
    /// Held by the reload in progress: the last successful reload's request count and
    /// report.
    one_at_a_time: tokio::sync::Mutex<Option<(u64, ReloadReport)>>,
}

impl TrustReloader {
    /// A reloader for the trust file at `path`.
    pub fn new(ledger: Arc<Ledger>, metrics: Arc<Metrics>, own: SelfEntry, path: PathBuf) -> Self {
        Self {
            ledger,
            metrics,
            peers: OnceLock::new(),
            own,
            path: Mutex::new(path),
            requests: AtomicU64::new(0),
            one_at_a_time: tokio::sync::Mutex::new(None),
        }
    }

    /// Holds `peers` to every trust put in force from now on.
    pub fn attach_peers(&self, peers: Arc<PeerSet>) {
        let _ = self.peers.set(peers);
    }

    /// The trust file's path.
    pub fn path(&self) -> PathBuf {
        self.path.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Points later reloads at another file (a config reload changed `federation.trust`).
    pub fn set_path(&self, path: PathBuf) {
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = path;
    }

    /// Re-reads the trust file and puts it in force. Requests made while a reload waits
    /// its turn are served by one reload (a storm of SIGHUPs reads the file twice).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mine = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.one_at_a_time.lock().await;
        if let Some((covered, report)) = last.as_ref()
            && *covered >= mine
        {
            return Ok(report.clone());
        }
        let covers = self.requests.load(Ordering::SeqCst);
        let report = self.reload_now().await?;
        *last = Some((covers, report.clone()));
        Ok(report)
    }

    async fn reload_now(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.path();
        let reading = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Trust::load(&reading))
            .await
            .unwrap_or_else(|e| {
                Err(TrustFileError::Invalid {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            });
        let trust = match loaded {
            Ok(trust) => trust,
            Err(error) => {
                self.metrics.trust_reload("refused");
                tracing::error!(path = %path.display(), %error, "trust file refused; the previous trust stays in force");
                return Err(error.into());
            }
        };
        let revoked = self.ledger.set_trust(trust).await?;
        let dropped_peers = match self.peers.get() {
            Some(peers) => peers.apply_trust(&self.ledger.trust()),
            None => Vec::new(),
        };
        self.metrics.trust_reload("applied");
        let report = ReloadReport {
            dropped_peers,
            ..self.report(revoked)
        };
        tracing::info!(
            path = %path.display(),
            servers = report.servers,
            revoked = report.revoked.len(),
            dropped_peers = report.dropped_peers.len(),
            "trust file reloaded"
        );
        Ok(report)
    }

    /// Drops held ads the trust in force does not admit: run once at start, since ads
    /// stored under an older trust file are loaded from disk.
    pub async fn check_held(&self) -> Result<ReloadReport, StoreError> {
        let _one = self.one_at_a_time.lock().await;
        let revoked = self.ledger.revoke_untrusted().await?;
        Ok(self.report(revoked))
    }

    /// Logs and counts what a sweep did.
    fn report(&self, revoked: Vec<Revoked>) -> ReloadReport {
        for r in &revoked {
            tracing::warn!(server = %r.key, reason = %r.reason, "server no longer trusted: stopped routing to it, ad removed");
        }
        self.metrics.revoked(revoked.len() as u64);
        let trust = self.ledger.trust();
        let self_trusted = trust.lists(&self.own.name, ServerKind::Director, &self.own.key);
        if !self_trusted {
            // Defined behaviour: keep serving redirects and replicating the ads the
            // trust admits; this director's own ad is refused (here and at every peer
            // with the same file), so peers stop learning of it until the file is fixed.
            tracing::error!(
                name = %self.own.name,
                "THIS DIRECTOR IS NOT IN THE TRUST FILE as a director with its key: it keeps serving, but its own ad is refused; fix the trust file"
            );
        }
        ReloadReport {
            servers: trust.len(),
            revoked,
            self_trusted,
            dropped_peers: Vec::new(),
        }
    }
}

/// What identifies one version of a file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls the trust file every `interval` and reloads once a change has held still for
/// one interval (an editor's or a config manager's write in several steps is read once,
/// whole). Polling rather than inotify: it sees a file replaced through a symlink swap
/// (Kubernetes ConfigMaps) or a bind mount, costs one `stat` per interval, and needs no
/// extra thread or crate. The file as it is now counts as applied (call this right
/// after the trust was loaded).
pub fn watch(
    reloader: Arc<TrustReloader>,
    interval: Duration,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let applied = stamp(&reloader.path());
    watch_from(reloader, applied, interval, cancel)
}

async fn watch_from(
    reloader: Arc<TrustReloader>,
    mut applied: Stamp,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut pending: Option<Stamp> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // One `stat` of a small local file: cheap enough not to need a blocking thread.
        let now = stamp(&reloader.path());
        if now == applied {
            pending = None;
            continue;
        }
        if pending != Some(now) {
            pending = Some(now);
            continue;
        }
        tracing::info!(path = %reloader.path().display(), "trust file changed on disk");
        // Refused or not, this version has been read: wait for the next change.
        let _ = reloader.reload().await;
        applied = now;
        pending = None;
    }
}
