//! Ordering a route's candidates for one client: by distance, by adaptive weights
//! (distance, load, health, object presence), by a per-client shuffle or by affinity.
//!
//! The order is a pure function of (client location, path, view, signals, locations), so
//! every director gives the same answer. In every method: servers that are not up go
//! after every up server (never removed), and so do origins known to lack the object;
//! servers known to hold it come first; then caches before origins; servers in the same
//! distance bucket are ordered by rendezvous affinity, so an object keeps going to the
//! same nearby cache.
//!
//! Every redirect runs this, so one pass looks each candidate up once (health,
//! presence, location) and sorts the candidates with their keys, without copying them.

use std::cmp::Reverse;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;
use smallvec::SmallVec;

use super::Candidate;
use super::signals::{Presence, Seen, ServerHealth, Signals};
use crate::ad::ServerKind;
use crate::geo::Coord;
use crate::geo::servers::{LocationMap, ServerLocation};

/// Pelican's distance halving factor, 200 miles: a server this much farther away weighs
/// half as much in `adaptive`.
pub const HALVING_KM: f64 = 200.0 * 1.609_344;
/// Width of a distance bucket: servers whose (effective) distances fall in the same
/// 100 km band are "about as far" and ordered by affinity (Pelican's 100 km threshold for
/// a server's location being the same place).
pub const BUCKET_KM: f64 = 100.0;
/// Probe round trips up to this many milliseconds do not lower a server's weight.
pub const LOAD_THRESHOLD_MS: f64 = 100.0;
/// Past the threshold, every this many more milliseconds halve the weight.
pub const LOAD_HALVING_MS: f64 = 200.0;
/// Weight factor of an object known present (its inverse when known absent).
pub const AVAILABILITY_FACTOR: f64 = 2.0;
/// Smallest health weight (an EWMA of 0 still leaves the server rankable).
const MIN_STATUS_WEIGHT: f64 = 0.01;

/// How candidates are ordered (`routing.sort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortMethod {
    /// Nearest first.
    Distance,
    /// Distance, load, health and presence weighed together (Pelican's adaptive).
    Adaptive,
    /// A shuffle seeded by the client's address and the path (stable for that pair).
    Random,
    /// Rendezvous hash of the path only.
    Affinity,
}

impl SortMethod {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SortMethod::Distance => "distance",
            SortMethod::Adaptive => "adaptive",
            SortMethod::Random => "random",
            SortMethod::Affinity => "affinity",
        }
    }
}

impl FromStr for SortMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "distance" => Ok(SortMethod::Distance),
            "adaptive" => Ok(SortMethod::Adaptive),
            "random" => Ok(SortMethod::Random),
            "affinity" => Ok(SortMethod::Affinity),
            other => Err(format!(
                "{other:?} is not a sort method (distance, adaptive, random, affinity)"
            )),
        }
    }
}

/// Everything one ordering depends on.
pub struct SortInput<'a> {
    /// The method.
    pub method: SortMethod,
    /// The client's coordinate, if known.
    pub client: Option<Coord>,
    /// The client's address (seeds `random`).
    pub client_addr: Option<IpAddr>,
    /// The object path (clean): the path the candidates' route was found for.
    pub path: &'a str,
    /// Health and presence.
    pub signals: &'a dyn Signals,
    /// Server locations.
    pub locations: &'a LocationMap,
    /// `?prefercached`: caches known to hold the object first.
    pub prefer_cached: bool,
    /// The object's presence counts (reads of an object; not writes or listings): origins
    /// known to lack it go last and servers known to hold it first, in every method (what
    /// `probe::presence::order` does before the checks).
    pub object_presence: bool,
}

/// Adaptive's weights for one server (each 0 to 1, availability 0.5 to 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    /// From distance: halves every [`HALVING_KM`].
    pub distance: Option<f64>,
    /// From the probe round trip (median of the others when never probed).
    pub load: f64,
    /// From the probes' success EWMA (median of the others when never probed).
    pub health: f64,
    /// From object presence.
    pub availability: f64,
}

