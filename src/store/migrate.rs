//! On-disk schema versions and the migrations between them (see `migrations/`).

use std::path::Path;

use super::StoreError;

/// The schema this build writes.
///
/// - 1: trees `ads`, `peers`, `meta`, `quarantine`; values are format-1 envelopes.
/// - 2: as 1, plus the manifest file beside sled (`skein-manifest.json`), which every
///   commit keeps; a schema-2 store without one is damaged.
pub const SCHEMA_VERSION: u32 = 2;

/// The first schema that keeps a manifest.
pub(super) const MANIFEST_SINCE: u32 = 2;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// Brings the database at `path` to [`SCHEMA_VERSION`]; returns the version found
/// (`None`: a new database). Step 1 -> 2 only records the version: the caller writes the
/// first manifest.
pub(super) fn migrate(db: &sled::Db, path: &Path) -> Result<Option<u32>, StoreError> {
    let err = |e: sled::Error| StoreError::Database {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = db.open_tree("meta").map_err(err)?;
    let found = match meta.get(SCHEMA_KEY).map_err(err)? {
        None => None,
        Some(bytes) => Some(
            <[u8; 4]>::try_from(bytes.as_ref())
                .map(u32::from_le_bytes)
                .map_err(|_| StoreError::Damaged {
                    path: path.to_path_buf(),
                    message: "schema version record is damaged".into(),
                })?,
        ),
    };
    match found {
        Some(v) if v == SCHEMA_VERSION => Ok(found),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::FutureSchema {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        // A fresh database, or an older version brought up step by step.
        _ => {
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes())
                .map_err(err)?;
            db.flush().map_err(err)?;
            Ok(found)
        }
    }
}
