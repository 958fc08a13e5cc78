//! Where servers are: this director's `[[routing.server_location]]`, else the location
//! the server's ad declares, else the GeoIP location of the data URL's host (resolved by
//! a background worker, cached and refreshed), else unknown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Coord, Geo};
use crate::ad::ServerKind;
use crate::coord::Point;
use crate::ledger::Ledger;
use crate::routing::View;
use crate::routing::slots::{BySlot, Slot, slot_of};

/// How long one DNS resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Resolutions in flight at once.
const RESOLVE_CONCURRENCY: usize = 16;

/// How a server's location was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "located_by")]
pub enum ServerLocatedBy {
    /// `[[routing.server_location]]` in this director's config.
    Config,
    /// The server's own ad (`[location]` of a Skein service, a Pelican ad's `coordinate`).
    Ad,
    /// The GeoIP location (or a network override) of the data URL's host address.
    Address {
        /// The address located.
        address: IpAddr,
    },
}

/// A server's location: in JSON `{"lat", "lon", "located_by", ["address"]}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerLocation {
    /// The coordinate.
    #[serde(flatten)]
    pub location: Coord,
    /// How it was found.
    #[serde(flatten)]
    pub located_by: ServerLocatedBy,
    /// The coordinate on the unit sphere (for distances).
    #[serde(skip)]
    pub point: Point,
}

impl ServerLocation {
    /// `location`, found as `located_by`.
    pub fn new(location: Coord, located_by: ServerLocatedBy) -> Self {
        Self {
            location,
            located_by,
            point: location.point(),
        }
    }
}

/// Server name -> location, published whole. The redirect path reads it lock-free, once
/// per candidate, by the candidate's server slot (an array index, where a name would be
/// hashed and compared); everything else reads it by name.
#[derive(Debug, Clone, Default)]
pub struct LocationMap {
    /// Hashed with FxHash: the keys are names of servers in the view (or in this
    /// director's config), so a client never shapes the map.
    by_name: HashMap<String, ServerLocation, rustc_hash::FxBuildHasher>,
    /// The same locations by the slot of each kind of server of the name.
    by_slot: BySlot<ServerLocation>,
}

impl LocationMap {
    /// Places the server(s) called `name`.
    pub fn insert(&mut self, name: String, location: ServerLocation) {
        for kind in [ServerKind::Origin, ServerKind::Cache] {
            self.by_slot.set(slot_of(kind, &name), Some(location));
        }
        self.by_name.insert(name, location);
    }

    /// Where the server(s) called `name` are.
    pub fn get(&self, name: &str) -> Option<&ServerLocation> {
        self.by_name.get(name)
    }

    /// Where the server in `slot` is.
    pub fn at_slot(&self, slot: Slot) -> Option<&ServerLocation> {
        self.by_slot.get(slot)
    }

    /// Servers placed.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True if no server is placed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl FromIterator<(String, ServerLocation)> for LocationMap {
    fn from_iter<I: IntoIterator<Item = (String, ServerLocation)>>(places: I) -> Self {
        let mut map = Self::default();
        for (name, location) in places {
            map.insert(name, location);
        }
        map
    }
}

/// The current server locations.
pub struct ServerLocations {
    current: ArcSwap<LocationMap>,
    /// Settings or the database changed: compute again now.
    changed: Notify,
}

impl ServerLocations {
    /// The map before any ad is seen: the configured locations.
    pub(super) fn configured(fixed: &HashMap<String, Coord>) -> Self {
        Self {
            current: ArcSwap::from_pointee(configured(fixed)),
            changed: Notify::new(),
        }
    }

    /// The current map (a lock-free guard, no reference-count traffic; hold it for the
    /// whole request, not across an `.await`).
    pub fn load(&self) -> arc_swap::Guard<Arc<LocationMap>> {
        self.current.load()
    }

    /// Replaces the map.
    pub fn publish(&self, map: LocationMap) {
        self.current.store(Arc::new(map));
    }

    /// Wakes the worker: what locations are computed from has changed.
    pub(super) fn changed(&self) {
        self.changed.notify_one();
    }
}

/// The locations fixed in config, as a map.
fn configured(fixed: &HashMap<String, Coord>) -> LocationMap {
    fixed
        .iter()
        .map(|(name, coord)| {
            let location = ServerLocation::new(*coord, ServerLocatedBy::Config);
            (name.clone(), location)
        })
        .collect()
}

/// The host of a data URL, without brackets for IPv6, and its port.
fn host_port(data_url: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(data_url).ok()?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_string(), port))
}

/// Resolved host names: addresses and when they were resolved.
type DnsCache = HashMap<String, (Vec<IpAddr>, Instant)>;

/// Where `ad`'s server is, as routing sees it now: this director's config first (always
/// in `map`), then the ad's own location (read from the ad itself, so a new or moved
/// server is placed by its first ad, not at the worker's next pass), then the address
/// location the worker found.
pub fn location_of(map: &LocationMap, ad: &crate::ad::Ad) -> Option<ServerLocation> {
    placed(map.get(&ad.name).copied(), ad)
}

