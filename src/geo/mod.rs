//! Where clients and servers are: coordinates, great-circle distance, the GeoIP database,
//! operator overrides and the client's address (socket or trusted `X-Forwarded-For`).
//!
//! Everything the redirect path reads here is in memory: the MaxMind DB is read whole at
//! start and again on a reload ([`Geo::apply`]), overrides are a short list, and server
//! locations are computed off the hot path by [`servers::run`].

mod client;
mod db;
mod memo;
pub mod mmdb;
pub mod servers;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use ipnet::IpNet;

use crate::routing::sort::SortMethod;

pub use crate::coord::{Coord, EARTH_RADIUS_KM, Point};
pub use client::{AddrSource, ClientLocation, LocatedBy, X_FORWARDED_FOR};
pub use db::GeoDb;
pub use servers::{ServerLocatedBy, ServerLocation, ServerLocations};

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

/// The routing settings that a config reload replaces together (the database aside).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// `[[routing.geoip_override]]`.
    pub overrides: Vec<NetOverride>,
    /// `routing.trusted_proxies`.
    pub trusted_proxies: Vec<IpNet>,
    /// `[[routing.server_location]]`: `(server name, coordinate)`.
    pub server_locations: Vec<(String, Coord)>,
    /// `routing.sort` (`None`: `distance` with a database, else `affinity`).
    pub sort: Option<SortMethod>,
}

impl Settings {
    /// The settings of `[routing]`.
    pub fn of(routing: &crate::config::RoutingConfig) -> Self {
        Self {
            overrides: routing.geoip_overrides.clone(),
            trusted_proxies: routing.trusted_proxies.clone(),
            server_locations: routing.server_locations.clone(),
            sort: routing.sort,
        }
    }
}

/// [`Settings`] as lookups use them.
#[derive(Debug, Default)]
struct Tables {
    /// Most specific network first.
    overrides: Vec<NetOverride>,
    trusted_proxies: Vec<IpNet>,
    fixed: HashMap<String, Coord>,
    sort: Option<SortMethod>,
}

impl From<Settings> for Tables {
    fn from(settings: Settings) -> Self {
        let mut overrides = settings.overrides;
        overrides.sort_by_key(|o| std::cmp::Reverse(o.network.prefix_len()));
        Self {
            overrides,
            trusted_proxies: settings.trusted_proxies,
            fixed: settings.server_locations.into_iter().collect(),
            sort: settings.sort,
        }
    }
}

/// The locating half of routing: database, overrides, trusted proxies, server locations
/// and the sort method. Each is swapped whole by a reload ([`Geo::apply`]); lookups read
/// them lock-free.
pub struct Geo {
    db: ArcSwapOption<GeoDb>,
    tables: ArcSwap<Tables>,
    servers: ServerLocations,
    /// Changes with the database or the settings: client locations remembered under an
    /// older generation are looked up again ([`memo`]).
    generation: AtomicU64,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.tables.load();
        f.debug_struct("Geo")
            .field("db", &self.db_description())
            .field("overrides", &tables.overrides.len())
            .field("trusted_proxies", &tables.trusted_proxies)
            .finish()
    }
}

impl Default for Geo {
    fn default() -> Self {
        Self::new(None, Vec::new(), Vec::new(), Vec::new())
    }
}

/// What a routing reload put in force.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingReport {
    /// The database in force (`None`: none).
    pub db: Option<String>,
    /// The sort method in force.
    pub sort: SortMethod,
}

impl Geo {
    /// Locating with `db` (if any), network overrides, trusted proxies and fixed server
    /// locations (`(name, coord)` from `[[routing.server_location]]`), sorting by default.
    pub fn new(
        db: Option<GeoDb>,
        overrides: Vec<NetOverride>,
        trusted_proxies: Vec<IpNet>,
        server_locations: Vec<(String, Coord)>,
    ) -> Self {
        Self::with_settings(
            db,
            Settings {
                overrides,
                trusted_proxies,
                server_locations,
                sort: None,
            },
        )
    }

    /// Locating with `db` and `settings`.
    pub fn with_settings(db: Option<GeoDb>, settings: Settings) -> Self {
        let tables = Tables::from(settings);
        Self {
            db: ArcSwapOption::new(db.map(Arc::new)),
            servers: ServerLocations::configured(&tables.fixed),
            tables: ArcSwap::from_pointee(tables),
            generation: AtomicU64::new(memo::new_generation()),
        }
    }

