//! The MaxMind DB (GeoLite2-City / GeoIP2-City format), held in memory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{PathElement, Reader};

use super::{Coord, GeoError};

/// A loaded GeoIP database.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

const LATITUDE: [PathElement<'static>; 2] =
    [PathElement::Key("location"), PathElement::Key("latitude")];
const LONGITUDE: [PathElement<'static>; 2] =
    [PathElement::Key("location"), PathElement::Key("longitude")];

impl GeoDb {
    /// Reads the whole file into memory and checks it is a MaxMind DB.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|e| GeoError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_bytes(bytes, path)
    }

    /// A database from its bytes (`path` names it in messages).
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self, GeoError> {
        let malformed = |message: String| GeoError::Malformed {
            path: path.to_path_buf(),
            message,
        };
        let reader = Reader::from_source(bytes).map_err(|e| malformed(e.to_string()))?;
        let meta = reader.metadata();
        if meta.node_count == 0 {
            return Err(malformed("the search tree is empty".into()));
        }
        Ok(Self {
            reader,
            path: path.to_path_buf(),
        })
    }

    /// `"<path> (<database type>, built <epoch>)"`.
    pub fn describe(&self) -> String {
        let meta = self.reader.metadata();
        format!(
            "{} ({}, built {})",
            self.path.display(),
            meta.database_type,
            meta.build_epoch
        )
    }

    /// The location recorded for `ip`, if the database has one (a record without
    /// coordinates, an IPv6 address in an IPv4-only database or a damaged record: none).
    pub fn lookup(&self, ip: IpAddr) -> Option<Coord> {
        let found = self.reader.lookup(ip).ok()?;
        if !found.has_data() {
            return None;
        }
        let lat: f64 = found.decode_path(&LATITUDE).ok()??;
        let lon: f64 = found.decode_path(&LONGITUDE).ok()??;
        Coord::new(lat, lon)
    }
}
