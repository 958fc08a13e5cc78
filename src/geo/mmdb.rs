//! A minimal MaxMind DB writer: enough of the format (IPv6 search tree, 24-bit records,
//! maps, strings, doubles, integers) to build small City-shaped databases for tests and
//! benchmarks. The repository never ships a real database; the reader is `maxminddb`.

use std::net::IpAddr;

use ipnet::IpNet;

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

#[derive(Debug, Clone, Copy)]
enum Record {
    Empty,
    Node(u32),
    Data(u32),
}

/// Builds a database in memory. Insert broader networks before the networks inside them.
#[derive(Debug)]
pub struct MmdbWriter {
    nodes: Vec<[Record; 2]>,
    data: Vec<u8>,
    database_type: String,
}

impl Default for MmdbWriter {
    fn default() -> Self {
        Self::new("GeoLite2-City")
    }
}

impl MmdbWriter {
    /// An empty database of `database_type`.
    pub fn new(database_type: &str) -> Self {
        Self {
            nodes: vec![[Record::Empty; 2]],
            data: Vec::new(),
            database_type: database_type.to_string(),
        }
    }

    /// Records `network` at (`lat`, `lon`), City-style: `location.latitude/longitude`.
    pub fn insert_city(&mut self, network: IpNet, lat: f64, lon: f64) {
        let at = self.data.len() as u32;
        let mut d = Vec::new();
        map(&mut d, 1);
        string(&mut d, "location");
        map(&mut d, 3);
        string(&mut d, "accuracy_radius");
        uint(&mut d, 5, 50);
        string(&mut d, "latitude");
        double(&mut d, lat);
        string(&mut d, "longitude");
        double(&mut d, lon);
        self.data.extend_from_slice(&d);
        self.insert(network, at);
    }

    /// Records `network` with a country but no location (a real DB has such records).
    pub fn insert_without_location(&mut self, network: IpNet) {
        let at = self.data.len() as u32;
        let mut d = Vec::new();
        map(&mut d, 1);
        string(&mut d, "country");
        map(&mut d, 1);
        string(&mut d, "iso_code");
        string(&mut d, "ZZ");
        self.data.extend_from_slice(&d);
        self.insert(network, at);
    }

    fn insert(&mut self, network: IpNet, data: u32) {
        let (bits, prefix): (u128, u32) = match network {
            IpNet::V4(n) => (
                u128::from(u32::from(n.network())),
                96 + u32::from(n.prefix_len()),
            ),
            IpNet::V6(n) => (u128::from(n.network()), u32::from(n.prefix_len())),
        };
        if prefix == 0 {
            return;
        }
        let mut node = 0usize;
        for depth in 0..prefix {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth + 1 == prefix {
                self.nodes[node][bit] = Record::Data(data);
                return;
            }
            node = match self.nodes[node][bit] {
                Record::Node(next) => next as usize,
                other => {
                    // A broader network already here: its data covers both halves below.
                    let fill = match other {
                        Record::Data(_) => other,
                        _ => Record::Empty,
                    };
                    let next = self.nodes.len();
                    self.nodes.push([fill; 2]);
                    self.nodes[node][bit] = Record::Node(next as u32);
                    next
                }
            };
        }
    }

    /// The database file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let count = self.nodes.len() as u32;
        let value = |r: Record| match r {
            Record::Empty => count,
            Record::Node(n) => n,
            Record::Data(off) => count + 16 + off,
        };
        let mut out = Vec::with_capacity(self.nodes.len() * 6 + self.data.len() + 256);
        for [left, right] in &self.nodes {
            for r in [value(*left), value(*right)] {
                out.extend_from_slice(&r.to_be_bytes()[1..]);
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(METADATA_MARKER);
        let m = &mut out;
        map(m, 9);
        string(m, "binary_format_major_version");
        uint(m, 5, 2);
        string(m, "binary_format_minor_version");
        uint(m, 5, 0);
        string(m, "build_epoch");
        uint(m, 9, 1_700_000_000);
        string(m, "database_type");
        string(m, &self.database_type);
        string(m, "description");
        map(m, 1);
        string(m, "en");
        string(m, "Skein test database");
        string(m, "ip_version");
        uint(m, 5, 6);
        string(m, "languages");
        m.extend_from_slice(&[1, 11 - 7]);
        string(m, "en");
        string(m, "node_count");
        uint(m, 6, u64::from(count));
        string(m, "record_size");
        uint(m, 5, 24);
        out
    }
}

/// A City-shaped database holding `entries` (network, latitude, longitude), in order.
pub fn city_db(entries: &[(IpNet, f64, f64)]) -> Vec<u8> {
    let mut writer = MmdbWriter::default();
    for (network, lat, lon) in entries {
        writer.insert_city(*network, *lat, *lon);
    }
    writer.to_bytes()
}

/// A host network (/32 or /128) for `ip`.
pub fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn map(out: &mut Vec<u8>, entries: u8) {
    out.push(0xE0 | entries);
}

fn string(out: &mut Vec<u8>, text: &str) {
    let len = text.len();
    if len < 29 {
        out.push(0x40 | len as u8);
    } else {
        out.push(0x40 | 29);
        out.push((len - 29) as u8);
    }
    out.extend_from_slice(text.as_bytes());
}

fn double(out: &mut Vec<u8>, value: f64) {
    out.push(0x68);
    out.extend_from_slice(&value.to_be_bytes());
}

/// An unsigned integer of MaxMind type `kind` (5 uint16, 6 uint32, 9 uint64).
fn uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let body = &bytes[skip..];
    if kind <= 7 {
        out.push((kind << 5) | body.len() as u8);
    } else {
        out.push(body.len() as u8);
        out.push(kind - 7);
    }
    out.extend_from_slice(body);
}