    /// Replaces the database (a reload); readers switch at their next lookup.
    pub fn swap_db(&self, db: Option<GeoDb>) {
        self.db.store(db.map(Arc::new));
        // After the store: a reader that sees the new generation sees the new database.
        self.generation
            .store(memo::new_generation(), Ordering::Release);
        self.servers.changed();
    }

    /// Replaces the settings (a reload); readers switch at their next lookup, and server
    /// locations are computed again at once.
    pub fn set(&self, settings: Settings) {
        self.tables.store(Arc::new(settings.into()));
        self.generation
            .store(memo::new_generation(), Ordering::Release);
        self.servers.changed();
    }

    /// Puts `[routing]` in force without a restart: the settings at once, and the
    /// database read again from its file (off the async threads). A database that cannot
    /// be read keeps the one in force, and the error says which file and why (the
    /// settings still change).
    pub async fn apply(
        &self,
        routing: &crate::config::RoutingConfig,
    ) -> Result<RoutingReport, GeoError> {
        self.set(Settings::of(routing));
        let read = match routing.geoip_db.clone() {
            None => Ok(None),
            Some(path) => {
                let reading = path.clone();
                tokio::task::spawn_blocking(move || GeoDb::open(&reading).map(Some))
                    .await
                    .unwrap_or_else(|e| {
                        Err(GeoError::Unreadable {
                            path,
                            message: e.to_string(),
                        })
                    })
            }
        };
        let result = match read {
            Ok(db) => {
                match &db {
                    Some(db) => tracing::info!(db = %db.describe(), "GeoIP database reloaded"),
                    None => tracing::warn!(
                        "no GeoIP database configured (routing.geoip_db): clients are not located; distance sorts fall back to affinity"
                    ),
                }
                self.swap_db(db);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, kept = ?self.db_description(), "GeoIP database refused on reload; the one in force stays");
                Err(error)
            }
        };
        result.map(|()| RoutingReport {
            db: self.db_description(),
            sort: self.sort(),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        let tables = self.tables.load();
        Settings {
            overrides: tables.overrides.clone(),
            trusted_proxies: tables.trusted_proxies.clone(),
            server_locations: tables.fixed.iter().map(|(n, c)| (n.clone(), *c)).collect(),
            sort: tables.sort,
        }
    }

    /// The sort method in force: the configured one, else `distance` with a database and
    /// `affinity` without.
    pub fn sort(&self) -> SortMethod {
        effective_sort(self.tables.load().sort, self.has_db())
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

    /// The fixed server locations (`[[routing.server_location]]`) in force.
    pub fn fixed_locations(&self) -> HashMap<String, Coord> {
        self.tables.load().fixed.clone()
    }

    /// True if an address can be located at all (a database, or an override).
    pub fn locates_addresses(&self) -> bool {
        self.has_db() || !self.tables.load().overrides.is_empty()
    }

    /// Where `ip` is, from the overrides first, then the database. Private, loopback and
    /// other non-global addresses are not looked up in the database.
    ///
    /// Remembered per connection thread, per address, until the next reload.
    pub fn locate_ip(&self, ip: IpAddr) -> (Option<Coord>, LocatedBy) {
        let ip = ip.to_canonical();
        let generation = self.generation.load(Ordering::Acquire);
        memo::remembered(generation, ip, || self.look_up_ip(ip))
    }

    /// [`Geo::locate_ip`] without the memo (`ip` canonical).
    fn look_up_ip(&self, ip: IpAddr) -> (Option<Coord>, LocatedBy) {
        let tables = self.tables.load();
        if let Some(o) = tables.overrides.iter().find(|o| o.network.contains(&ip)) {
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
        is_trusted(&self.tables.load().trusted_proxies, ip.to_canonical())
    }
}

/// True if `ip` (canonical) is in one of the `trusted` proxy networks.
fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
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
    Ok(Geo::with_settings(db, Settings::of(routing)))
}

/// The sort method in force: the configured one, else `distance` with a database and
/// `affinity` without.
pub fn effective_sort(configured: Option<SortMethod>, has_db: bool) -> SortMethod {
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