/// Why one candidate sits where it does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// Server name.
    pub name: String,
    /// Origin or cache.
    pub kind: ServerKind,
    /// Data URL.
    pub data_url: String,
    /// Ad generation held.
    pub generation: u64,
    /// The server's location and how it was found (`null`: unknown).
    pub location: Option<ServerLocation>,
    /// Great-circle distance from the client, km (`null`: either end unknown).
    pub distance_km: Option<f64>,
    /// False only when probes say it is down; unknown health counts as up.
    pub up: bool,
    /// The probes' last word (`null`: never probed).
    pub health: Option<HealthSeen>,
    /// Object presence: `present`, `absent` or `unknown`.
    pub presence: &'static str,
    /// Adaptive's weights (`null` in other methods).
    pub weights: Option<Weights>,
    /// Adaptive's product of weights (`null` in other methods).
    pub score: Option<f64>,
    /// Distance bucket (lower first; `null` when not located or not distance-based).
    pub bucket: Option<u64>,
    /// Rendezvous score of (server, path): higher first within a bucket.
    pub affinity: u64,
}

/// A [`ServerHealth`] for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HealthSeen {
    /// Up or down.
    pub up: bool,
    /// Success EWMA.
    pub ewma: f64,
    /// Last round trip, ms (the load hint).
    pub latency_ms: f64,
    /// When last probed (Unix ms).
    pub checked_at: u64,
}

/// The sort key: smaller first. Demoted (down, or an origin known to lack the object),
/// not known to hold the object, not up, group (caches first), a cache not known to hold
/// it under `prefercached`, not located, bucket, affinity (higher first).
type Key = (bool, bool, bool, u8, bool, bool, u64, Reverse<u64>);

/// What one candidate's place depends on, found once per candidate.
struct Entry {
    key: Key,
    distance_km: Option<f64>,
    health: Option<ServerHealth>,
    presence: Presence,
    bucket: Option<u64>,
    affinity: u64,
    /// Only when explaining (a redirect's entries stay small: they are made, moved and
    /// read for every candidate of every redirect).
    explained: Option<Box<Explained>>,
}

/// What only an explanation shows of a candidate.
struct Explained {
    location: Option<ServerLocation>,
    /// Adaptive's weights and their product.
    weights: Option<(Weights, f64)>,
}

