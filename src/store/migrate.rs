//! On-disk schema versions and the migrations between them (see `migrations/`).

use std::path::Path;

use super::StoreError;

/// The schema this build writes.
///
/// - 1: trees `ads`, `peers`, `meta`, `quarantine`; values are format-1 envelopes.
/// - 2: as 1, plus the manifest file beside sled (`skein-manifest.json`), which every
///   commit keeps (a schema-2 store without one is damaged); and `Ad` gains its last
///   field, `record` (downtime and ban records): schema-1 ads are rewritten.
pub const SCHEMA_VERSION: u32 = 2;

/// The first schema that keeps a manifest.
pub(super) const MANIFEST_SINCE: u32 = 2;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// Brings the database at `path` to [`SCHEMA_VERSION`]; returns the version found
/// (`None`: a new database). Step 1 -> 2 only records the version: the caller writes the
/// first manifest.
pub(super) fn migrate(db: &sled::Db, path: &Path) -> Result<Option<u32>, StoreError> {
    let err = |e: sled::Error| super::classify(path, e);
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
        // A fresh database, or an older one brought up step by step.
        found => {
            if found == Some(1) {
                let ads = db.open_tree("ads").map_err(err)?;
                v1::to_v2(&ads).map_err(err)?;
            }
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes())
                .map_err(err)?;
            db.flush().map_err(err)?;
            Ok(found)
        }
    }
}

/// Schema 1's ad layout, frozen: read once to rewrite each ad in schema 2.
mod v1 {
    use serde::Deserialize;

    use crate::ad::{AdStatus, InstanceId, NamespaceAd, ServerKind, StoredAd};
    use crate::clock::UnixMillis;
    use crate::codec;

    #[derive(Deserialize)]
    struct Ad {
        name: String,
        kind: ServerKind,
        data_url: String,
        web_url: String,
        namespaces: Vec<NamespaceAd>,
        status: AdStatus,
        instance_id: InstanceId,
        generation: u64,
        expires_at: UnixMillis,
        version: String,
    }

    #[derive(Deserialize)]
    struct Stored {
        ad: Ad,
        signature: String,
        received_at: UnixMillis,
        expires_at: UnixMillis,
    }

    /// Rewrites every schema-1 ad as schema 2 (`record: None`). A value that does not
    /// decode is left as it is: loading quarantines it, as it would have before.
    pub(super) fn to_v2(ads: &sled::Tree) -> Result<(), sled::Error> {
        for entry in ads.iter() {
            let (key, value) = entry?;
            let Ok(old) = codec::decode::<Stored>(&value) else {
                continue;
            };
            let ad = crate::ad::Ad {
                name: old.ad.name,
                kind: old.ad.kind,
                data_url: old.ad.data_url,
                web_url: old.ad.web_url,
                namespaces: old.ad.namespaces,
                status: old.ad.status,
                instance_id: old.ad.instance_id,
                generation: old.ad.generation,
                expires_at: old.ad.expires_at,
                version: old.ad.version,
                record: None,
                location: None,
            };
            let stored = StoredAd {
                ad,
                signature: old.signature,
                received_at: old.received_at,
                expires_at: old.expires_at,
                attestation: None,
            };
            ads.insert(key, stored.encode())?;
        }
        Ok(())
    }
}
