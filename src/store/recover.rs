//! A damaged store: found at open or by the load's scan, moved aside loudly, and
//! replaced by a fresh store holding the ads that survived.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use super::{DAMAGE, LoadedAds, Store, StoreError, classify, lock, open_db};
use crate::ad::StoredAd;
use crate::clock::UnixMillis;
use crate::codec;

/// Runs `open` and turns a panic (sled panics on some damage) into damage.
fn catching_panics<T>(
    dir: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "sled panicked while opening".into());
        Err(StoreError::Damaged {
            path: dir.to_path_buf(),
            message,
        })
    })
}

/// How long reading a whole store may take before it counts as damage: sled can loop
/// for ever over some damaged pages (seen in the `damaged` fault scenario: a log cut in
/// half, a thread spinning in `Tree::view_for_key`). A sound store reads at hundreds of
/// MB/s (100,000 ads in 160 ms), so this allows 25 times slower than that, and 10 s more.
fn read_deadline(dir: &Path) -> Duration {
    let bytes = std::fs::metadata(dir.join("db")).map_or(0, |m| m.len());
    Duration::from_secs(10) + Duration::from_secs_f64(bytes as f64 / 10e6)
}

/// Stack of the thread reading a store: more than a thread's usual 2 MiB (only what is
/// used is ever allocated), as deep as the main thread's, so that a damaged log that
/// makes sled recurse deeply does not overflow it (an overflow ends the process).
const READ_STACK: usize = 8 * 1024 * 1024;

/// The file in a data directory counting the starts that began opening its store and
/// did not finish: damage can end the process while sled opens the store (an allocation
/// of a length read from a damaged page, an overflowing stack), and no start after it
/// would get further.
pub(super) const OPENING_MARK: &str = "skein-opening";

/// Starts that died opening a store, in a row, after which the next moves it aside
/// unread: one could have been a kill at the wrong moment.
const DEATHS_BEFORE_DAMAGE: u32 = 2;

/// A start begins opening the store in `dir`: how many starts before it died doing so,
/// this one now counted (the mark is written only where the directory exists: a new
/// store has nothing that could kill it).
fn mark_opening(dir: &Path) -> u32 {
    let mark = dir.join(OPENING_MARK);
    let died = std::fs::read_to_string(&mark)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if dir.is_dir() {
        let written = std::fs::File::create(&mark).and_then(|mut file| {
            use std::io::Write;
            writeln!(file, "{}", died.saturating_add(1))?;
            file.sync_all()
        });
        if let Err(error) = written {
            tracing::warn!(path = %mark.display(), %error, "cannot mark the store as being opened; a store whose opening ends the process would stop every start");
        }
    }
    died
}

/// The start finished opening the store in `dir` (or moved it aside): no mark is left.
fn opening_finished(dir: &Path) {
    match std::fs::remove_file(dir.join(OPENING_MARK)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %dir.display(), %error, "cannot remove the mark of a store being opened")
        }
    }
}

/// How a read run by [`within_deadline`] ended.
enum Deadline<T> {
    /// It finished in time, with this result.
    Met(Result<T, StoreError>),
    /// It did not finish in time: damage (what this says), and its thread still reads.
    Missed(String),
}

impl<T> Deadline<T> {
    /// The read's result, a missed deadline being damage of the store in `dir`.
    fn into_result(self, dir: &Path) -> Result<T, StoreError> {
        match self {
            Deadline::Met(result) => result,
            Deadline::Missed(message) => Err(StoreError::Damaged {
                path: dir.to_path_buf(),
                message,
            }),
        }
    }
}

/// Reads given up on at their deadline and still running (see [`stuck_readers`]).
static STUCK_READERS: AtomicUsize = AtomicUsize::new(0);

/// Threads of this process still reading a store after their deadline: sled looping over
/// a damaged page. Each keeps a core busy until it ends, which may be never; only a new
/// process frees it (`skein serve` replaces itself when this is not 0 after its start).
pub fn stuck_readers() -> usize {
    STUCK_READERS.load(Ordering::SeqCst)
}

