//! The client's address (socket, or `X-Forwarded-For` behind a trusted proxy) and location.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderName;
use ipnet::IpNet;
use serde::Serialize;

use super::{Coord, Geo, is_trusted};

/// The header a trusted proxy names the client in (a constant name: looking a header up
/// by a string parses the string on every request).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where the client's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrSource {
    /// The TCP peer.
    Socket,
    /// The right-most untrusted hop of `X-Forwarded-For`, sent by a trusted proxy.
    TrustedXff,
    /// Not known (no socket address reached the handler).
    Unknown,
}

/// How the client's coordinate was found (or why it was not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocatedBy {
    /// An operator's `[[routing.geoip_override]]`.
    Override,
    /// The GeoIP database.
    Database,
    /// No GeoIP database is configured.
    NoDatabase,
    /// The database has no location for the address.
    NotInDatabase,
    /// Private, loopback or another non-global address.
    NotPublic,
    /// The address itself is unknown.
    NoAddress,
}

/// The client as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClientLocation {
    /// The client's address (IPv4-mapped IPv6 shown as IPv4).
    pub address: Option<IpAddr>,
    /// Where the address came from.
    pub address_from: AddrSource,
    /// The coordinate, if found.
    pub location: Option<Coord>,
    /// How the coordinate was found, or why not.
    pub located_by: LocatedBy,
}

impl ClientLocation {
    /// A client nothing is known of.
    pub fn unknown() -> Self {
        Self {
            address: None,
            address_from: AddrSource::Unknown,
            location: None,
            located_by: LocatedBy::NoAddress,
        }
    }
}

impl Geo {
    /// The client's address and location for a request from `peer` whose
    /// `X-Forwarded-For` values are `forwarded_for`, in the order sent (a value that is
    /// not text is left out by the caller). They are read only
    /// when `peer` is a trusted proxy; then the right-most hop that is not itself a
    /// trusted proxy is the client. A malformed hop ends the walk at the last address
    /// known good.
    pub fn locate_client<'h>(
        &self,
        peer: Option<SocketAddr>,
        forwarded_for: impl DoubleEndedIterator<Item = &'h str>,
    ) -> ClientLocation {
        let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
            return ClientLocation::unknown();
        };
        // The trusted proxies are read once for the whole walk.
        let tables = self.tables.load();
        let trusted = tables.trusted_proxies.as_slice();
        let (address, address_from) = if trusted.is_empty() {
            (peer, AddrSource::Socket)
        } else {
            forwarded_client(trusted, peer, forwarded_for)
        };
        let (location, located_by) = self.locate_ip(address);
        ClientLocation {
            address: Some(address),
            address_from,
            location,
            located_by,
        }
    }
}

/// The client of a request from `peer` (canonical), walking `X-Forwarded-For` from the
/// right while the hop it came from is one of the `trusted` proxies.
fn forwarded_client<'h>(
    trusted: &[IpNet],
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'h str>,
) -> (IpAddr, AddrSource) {
    let mut client = (peer, AddrSource::Socket);
    if !is_trusted(trusted, peer) {
        return client;
    }
    // Several X-Forwarded-For headers are one list, in order; walk it from the right.
    let hops = forwarded_for
        .rev()
        .flat_map(|v| v.rsplit(','))
        .map(str::trim);
    for hop in hops {
        // Canonical, as the peer is, so a mapped IPv4 hop matches an IPv4 proxy network.
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = (ip, AddrSource::TrustedXff);
        if !is_trusted(trusted, ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally `[v6]`, `v4:port` or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
