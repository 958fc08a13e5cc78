//! On-disk schema versions and the migrations between them (see `migrations/`).

use std::path::Path;

use super::StoreError;

/// The schema this build writes.
///
/// - 1: trees `ads`, `peers`, `meta`, `quarantine`; values are format-1 envelopes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// Brings the database at `path` to [`SCHEMA_VERSION`].
pub(super) fn migrate(db: &sled::Db, path: &Path) -> Result<(), StoreError> {
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
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::FutureSchema {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        // A fresh database (or, in future, older versions step by step up to current).
        _ => {
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes())
                .map_err(err)?;
            db.flush().map_err(err)?;
            Ok(())
        }
    }
}