/// Runs `read` (a whole read of the store in `dir`) on a thread of its own, and gives up
/// after `deadline`: that is damage. sled cannot be interrupted, so a read that loops
/// keeps its thread (and a core) until it ends or the process does; an ERROR says so, and
/// [`stuck_readers`] counts it.
fn within_deadline<T: Send + 'static>(
    dir: &Path,
    deadline: Duration,
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Deadline<T> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    let given_up = Arc::new(AtomicBool::new(false));
    let late = given_up.clone();
    let spawned = std::thread::Builder::new()
        .name("store-read".into())
        .stack_size(READ_STACK)
        .spawn(move || {
            let read = read();
            // Counted as stuck only once given up, and uncounted if it ends after all
            // (the swap decides which side counts, so the two never race).
            if late.swap(true, Ordering::SeqCst) {
                STUCK_READERS.fetch_sub(1, Ordering::SeqCst);
            }
            let _ = done.send(read);
        });
    if let Err(e) = spawned {
        return Deadline::Met(Err(StoreError::Database {
            path: dir.to_path_buf(),
            message: format!("cannot start a thread to read the store: {e}"),
        }));
    }
    match result.recv_timeout(deadline) {
        Ok(read) => Deadline::Met(read),
        // The thread ended without an answer (it cannot panic past `read`'s own catch).
        Err(RecvTimeoutError::Disconnected) => Deadline::Met(Err(StoreError::Damaged {
            path: dir.to_path_buf(),
            message: "the thread reading the store ended without an answer".into(),
        })),
        Err(RecvTimeoutError::Timeout) => {
            if !given_up.swap(true, Ordering::SeqCst) {
                STUCK_READERS.fetch_add(1, Ordering::SeqCst);
            }
            tracing::error!(path = %dir.display(), deadline = ?deadline, "reading the store did not finish in time; it counts as damaged, and the thread reading it keeps a core busy until it ends or the process does");
            Deadline::Missed(format!(
                "reading the whole store did not finish within {deadline:?} (sled loops over a damaged page)"
            ))
        }
    }
}

/// A damaged store found at open, moved aside and replaced. The fresh store records it
/// until a peer has refilled it ([`Store::refilled`]), so that a start before then still
/// knows its ads are incomplete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Damage {
    /// What was found.
    pub what: String,
    /// Where the damaged directory now is.
    pub moved_to: PathBuf,
    /// Sound ads read from the damaged store and kept.
    pub survivors: usize,
}

/// A damage and when it was found (Unix ms): the record a fresh store keeps.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Found {
    damage: Damage,
    at: UnixMillis,
}

impl Store {
    /// What was found damaged when this store (or the one it replaced) was opened or
    /// loaded, if a peer has not refilled it since.
    pub fn damage(&self) -> Option<Damage> {
        lock(&self.inner.damage)
            .as_ref()
            .map(|found| found.damage.clone())
    }

    /// When [`Store::damage`] was found (Unix ms).
    pub fn damage_found_at(&self) -> Option<UnixMillis> {
        lock(&self.inner.damage).as_ref().map(|found| found.at)
    }

    /// Records `damage`, found at `at`, in this (fresh) store, durably, until
    /// [`Store::refilled`]. A record that cannot be written costs only what it is for (a
    /// restart before the refill would not know of the damage), not the start: an ERROR
    /// says so.
    fn record_damage(&self, damage: &Damage, at: UnixMillis) {
        let found = Found {
            damage: damage.clone(),
            at,
        };
        let written = self.write_meta(DAMAGE, Some(&codec::encode(&found)));
        *lock(&self.inner.damage) = Some(found);
        if let Err(error) = written {
            tracing::error!(%error, "cannot record the store's damage in the fresh store; a restart before a peer refills it would not know of it");
        }
    }

