//! Private key files: generation (`skein keygen`) and loading, refusing exposed keys.
//!
//! A key file holds the 32-byte Ed25519 seed as base64url on one line, mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::OsRng;

use crate::ad::SigningKey;

/// Why a key file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Other users may read the file.
    #[error("key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a key.
    #[error("key file {0} does not hold a base64url Ed25519 private key")]
    Malformed(PathBuf),
}

/// Writes a new random key to `path` (mode 0600, refusing to overwrite) and returns it.
pub fn generate(path: &Path) -> Result<SigningKey, KeyError> {
    let key = SigningKey::generate(&mut OsRng);
    write_secret(
        path,
        format!("{}\n", URL_SAFE_NO_PAD.encode(key.to_bytes())).as_bytes(),
    )?;
    Ok(key)
}

/// Loads a key, refusing a file that other users can read.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read_secret(path)?;
    let seed = URL_SAFE_NO_PAD
        .decode(text.trim().as_bytes())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| KeyError::Malformed(path.to_path_buf()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a new private key file: parent directories made, mode 0600, never overwriting,
/// synced to disk.
pub(crate) fn write_secret(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a private key file, refusing one that other users can read.
pub(crate) fn read_secret(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/origin.key");
        let key = generate(&path).unwrap();
        assert_eq!(load(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(generate(&path).is_err(), "never overwrites a key");
    }

    #[test]
    fn refuses_world_readable_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        generate(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::Exposed { .. })));
        let bad = dir.path().join("bad.key");
        fs::write(&bad, "not a key").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&bad), Err(KeyError::Malformed(_))));
    }
}