fn halving(value: f64, threshold: f64, every: f64) -> f64 {
    if value <= threshold {
        1.0
    } else {
        (-(value - threshold) / every).exp2()
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn bucket_of(km: f64) -> u64 {
    // Saturating float-to-int cast: NaN -> 0, huge -> u64::MAX.
    // Truncation is the floor here: a negative or NaN distance saturates to 0 either way
    // (and `floor` is a library call on the baseline x86-64 target).
    (km / BUCKET_KM) as u64
}

fn presence_name(p: Presence) -> &'static str {
    match p {
        Presence::Present => "present",
        Presence::Absent => "absent",
        Presence::Unknown => "unknown",
    }
}

/// Candidates a redirect usually has at most: what is worked out per candidate is kept on
/// the stack up to this many (no allocation per redirect for it).
const USUAL_CANDIDATES: usize = 8;

/// What [`entries`] works out, one per candidate.
type Entries = SmallVec<[Entry; USUAL_CANDIDATES]>;

/// Places in a list of candidates, best first.
type Ranks = SmallVec<[usize; USUAL_CANDIDATES]>;

/// One entry per candidate, in the candidates' order, keyed, added to `out` (which is
/// filled in place: an entry is large, and a returned list of them would be copied).
fn entries(candidates: &[Candidate], input: &SortInput<'_>, explaining: bool, out: &mut Entries) {
    let method = input.method;
    let seeded = (method == SortMethod::Random).then(|| {
        let addr = input.client_addr.map(|a| a.to_string()).unwrap_or_default();
        format!("{addr}\u{0}{}", input.path)
    });
    let located = matches!(method, SortMethod::Distance | SortMethod::Adaptive);
    let wants_presence =
        input.object_presence || input.prefer_cached || method == SortMethod::Adaptive;
    let client = input.client.map(|c| c.point());
    let mut seen: SmallVec<[Seen; USUAL_CANDIDATES]> =
        smallvec::smallvec![Seen::default(); candidates.len()];
    input
        .signals
        .read(candidates, wants_presence.then_some(input.path), &mut seen);
    out.extend(
        candidates
            .iter()
            .zip(&seen)
            .map(|(c, &Seen { health, presence })| {
                let up = health.is_none_or(|h| h.up);
                let location = if located || explaining {
                    crate::geo::servers::location_at(input.locations, c.slot(), &c.ad.ad)
                } else {
                    None
                };
                let distance_km = match (client, location) {
                    (Some(client), Some(server)) => Some(client.distance_km(&server.point)),
                    _ => None,
                };
                let affinity = match &seeded {
                    Some(seed) => c.score(seed),
                    None => c.affinity(input.path),
                };
                let group = u8::from(c.kind != ServerKind::Cache);
                let not_present = input.prefer_cached
                    && c.kind == ServerKind::Cache
                    && presence != Presence::Present;
                let (demoted, not_held) = if input.object_presence {
                    let absent_origin =
                        c.kind == ServerKind::Origin && presence == Presence::Absent;
                    (!up || absent_origin, presence != Presence::Present)
                } else {
                    (!up, true)
                };
                Entry {
                    key: (
                        demoted,
                        not_held,
                        !up,
                        group,
                        not_present,
                        false,
                        0,
                        Reverse(affinity),
                    ),
                    distance_km,
                    health,
                    presence,
                    bucket: None,
                    affinity,
                    explained: explaining.then(|| {
                        Box::new(Explained {
                            location,
                            weights: None,
                        })
                    }),
                }
            }),
    );
    match method {
        SortMethod::Distance => {
            for e in out.iter_mut() {
                e.bucket = e.distance_km.map(bucket_of);
                e.key.5 = e.distance_km.is_none();
                e.key.6 = e.bucket.unwrap_or(0);
            }
        }
        SortMethod::Adaptive => adaptive(out),
        SortMethod::Random | SortMethod::Affinity => {}
    }
}

/// The places of `candidates` in order, by their entries' keys. Only the places move
/// while sorting, not the entries or the candidates.
fn ranked(candidates: &[Candidate], entries: &[Entry]) -> Ranks {
    let mut ranks: Ranks = (0..candidates.len().min(entries.len())).collect();
    // Total: two servers never tie (names are unique within a kind, and kinds differ in
    // group), so the order does not depend on the order the candidates came in.
    ranks.sort_unstable_by(|&a, &b| {
        entries[a]
            .key
            .cmp(&entries[b].key)
            .then_with(|| candidates[b].name().cmp(candidates[a].name()))
    });
    ranks
}

/// Puts `items` in the order of `ranks` (places in it, best first; a permutation of
/// the first `ranks.len()` places), in place: each cycle of the permutation is followed
/// with swaps.
fn reorder<T>(items: &mut Vec<T>, ranks: &[usize]) {
    items.truncate(ranks.len());
    let mut placed: SmallVec<[bool; USUAL_CANDIDATES]> = smallvec::smallvec![false; items.len()];
    for start in 0..items.len() {
        let mut at = start;
        while !placed[at] {
            placed[at] = true;
            let from = ranks[at];
            if from == start {
                break;
            }
            // `at` takes its item; the one it held moves on to `from`, which is next.
            items.swap(at, from);
            at = from;
        }
    }
}

/// Pelican's adaptive weights, made deterministic: the product of the weights becomes an
/// effective distance (`-log2(score)` halvings of [`HALVING_KM`]) cut into buckets.
fn adaptive(out: &mut [Entry]) {
    // A non-finite signal counts as no signal: like a server never probed, it takes the
    // median of the valid ones (Pelican imputes missing weights the same way).
    let load = |h: &ServerHealth| {
        h.latency_ms
            .is_finite()
            .then(|| halving(h.latency_ms.max(0.0), LOAD_THRESHOLD_MS, LOAD_HALVING_MS))
    };
    let status = |h: &ServerHealth| {
        h.ewma
            .is_finite()
            .then(|| h.ewma.clamp(MIN_STATUS_WEIGHT, 1.0))
    };
    // One scratch list for both medians (on the stack for the usual few candidates).
    let mut scratch: SmallVec<[f64; USUAL_CANDIDATES]> = SmallVec::new();
    scratch.extend(out.iter().filter_map(|e| e.health.as_ref().and_then(load)));
    let known_load = median(&mut scratch);
    scratch.clear();
    scratch.extend(
        out.iter()
            .filter_map(|e| e.health.as_ref().and_then(status)),
    );
    let known_status = median(&mut scratch);
    for e in out {
        let load = e
            .health
            .as_ref()
            .and_then(load)
            .or(known_load)
            .unwrap_or(1.0);
        let health = e
            .health
            .as_ref()
            .and_then(status)
            .or(known_status)
            .unwrap_or(1.0);
        let availability = match e.presence {
            Presence::Present => AVAILABILITY_FACTOR,
            Presence::Absent => 1.0 / AVAILABILITY_FACTOR,
            Presence::Unknown => 1.0,
        };
        // The score is 2^(-km / HALVING_KM) times the other weights, so -log2(score)
        // halvings is the distance plus what the other weights take off; worked out
        // without the power and its logarithm, which cost more than the rest of the sort.
        let others = load * health * availability;
        let others_log2 = if others == 1.0 { 0.0 } else { others.log2() };
        let km = e.distance_km.unwrap_or(0.0);
        // Effective distance may be negative (presence doubles the score): shift by one
        // halving so buckets stay unsigned and "present at 0 km" sorts first.
        let effective_km = (1.0 - others_log2) * HALVING_KM + km;
        let bucket = bucket_of(effective_km.max(0.0));
        if let Some(explained) = &mut e.explained {
            let weights = Weights {
                distance: e.distance_km.map(|km| halving(km, 0.0, HALVING_KM)),
                load,
                health,
                availability,
            };
            let score = weights.distance.unwrap_or(1.0) * others;
            explained.weights = Some((weights, score));
        }
        e.bucket = Some(bucket);
        e.key.5 = e.distance_km.is_none();
        e.key.6 = bucket;
    }
}

/// Orders `candidates` (best first) for `input`.
pub fn order(candidates: &mut Vec<Candidate>, input: &SortInput<'_>) {
    if candidates.len() < 2 {
        return;
    }
    let mut found = Entries::new();
    entries(candidates, input, false, &mut found);
    let ranks = ranked(candidates, &found);
    reorder(candidates, &ranks);
}

/// Orders `candidates` like [`order`] and says why, best first.
pub fn explain(candidates: &mut Vec<Candidate>, input: &SortInput<'_>) -> Vec<Scored> {
    let mut found = Entries::new();
    entries(candidates, input, true, &mut found);
    let ranks = ranked(candidates, &found);
    reorder(candidates, &ranks);
    let mut scored = Vec::with_capacity(ranks.len());
    for (c, e) in candidates
        .iter()
        .zip(ranks.iter().filter_map(|&i| found.get(i)))
    {
        scored.push(Scored {
            name: c.name().to_string(),
            kind: c.kind,
            data_url: c.data_url().to_string(),
            generation: c.ad.ad.generation,
            location: e.explained.as_ref().and_then(|x| x.location),
            distance_km: e.distance_km.map(|km| (km * 10.0).round() / 10.0),
            up: !e.key.2,
            health: e.health.map(|h| HealthSeen {
                up: h.up,
                ewma: h.ewma,
                latency_ms: h.latency_ms,
                checked_at: h.checked_at,
            }),
            presence: presence_name(e.presence),
            weights: e.explained.as_ref().and_then(|x| x.weights).map(|(w, _)| w),
            score: e.explained.as_ref().and_then(|x| x.weights).map(|(_, s)| s),
            bucket: e.bucket,
            affinity: e.affinity,
        });
    }
    scored
}

#[cfg(test)]
mod tests;