/// [`location_of`] the server of `ad`, whose slot is `slot` (the redirect path's way).
pub fn location_at(map: &LocationMap, slot: Slot, ad: &crate::ad::Ad) -> Option<ServerLocation> {
    placed(map.at_slot(slot).copied(), ad)
}

/// [`location_of`] given what the map holds for the server (`found`).
fn placed(found: Option<ServerLocation>, ad: &crate::ad::Ad) -> Option<ServerLocation> {
    if let Some(configured) = found.filter(|l| l.located_by == ServerLocatedBy::Config) {
        return Some(configured);
    }
    match ad.location {
        // The worker's copy, if it has this coordinate, holds its point already.
        Some(location) => Some(
            found
                .filter(|l| l.located_by == ServerLocatedBy::Ad && l.location == location)
                .unwrap_or_else(|| ServerLocation::new(location, ServerLocatedBy::Ad)),
        ),
        None => found.filter(|l| l.located_by != ServerLocatedBy::Ad),
    }
}

/// Computes every server's location from `view`: this director's config first, then the
/// ad's own location, then the data URL host's address (a literal, or resolved through
/// `dns`, refreshing entries older than `dns_refresh`).
pub async fn compute(
    geo: &Geo,
    view: &View,
    dns: &mut DnsCache,
    dns_refresh: Duration,
) -> LocationMap {
    let fixed = geo.fixed_locations();
    let mut map = configured(&fixed);
    // With neither a database nor an override, no address has a place: parsing every
    // data URL and resolving its host would find nothing (and this runs whenever the
    // view changed, which at 10,000 servers is every pass).
    let by_address = geo.locates_addresses();
    let mut hosts: Vec<(String, String, u16)> = Vec::new();
    for stored in view.ads() {
        let ad = &stored.ad;
        if ad.kind == ServerKind::Director || fixed.contains_key(&ad.name) {
            continue;
        }
        if let Some(location) = ad.location {
            let by = ServerLocatedBy::Ad;
            map.insert(ad.name.clone(), ServerLocation::new(location, by));
            continue;
        }
        if by_address && let Some((host, port)) = host_port(&ad.data_url) {
            hosts.push((ad.name.clone(), host, port));
        }
    }
    let stale: Vec<(String, u16)> = {
        let mut seen = std::collections::HashSet::new();
        hosts
            .iter()
            .filter(|(_, host, _)| host.parse::<IpAddr>().is_err())
            .filter(|(_, host, _)| {
                dns.get(host)
                    .is_none_or(|(_, at)| at.elapsed() >= dns_refresh)
            })
            .filter(|(_, host, _)| seen.insert(host.clone()))
            .map(|(_, host, port)| (host.clone(), *port))
            .collect()
    };
    let resolved: Vec<(String, Vec<IpAddr>)> = futures::stream::iter(stale)
        .map(|(host, port)| async move {
            let target = format!("{host}:{port}");
            let found = if host.contains(':') {
                // Not a name (an IPv6 literal is handled before resolution).
                Ok(Ok(Vec::new().into_iter()))
            } else {
                tokio::time::timeout(RESOLVE_TIMEOUT, async {
                    tokio::net::lookup_host(target)
                        .await
                        .map(|a| a.collect::<Vec<_>>().into_iter())
                })
                .await
            };
            let addrs = match found {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                Ok(Err(error)) => {
                    tracing::debug!(%host, %error, "could not resolve a server's host");
                    Vec::new()
                }
                Err(_) => {
                    tracing::debug!(%host, "resolving a server's host timed out");
                    Vec::new()
                }
            };
            (host, addrs)
        })
        .buffer_unordered(RESOLVE_CONCURRENCY)
        .collect()
        .await;
    let now = Instant::now();
    for (host, addrs) in resolved {
        dns.insert(host, (addrs, now));
    }
    for (name, host, _) in hosts {
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => dns.get(&host).map(|(a, _)| a.clone()).unwrap_or_default(),
        };
        let found = addrs.into_iter().find_map(|address| {
            geo.locate_ip(address).0.map(|location| {
                let address = address.to_canonical();
                ServerLocation::new(location, ServerLocatedBy::Address { address })
            })
        });
        if let Some(location) = found {
            map.insert(name, location);
        }
    }
    map
}

/// The worker: recomputes server locations when the view changes (checked every
/// `every`), at once when a reload changed the settings or the database, and
/// re-resolves host names every `dns_refresh`.
pub async fn run(
    geo: Arc<Geo>,
    ledger: Arc<Ledger>,
    cancel: CancellationToken,
    every: Duration,
    dns_refresh: Duration,
) {
    let mut dns = DnsCache::new();
    let mut last: Option<Arc<View>> = None;
    let mut refreshed = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = geo.servers().changed.notified() => true,
            _ = tick.tick() => false,
        };
        let view = ledger.view();
        let refresh = refreshed.elapsed() >= dns_refresh;
        if !forced && !refresh && last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &view)) {
            continue;
        }
        if refresh {
            refreshed = Instant::now();
        }
        let map = tokio::select! {
            _ = cancel.cancelled() => break,
            map = compute(&geo, &view, &mut dns, dns_refresh) => map,
        };
        tracing::debug!(
            located = map.len(),
            ads = view.len(),
            "server locations updated"
        );
        geo.servers().publish(map);
        last = Some(view);
    }
}