    /// The damage a previous start recorded (a record that cannot be read is no record:
    /// it only ever makes a start more careful).
    pub(super) fn recorded_damage(&self) -> Option<Found> {
        let value = self.read_meta(DAMAGE).ok()??;
        codec::decode(&value).ok()
    }

    /// A peer has refilled this store since its damage, or every live server has
    /// advertised again since: the record goes (durably).
    pub fn refilled(&self) -> Result<(), StoreError> {
        if lock(&self.inner.damage).is_some() {
            self.write_meta(DAMAGE, None)?;
            *lock(&self.inner.damage) = None;
        }
        Ok(())
    }

    /// The load found the `ads` tree damaged (`what`): moves the directory aside, logs an
    /// ERROR, and continues in a fresh store holding `survivors` (the sound ads the load
    /// read), committed before returning.
    pub fn replace_damaged<'a>(
        &self,
        now: UnixMillis,
        what: String,
        survivors: impl Iterator<Item = &'a StoredAd>,
    ) -> Result<Damage, StoreError> {
        let dir = &self.inner.path;
        let aside = self
            .inner
            .commits
            .replace(now)
            .map_err(|message| self.commit_error(message))?;
        let mut kept = 0;
        for ad in survivors {
            self.put_ad(ad)?;
            kept += 1;
        }
        self.flush_blocking()?;
        tracing::error!(
            path = %dir.display(),
            moved_to = %aside.display(),
            damage = %what,
            survivors = kept,
            "store is damaged; moved it aside and kept the ads that survived"
        );
        let damage = Damage {
            what,
            moved_to: aside,
            survivors: kept,
        };
        self.record_damage(&damage, now);
        Ok(damage)
    }

    /// Opens the store; if it is damaged (sled fails, the manifest is damaged or missing),
    /// moves the directory aside (loudly), keeps every sound ad it can still read, and
    /// reports what it found, so the director can serve and catch up from its peers. A tree
    /// that does not match its manifest is found by the load ([`Store::load_ads_with`]). Errors that are not damage (a lock held by another
    /// process, permissions, a newer schema) are returned.
    ///
    /// A store whose opening ended the process [`DEATHS_BEFORE_DAMAGE`] starts in a row is
    /// damage too, moved aside without being read again (reading it is what ended them).
    pub fn open_or_recover(
        dir: &Path,
        now: UnixMillis,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        let died = mark_opening(dir);
        let opened = if died >= DEATHS_BEFORE_DAMAGE {
            Self::start_afresh(
                dir,
                now,
                format!("{died} starts in a row ended while opening the store"),
                Vec::new(),
            )
        } else {
            Self::open_or_recover_read(dir, now)
        };
        opening_finished(dir);
        opened
    }

    /// [`Store::open_or_recover`] when the store is to be read.
    fn open_or_recover_read(
        dir: &Path,
        now: UnixMillis,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        // sled reads pages lazily: a log cut short can open cleanly and fail later, on
        // the first read of a page that was lost. Every entry is read once here, so that
        // damage is found (and moved aside) now rather than stopping the start.
        let owned = dir.to_path_buf();
        let opened = move || {
            catching_panics(&owned, || {
                let store = Self::open(&owned)?;
                store.read_every_entry()?;
                Ok(store)
            })
        };
        let read = match within_deadline(dir, read_deadline(dir), opened) {
            // Not read again for survivors: a salvage would loop over the same pages,
            // keeping another core busy (two, with the copy of the log), for nothing.
            Deadline::Missed(what) => return Self::start_afresh(dir, now, what, Vec::new()),
            Deadline::Met(read) => read,
        };
        match read {
            Ok(store) => Ok((store, None)),
            // Only damage is moved aside: an I/O error (a full disk, or another process
            // holding the lock on this directory) must never cost a sound store.
            Err(StoreError::Damaged { message, .. }) => {
                Self::start_afresh(dir, now, message, salvage(dir))
            }
            Err(other) => Err(other),
        }
    }

    /// Moves the damaged store in `dir` aside (loudly: `message` says what was found) and
    /// opens a fresh one there holding `survivors`.
    fn start_afresh(
        dir: &Path,
        now: UnixMillis,
        message: String,
        survivors: Vec<StoredAd>,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        let aside = move_aside(dir, now).map_err(|message| StoreError::Database {
            path: dir.to_path_buf(),
            message,
        })?;
        tracing::error!(
            path = %dir.display(),
            moved_to = %aside.display(),
            damage = %message,
            survivors = survivors.len(),
            "store is damaged; moved it aside, keeping the ads that survived"
        );
        let store = Self::open(dir)?;
        for ad in &survivors {
            store.put_ad(ad)?;
        }
        store.flush_blocking()?;
        let damage = Damage {
            what: message,
            moved_to: aside,
            survivors: survivors.len(),
        };
        store.record_damage(&damage, now);
        Ok((store, Some(damage)))
    }

    /// Like [`Store::load_ads`], but a tree that does not match the manifest is replaced
    /// ([`Store::replace_damaged`]) by a fresh store holding the sound ads read.
    pub fn load_or_recover(&self, now: UnixMillis) -> Result<LoadedAds, StoreError> {
        let mut ads = Vec::new();
        let report = self.load_ads_with(|ad| ads.push(ad))?;
        if let Some(what) = report.mismatch {
            self.replace_damaged(now, what, ads.iter())?;
        }
        Ok(LoadedAds {
            ads,
            quarantined: report.quarantined,
        })
    }
}

