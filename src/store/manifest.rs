//! The store's independent record of what sled should hold: count and digest of the
//! `ads` tree, written atomically beside sled with every group commit and checked at open.
//!
//! The rule (see `docs/replication.md`, "Store damage"): before a commit changes the
//! `ads` tree, the manifest records both the state the tree is in (`committed`) and the
//! state the commit will leave (`pending`). sled applies a commit's batch atomically, so
//! after any crash the tree holds one of the two; anything else is damage.
//!
//! The file holds two fixed-size slots. A new file is written whole and atomically
//! (temporary file, fsync, rename, directory fsync); after that, each write overwrites
//! the slot the last write did not use, in place, with one `fdatasync`, so a write torn
//! by a crash leaves the other slot, which still describes the tree as it is. A reader
//! takes the sound slot with the highest sequence number.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UnixMillis;

/// File name inside the data directory.
pub const FILE: &str = "skein-manifest.json";

/// The single-record file of schema 2's first releases (still read).
const FORMAT_WHOLE: u32 = 1;
/// Two slots written in turn.
const FORMAT_SLOTS: u32 = 2;
/// Bytes per slot: a record's JSON (about 300 bytes), padded with spaces.
const SLOT_LEN: usize = 512;

/// An order-independent summary of the `ads` tree: how many entries, and the wrapping
/// sum of a 128-bit hash of each (key, stored bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TreeState {
    /// Entries.
    pub count: u64,
    /// Sum of entry hashes (hex in the file).
    #[serde(with = "hex_u128")]
    pub digest: u128,
}

fn entry_hash(key: &[u8], value: &[u8]) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update((key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    let out = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&out[..16]);
    u128::from_le_bytes(first)
}

impl TreeState {
    /// Adds an entry (the store keeps a [`Tally`]; tests build states directly).
    #[cfg(test)]
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.count += 1;
        self.digest = self.digest.wrapping_add(entry_hash(key, value));
    }
}

/// A [`TreeState`] with the hash of each entry it sums: a commit learns what an entry it
/// overwrites or removes contributed from here, instead of reading the old bytes back
/// from sled and hashing them again (about a quarter of a commit's time).
#[derive(Debug, Default)]
pub struct Tally {
    state: TreeState,
    entries: HashMap<Vec<u8>, u128, FxBuildHasher>,
}

impl Tally {
    /// The summary.
    pub fn state(&self) -> TreeState {
        self.state
    }

    /// Counts an entry found by a scan (a key seen again replaces its first value).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.set(key, Some(entry_hash(key, value)));
    }

    /// The hash an entry of `value` at `key` adds to the digest.
    pub fn hash(key: &[u8], value: &[u8]) -> u128 {
        entry_hash(key, value)
    }

    /// The summary once `key` holds an entry of hash `new` (`None`: removed), from `from`
    /// (this tally's summary with other changes of the same commit applied).
    pub fn after(&self, from: TreeState, key: &[u8], new: Option<u128>) -> TreeState {
        let mut next = from;
        if let Some(old) = self.entries.get(key) {
            next.count = next.count.saturating_sub(1);
            next.digest = next.digest.wrapping_sub(*old);
        }
        if let Some(new) = new {
            next.count += 1;
            next.digest = next.digest.wrapping_add(new);
        }
        next
    }

    /// Records that `key` now holds an entry of hash `new` (`None`: removed).
    pub fn set(&mut self, key: &[u8], new: Option<u128>) {
        self.state = self.after(self.state, key, new);
        match (new, self.entries.get_mut(key)) {
            // An overwrite (most writes: a server's next ad) copies no key.
            (Some(hash), Some(held)) => *held = hash,
            (Some(hash), None) => {
                self.entries.insert(key.to_vec(), hash);
            }
            (None, _) => {
                self.entries.remove(key);
            }
        }
    }
}

impl std::fmt::Display for TreeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ads (digest {:032x})", self.count, self.digest)
    }
}

/// What the manifest file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Commits written so far.
    pub generation: u64,
    /// The state of the tree before the commit in flight.
    pub committed: TreeState,
    /// The state the commit in flight leaves (equal to `committed` when none).
    pub pending: TreeState,
    /// The latest wall-clock reading this director had made when writing (Unix ms).
    pub clock_high_water: UnixMillis,
}

/// A manifest file of [`FORMAT_WHOLE`].
#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    manifest: Manifest,
    /// SHA-256 (hex) of the JSON of `manifest`.
    checksum: String,
}

/// One slot of a file of [`FORMAT_SLOTS`].
#[derive(Serialize, Deserialize)]
struct Slot {
    format: u32,
    /// Writes of this file so far: the slot with the higher one is the newer.
    seq: u64,
    manifest: Manifest,
    /// SHA-256 (hex) of the JSON of `(seq, manifest)`.
    checksum: String,
}

