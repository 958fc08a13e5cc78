//! Where clients and servers are: coordinates, great-circle distance, the GeoIP database,
//! operator overrides and the client's address (socket or trusted `X-Forwarded-For`).
//!
//! Everything the redirect path reads here is in memory: the MaxMind DB is read whole at
//! start (and can be swapped by a reload through [`Geo::swap_db`]), overrides are a short
//! list, and server locations are computed off the hot path by [`servers::run`].

mod client;
mod db;
pub mod mmdb;
pub mod servers;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use ipnet::IpNet;
use serde::Serialize;

pub use client::{AddrSource, ClientLocation, LocatedBy};
pub use db::GeoDb;
pub use servers::{ServerLocatedBy, ServerLocation, ServerLocations};

/// Mean Earth radius, kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0;

/// A point on Earth, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coord {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

impl Coord {
    /// A coordinate if both values are finite and in range.
    pub fn new(lat: f64, lon: f64) -> Option<Self> {
        let ok = lat.is_finite()
            && lon.is_finite()
            && (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon);
        ok.then_some(Self { lat, lon })
    }

    /// Great-circle distance to `other`, kilometres (haversine, mean radius).
    pub fn distance_km(&self, other: &Coord) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// Why the GeoIP database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read.
    #[error("GeoIP database {path}: {message}")]
    Unreadable {
        /// The configured path.
        path: PathBuf,
        /// The reason.
        message: String,
    },
    /// The file is not a MaxMind DB with city locations.
    #[error("GeoIP database {path} is not a usable MaxMind DB: {message}")]
    Malformed {
        /// The configured path.
        path: PathBuf,
        /// The reason.
        message: String,
    },
}

/// An operator's fixed location for a network (`[[routing.geoip_override]]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetOverride {
    /// The network.
    pub network: IpNet,
    /// Where its addresses are.
    pub coord: Coord,
}

/// The locating half of routing: database, overrides, trusted proxies, server locations.
pub struct Geo {
    db: ArcSwapOption<GeoDb>,
    /// Most specific network first.
    overrides: Vec<NetOverride>,
    trusted_proxies: Vec<IpNet>,
    servers: ServerLocations,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("db", &self.db_description())
            .field("overrides", &self.overrides.len())
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Default for Geo {
    fn default() -> Self {
        Self::new(None, Vec::new(), Vec::new(), Vec::new())
    }
}

impl Geo {
    /// Locating with `db` (if any), network overrides, trusted proxies and fixed server
    /// locations (`(name, coord)` from `[[routing.server_location]]`).
    pub fn new(
        db: Option<GeoDb>,
        mut overrides: Vec<NetOverride>,
        trusted_proxies: Vec<IpNet>,
        fixed_servers: Vec<(String, Coord)>,
    ) -> Self {
        overrides.sort_by_key(|o| std::cmp::Reverse(o.network.prefix_len()));
        Self {
            db: ArcSwapOption::new(db.map(Arc::new)),
            overrides,
            trusted_proxies,
            servers: ServerLocations::new(fixed_servers),
        }
    }

    /// Replaces the database (a reload); readers switch at their next lookup.
    pub fn swap_db(&self, db: Option<GeoDb>) {
        self.db.store(db.map(Arc::new));
    }

    /// True if a GeoIP database is loaded.
    pub fn has_db(&self) -> bool {
        self.db.load().is_some()
    }

    /// `"<path> (<type>, built <epoch>)"`, or `None` without a database.
    pub fn db_description(&self) -> Option<String> {
        self.db.load().as_ref().map(|db| db.describe())
    }

    /// Server locations (fixed and computed).
    pub fn servers(&self) -> &ServerLocations {
        &self.servers
    }

    /// Where `ip` is, from the overrides first, then the database. Private, loopback and
    /// other non-global addresses are not looked up in the database.
    pub fn locate_ip(&self, ip: IpAddr) -> (Option<Coord>, LocatedBy) {
        let ip = ip.to_canonical();
        if let Some(o) = self.overrides.iter().find(|o| o.network.contains(&ip)) {
            return (Some(o.coord), LocatedBy::Override);
        }
        if !is_global(ip) {
            return (None, LocatedBy::NotPublic);
        }
        match self.db.load().as_ref() {
            None => (None, LocatedBy::NoDatabase),
            Some(db) => match db.lookup(ip) {
                Some(coord) => (Some(coord), LocatedBy::Database),
                None => (None, LocatedBy::NotInDatabase),
            },
        }
    }

    /// True if `ip` is one of the configured trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// Builds the locator from `[routing]`: reads the database (a missing or malformed file
/// refuses the start unless `routing.geoip_optional`), and says once when routing runs
/// without one.
pub fn from_config(routing: &crate::config::RoutingConfig) -> Result<Geo, GeoError> {
    let db = match &routing.geoip_db {
        None => {
            tracing::warn!(
                "no GeoIP database configured (routing.geoip_db): clients are not located; distance sorts fall back to affinity"
            );
            None
        }
        Some(path) => match GeoDb::open(path) {
            Ok(db) => {
                tracing::info!(db = %db.describe(), "GeoIP database loaded");
                Some(db)
            }
            Err(error) if routing.geoip_optional => {
                tracing::warn!(%error, "GeoIP database unusable; running without it (routing.geoip_optional)");
                None
            }
            Err(error) => return Err(error),
        },
    };
    Ok(Geo::new(
        db,
        routing.geoip_overrides.clone(),
        routing.trusted_proxies.clone(),
        routing.server_locations.clone(),
    ))
}

/// The sort method in force: the configured one, else `distance` with a database and
/// `affinity` without.
pub fn effective_sort(
    configured: Option<crate::routing::sort::SortMethod>,
    has_db: bool,
) -> crate::routing::sort::SortMethod {
    use crate::routing::sort::SortMethod;
    configured.unwrap_or(if has_db {
        SortMethod::Distance
    } else {
        SortMethod::Affinity
    })
}

/// False for addresses that no GeoIP database places: private, loopback, link-local,
/// unspecified, multicast, documentation and unique-local ranges.
pub fn is_global(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)) // documentation
        }
    }
}

#[cfg(test)]
mod tests;
