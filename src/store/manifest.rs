//! The store's independent record of what sled should hold: count and digest of the
//! `ads` tree, written atomically beside sled with every group commit and checked at open.
//!
//! The rule (see `docs/replication.md`, "Store damage"): before a commit changes the
//! `ads` tree, the manifest records both the state the tree is in (`committed`) and the
//! state the commit will leave (`pending`). sled applies a commit's batch atomically, so
//! after any crash the tree holds one of the two; anything else is damage.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UnixMillis;

/// File name inside the data directory.
pub const FILE: &str = "skein-manifest.json";

const FORMAT: u32 = 1;

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
    /// Adds an entry.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.count += 1;
        self.digest = self.digest.wrapping_add(entry_hash(key, value));
    }

    /// Removes an entry that was added before.
    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        self.count = self.count.saturating_sub(1);
        self.digest = self.digest.wrapping_sub(entry_hash(key, value));
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

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    manifest: Manifest,
    /// SHA-256 (hex) of the JSON of `manifest`.
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
    let file: File = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if file.format != FORMAT {
        return Err(damaged(format!("unknown format {}", file.format)));
    }
    let computed = checksum(&file.manifest).map_err(|e| damaged(e.to_string()))?;
    if computed != file.checksum {
        return Err(damaged("checksum mismatch".into()));
    }
    Ok(Some(file.manifest))
}

/// Writes `manifest` into `dir` atomically: a temporary file, fsync, rename, fsync of
/// the directory. A reader sees the old file or the new one, never a mix.
pub fn write(dir: &Path, manifest: &Manifest) -> Result<(), ManifestError> {
    let path = dir.join(FILE);
    let io = |source: std::io::Error| ManifestError::Io {
        path: path.clone(),
        source,
    };
    let file = File {
        format: FORMAT,
        manifest: *manifest,
        checksum: checksum(manifest).map_err(|e| io(e.into()))?,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(e.into()))?;
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
    Ok(())
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
        let mut b = TreeState::default();
        b.add(b"k2", b"v2");
        b.add(b"k1", b"v1");
        assert_eq!(a, b);
        b.add(b"k3", b"v3");
        b.remove(b"k3", b"v3");
        assert_eq!(a, b);
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
        std::fs::write(
            &path,
            text.replace("\"generation\": 3", "\"generation\": 4"),
        )
        .unwrap();
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
}