/// Why the manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file exists but does not parse or fails its checksum.
    #[error("manifest {path} is damaged: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// Reading or writing failed.
    #[error("manifest {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Manifest {
    /// True if a tree in `found` agrees with this manifest: it holds the committed state
    /// or the pending one (a crash after sled's flush, before the next manifest).
    pub fn accepts(&self, found: TreeState) -> bool {
        found == self.committed || found == self.pending
    }
}

fn checksum(manifest: &Manifest) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(manifest)?;
    Ok(hex(&Sha256::digest(json)))
}

fn slot_checksum(seq: u64, manifest: &Manifest) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(&(seq, manifest))?;
    Ok(hex(&Sha256::digest(json)))
}

/// The bytes of slot `seq`: the record's JSON, padded to [`SLOT_LEN`].
fn slot_bytes(seq: u64, manifest: &Manifest) -> Result<Vec<u8>, serde_json::Error> {
    let slot = Slot {
        format: FORMAT_SLOTS,
        seq,
        manifest: *manifest,
        checksum: slot_checksum(seq, manifest)?,
    };
    let mut bytes = serde_json::to_vec(&slot)?;
    debug_assert!(bytes.len() < SLOT_LEN, "a manifest slot outgrew its room");
    bytes.resize(SLOT_LEN, b' ');
    Ok(bytes)
}

/// Where slot `seq` lives in the file.
fn slot_offset(seq: u64) -> u64 {
    (seq % 2) * SLOT_LEN as u64
}

/// The sound slot with the highest sequence number, and that number.
fn newest_slot(bytes: &[u8]) -> Result<(u64, Manifest), String> {
    let mut why = Vec::new();
    let mut newest: Option<(u64, Manifest)> = None;
    for chunk in bytes.chunks(SLOT_LEN) {
        let slot: Slot = match serde_json::from_slice(chunk) {
            Ok(slot) => slot,
            Err(e) => {
                why.push(e.to_string());
                continue;
            }
        };
        let sound = slot.format == FORMAT_SLOTS
            && slot_checksum(slot.seq, &slot.manifest).is_ok_and(|c| c == slot.checksum);
        if !sound {
            why.push(format!("slot {} fails its checksum", slot.seq));
        } else if newest.is_none_or(|(seq, _)| slot.seq > seq) {
            newest = Some((slot.seq, slot.manifest));
        }
    }
    newest.ok_or_else(|| format!("no sound slot ({})", why.join("; ")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the manifest in `dir`; `Ok(None)` if there is none.
pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ManifestError::Io { path, source }),
    };
    let damaged = |why: String| ManifestError::Damaged {
        path: path.clone(),
        why,
    };
    // A file of two slots has their exact size; a file of the first format is one
    // JSON record of about 300 bytes.
    if bytes.len() == 2 * SLOT_LEN {
        return newest_slot(&bytes).map(|(_, m)| Some(m)).map_err(damaged);
    }
    let file: File = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if file.format != FORMAT_WHOLE {
        return Err(damaged(format!("unknown format {}", file.format)));
    }
    let computed = checksum(&file.manifest).map_err(|e| damaged(e.to_string()))?;
    if computed != file.checksum {
        return Err(damaged("checksum mismatch".into()));
    }
    Ok(Some(file.manifest))
}

/// Writes `manifest` into `dir` as a new file, atomically: a temporary file, fsync,
/// rename, fsync of the directory. A reader sees the old file or the new one, never a
/// mix. Returns the sequence number of the slot written.
pub fn write(dir: &Path, manifest: &Manifest) -> Result<u64, ManifestError> {
    let path = dir.join(FILE);
    let io = |source: std::io::Error| ManifestError::Io {
        path: path.clone(),
        source,
    };
    let seq = 1;
    let mut bytes = vec![b' '; 2 * SLOT_LEN];
    let at = slot_offset(seq) as usize;
    bytes[at..at + SLOT_LEN].copy_from_slice(&slot_bytes(seq, manifest).map_err(|e| io(e.into()))?);
    let temp = dir.join(format!("{FILE}.tmp"));
    {
        let mut out = std::fs::File::create(&temp).map_err(io)?;
        out.write_all(&bytes).map_err(io)?;
        out.sync_all().map_err(io)?;
    }
    std::fs::rename(&temp, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(seq)
}

/// Keeps one store's manifest: the first write of a life makes a new file
/// ([`write`]); later ones overwrite the older slot in place (one `fdatasync`, no new
/// block, no rename), which is what makes a commit cheap.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    /// The sequence number of the last slot written, while the file is known to be
    /// this writer's own two-slot file.
    last: Option<u64>,
}