/// Where a damaged store's files go: beside the data directory, or inside it when the
/// directory itself cannot move.
const ASIDE_PREFIX: &str = "corrupt-";

/// Moves the damaged store in `dir` aside and leaves `dir` empty for a fresh store: the
/// directory is renamed to `<dir>.corrupt-<now>`; if it cannot be (it is a mount point,
/// such as a container's volume), its entries move into `<dir>/corrupt-<now>/` instead
/// (earlier such directories stay where they are). Returns where the files went.
pub(super) fn move_aside(dir: &Path, now: UnixMillis) -> Result<PathBuf, String> {
    let beside = dir.with_extension(format!("{ASIDE_PREFIX}{now}"));
    let renamed = match std::fs::rename(dir, &beside) {
        Ok(()) => return Ok(beside),
        Err(e) => e,
    };
    let inside = dir.join(format!("{ASIDE_PREFIX}{now}"));
    let moved = (|| {
        std::fs::create_dir_all(&inside)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(ASIDE_PREFIX)
            {
                continue;
            }
            std::fs::rename(entry.path(), inside.join(entry.file_name()))?;
        }
        Ok::<_, std::io::Error>(())
    })();
    match moved {
        Ok(()) => {
            tracing::warn!(dir = %dir.display(), reason = %renamed, "the data directory cannot be renamed; its damaged files moved into it instead");
            Ok(inside)
        }
        Err(e) => Err(format!(
            "cannot move the damaged store aside ({}: {renamed}; into {}: {e})",
            beside.display(),
            inside.display()
        )),
    }
}

/// Every sound ad still readable in a damaged store. If sled cannot open the directory
/// (its `conf` or a snapshot is damaged), it tries again on a copy of the log alone
/// (`db`, and `blobs` if any): sled then takes its default configuration and rebuilds
/// its page table by reading the whole log. None if that fails too.
fn salvage(dir: &Path) -> Vec<StoredAd> {
    match read_ads(dir) {
        Ok(ads) => ads,
        Err(first) => {
            // Inside the data directory: it may be the only writable place (a volume).
            let copy = dir.join("salvage-copy");
            let ads = copy_log(dir, &copy).and_then(|()| read_ads(&copy));
            let _ = std::fs::remove_dir_all(&copy);
            ads.unwrap_or_else(|again| {
                tracing::error!(path = %dir.display(), first = %first, again = %again, "no ad could be read from the damaged store");
                Vec::new()
            })
        }
    }
}