impl Writer {
    /// A writer for the manifest in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            last: None,
        }
    }

    /// Records `manifest`, durably, before returning. A failure leaves the previous
    /// record readable, and the next write makes a new file.
    pub fn write(&mut self, manifest: &Manifest) -> Result<(), ManifestError> {
        let Some(last) = self.last.take() else {
            self.last = Some(write(&self.dir, manifest)?);
            return Ok(());
        };
        let path = self.dir.join(FILE);
        let io = |source: std::io::Error| ManifestError::Io {
            path: path.clone(),
            source,
        };
        let seq = last + 1;
        let bytes = slot_bytes(seq, manifest).map_err(|e| io(e.into()))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.write_all_at(&bytes, slot_offset(seq)).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.last = Some(seq);
        Ok(())
    }
}

mod hex_u128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        u128::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_removal_undoes_add() {
        let mut a = TreeState::default();
        a.add(b"k1", b"v1");
        a.add(b"k2", b"v2");
        let mut b = Tally::default();
        b.add(b"k2", b"v2");
        b.add(b"k1", b"v1");
        assert_eq!(a, b.state());
        b.add(b"k3", b"v3");
        b.set(b"k3", None);
        assert_eq!(a, b.state());
        let mut c = TreeState::default();
        c.add(b"k1", b"v1");
        c.add(b"k2", b"v2 changed");
        assert_ne!(a, c);
    }

    #[test]
    fn round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let mut state = TreeState::default();
        state.add(b"k", b"v");
        let manifest = Manifest {
            generation: 3,
            committed: TreeState::default(),
            pending: state,
            clock_high_water: 42,
        };
        write(dir.path(), &manifest).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(manifest));
        assert!(manifest.accepts(state) && manifest.accepts(TreeState::default()));
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"generation\":3", "\"generation\":4")).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(ManifestError::Damaged { .. })
        ));
        std::fs::write(&path, b"\0\0garbage").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(ManifestError::Damaged { .. })
        ));
    }

    /// A tally kept through overwrites and removals sums what a fresh scan of the same
    /// entries sums.
    #[test]
    fn a_tally_kept_through_changes_matches_a_fresh_scan() {
        let mut kept = Tally::default();
        let mut held: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        for step in 0u32..500 {
            let key = format!("k{}", step.wrapping_mul(7919) % 60).into_bytes();
            if step % 5 == 4 {
                let before = kept.state();
                let after = kept.after(before, &key, None);
                kept.set(&key, None);
                assert_eq!(kept.state(), after);
                held.remove(&key);
            } else {
                let value = format!("value {step}").into_bytes();
                kept.set(&key, Some(Tally::hash(&key, &value)));
                held.insert(key, value);
            }
            let mut scanned = Tally::default();
            for (key, value) in &held {
                scanned.add(key, value);
            }
            assert_eq!(kept.state(), scanned.state(), "after step {step}");
        }
        assert_eq!(kept.state().count, held.len() as u64);
        // Removing what is not there changes nothing.
        let before = kept.state();
        kept.set(b"never written", None);
        assert_eq!(kept.state(), before);
    }

    fn manifest(generation: u64) -> Manifest {
        let mut state = TreeState::default();
        state.add(&generation.to_le_bytes(), b"v");
        Manifest {
            generation,
            committed: TreeState::default(),
            pending: state,
            clock_high_water: generation,
        }
    }

    /// Later writes go in place to the slot the last one did not use; a write torn by a
    /// crash leaves the slot before it, and only two torn slots are damage.
    #[test]
    fn writes_alternate_slots_and_a_torn_one_leaves_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut writer = Writer::new(dir.path());
        for generation in 1..=5 {
            writer.write(&manifest(generation)).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(manifest(generation)));
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT_LEN as u64);
        }
        // The newest slot (seq 5) torn half-way: the reader falls back to seq 4.
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = slot_offset(5) as usize;
        bytes[newest + SLOT_LEN / 4..newest + SLOT_LEN].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(manifest(4)));
        // Both torn: damage.
        let older = slot_offset(4) as usize;
        bytes[older + 10] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(ManifestError::Damaged { .. })
        ));
        // A fresh writer starts a new whole file, readable at once.
        let mut again = Writer::new(dir.path());
        again.write(&manifest(9)).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(manifest(9)));
    }

    /// A store written before slots (one pretty JSON record) still opens.
    #[test]
    fn a_file_of_the_first_format_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(7);
        let file = File {
            format: FORMAT_WHOLE,
            manifest: m,
            checksum: checksum(&m).unwrap(),
        };
        std::fs::write(
            dir.path().join(FILE),
            serde_json::to_vec_pretty(&file).unwrap(),
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(m));
    }
}