/// The sound ads of the sled database in `dir`, read as a load reads them. A read that
/// runs past its deadline (sled looping over a damaged page) keeps what it read by then.
fn read_ads(dir: &Path) -> Result<Vec<StoredAd>, StoreError> {
    let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (owned, sink) = (dir.to_path_buf(), read.clone());
    let finished = within_deadline(dir, read_deadline(dir), move || {
        catching_panics(&owned, || {
            let db = open_db(&owned).map_err(|e| classify(&owned, e))?;
            let ads = db.open_tree("ads").map_err(|e| classify(&owned, e))?;
            let sound = ads
                .iter()
                .filter_map(|entry| entry.ok())
                // The same reading as a load's (`StoredAd::encode`'s envelopes, every format).
                .filter_map(|(_, value)| StoredAd::decode(&value).ok());
            for ad in sound {
                lock(&sink).push(ad);
            }
            Ok(())
        })
    });
    let ads = std::mem::take(&mut *lock(&read));
    match finished.into_result(dir) {
        Ok(()) => Ok(ads),
        Err(error) if ads.is_empty() => Err(error),
        Err(_) => Ok(ads),
    }
}

/// Copies sled's log (`db`, and the `blobs` directory if there is one) from `dir` into a
/// new directory `copy`, without its configuration or snapshots.
fn copy_log(dir: &Path, copy: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Database {
        path: copy.to_path_buf(),
        message: format!("cannot copy the damaged store's log: {e}"),
    };
    let _ = std::fs::remove_dir_all(copy);
    std::fs::create_dir_all(copy).map_err(io)?;
    std::fs::copy(dir.join("db"), copy.join("db")).map_err(io)?;
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        std::fs::create_dir_all(copy.join("blobs")).map_err(io)?;
        for entry in std::fs::read_dir(&blobs).map_err(io)? {
            let entry = entry.map_err(io)?;
            std::fs::copy(entry.path(), copy.join("blobs").join(entry.file_name())).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_its_deadline_is_damage_and_a_timely_one_is_not() {
        let dir = Path::new("/nonexistent/store");
        let quick = within_deadline(dir, Duration::from_secs(5), || Ok(7));
        assert!(matches!(quick, Deadline::Met(Ok(7))));
        // A read that never ends, as sled's over some damaged pages.
        let began = std::time::Instant::now();
        let endless = within_deadline(dir, Duration::from_millis(200), || -> Result<(), _> {
            loop {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        match endless {
            Deadline::Missed(message) => {
                assert!(message.contains("did not finish"), "{message}")
            }
            Deadline::Met(read) => panic!("finished: {read:?}"),
        }
        assert!(began.elapsed() < Duration::from_secs(5));
        // A read's own error comes back as it was.
        let failed = within_deadline(dir, Duration::from_secs(5), || -> Result<(), _> {
            Err(StoreError::Database {
                path: dir.to_path_buf(),
                message: "locked".into(),
            })
        });
        assert!(matches!(
            failed,
            Deadline::Met(Err(StoreError::Database { .. }))
        ));
    }

    #[test]
    fn each_start_that_does_not_finish_opening_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mark_opening(dir.path()), 0);
        assert_eq!(mark_opening(dir.path()), 1);
        assert_eq!(mark_opening(dir.path()), 2);
        opening_finished(dir.path());
        assert_eq!(mark_opening(dir.path()), 0);
        opening_finished(dir.path());
        opening_finished(dir.path());
        // A store not made yet: nothing is written (the directory is not made here).
        let absent = dir.path().join("absent");
        assert_eq!(mark_opening(&absent), 0);
        assert!(!absent.exists());
    }

    #[test]
    fn the_deadline_grows_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_deadline(dir.path()), Duration::from_secs(10));
        std::fs::write(dir.path().join("db"), vec![0u8; 1_000_000]).unwrap();
        assert_eq!(read_deadline(dir.path()), Duration::from_millis(10_100));
    }
}
