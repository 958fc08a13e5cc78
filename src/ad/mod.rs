//! The advertisement ("ad") model: what a server tells the directors about itself.
//!
//! The JSON shape follows Pelican's server ad (`name`, `data-url`, `web-url`,
//! `namespaces`, `capabilities`, `token-issuer`, `status`) plus Skein's ordering fields
//! (`instance_id`, `generation`, `expires_at`). Pure data: no I/O here.

mod order;
pub mod page;
mod signing;
mod stored;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::UnixMillis;
use crate::coord::Coord;
use crate::pelican::Attestation;

pub use order::{AdVersion, is_newer, merge};
pub use signing::{
    SignError, SignatureCheck, SigningKey, VerifyingKey, canonical_ad_bytes, decode_public_key,
    decode_signature, encode_public_key,
};
pub use stored::{SignedAdRef, StoredAd};

/// What kind of server an ad describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Exports namespaces from storage.
    Origin,
    /// Serves namespaces from its disk, near users.
    Cache,
    /// Redirects clients; a peer in the director cluster.
    Director,
    /// A federation record, not a server: "the server named here is in downtime".
    /// Signed by an operator (`kind = "admin"` in the trust file); never routed to.
    Downtime,
    /// A federation record: "the server named here is banned".
    Ban,
}

impl ServerKind {
    /// The lowercase name used in JSON, keys and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Origin => "origin",
            ServerKind::Cache => "cache",
            ServerKind::Director => "director",
            ServerKind::Downtime => "downtime",
            ServerKind::Ban => "ban",
        }
    }

    /// True for federation records (downtime, ban): signed by an operator about the
    /// server they name, replicated like ads, never a redirect target.
    pub fn is_record(self) -> bool {
        matches!(self, ServerKind::Downtime | ServerKind::Ban)
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "origin" => Ok(ServerKind::Origin),
            "cache" => Ok(ServerKind::Cache),
            "director" => Ok(ServerKind::Director),
            "downtime" => Ok(ServerKind::Downtime),
            "ban" => Ok(ServerKind::Ban),
            other => Err(format!(
                "unknown server kind {other:?} (expected origin, cache or director)"
            )),
        }
    }
}

/// A server's advertised state: Pelican's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AdStatus {
    /// Serving normally.
    #[default]
    #[serde(rename = "ok")]
    Ok,
    /// Withdrawing: directors stop routing to it at once.
    #[serde(rename = "shutting down")]
    ShuttingDown,
}

/// A process's identity: fixed for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceId {
    /// Process start time, Unix milliseconds.
    pub started_at: UnixMillis,
    /// Random per process, so two processes started in the same millisecond differ.
    pub uuid: Uuid,
}

impl InstanceId {
    /// A fresh instance started at `started_at`.
    pub fn new(started_at: UnixMillis) -> Self {
        Self {
            started_at,
            uuid: Uuid::new_v4(),
        }
    }
}

/// What a namespace allows (Pelican's capability keys on the wire; the plural
/// spellings Pelican also accepts are read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Readable without a token.
    #[serde(rename = "PublicRead", alias = "PublicReads", default)]
    pub public_reads: bool,
    /// Readable (with a token unless public).
    #[serde(rename = "Read", alias = "Reads", default)]
    pub reads: bool,
    /// Writable (PUT/DELETE go to an origin that allows it).
    #[serde(rename = "Write", alias = "Writes", default)]
    pub writes: bool,
    /// Directory listings.
    #[serde(rename = "Listing", alias = "Listings", default)]
    pub listings: bool,
    /// Clients may read from the origin directly.
    #[serde(rename = "FallBackRead", alias = "DirectReads", default)]
    pub direct_reads: bool,
}

/// An issuer of tokens for a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenIssuer {
    /// The issuer URL.
    #[serde(rename = "issuer")]
    pub issuer_url: String,
    /// The paths the issuer's tokens cover.
    #[serde(rename = "base-paths", default)]
    pub base_paths: Vec<String>,
}

/// How clients obtain tokens for a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenGeneration {
    /// Pelican's strategy name (e.g. `OAuth2`).
    #[serde(default)]
    pub strategy: String,
    /// Maximum scope depth.
    #[serde(rename = "max-scope-depth", default)]
    pub max_scope_depth: u32,
    /// The issuer to ask.
    #[serde(rename = "issuer", default)]
    pub issuer: String,
}

/// One namespace a server serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceAd {
    /// The namespace prefix, e.g. `/ligo/frames`.
    pub path: String,
    /// What the namespace allows.
    #[serde(rename = "Caps", alias = "capabilities", default)]
    pub caps: Capabilities,
    /// Token issuers.
    #[serde(rename = "token-issuer", default)]
    pub issuers: Vec<TokenIssuer>,
    /// Token generation hints.
    #[serde(rename = "token-generation", default)]
    pub generation: Vec<TokenGeneration>,
}

/// An advertisement, before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ad {
    /// Unique server name in the federation (for a record: the server it is about).
    pub name: String,
    /// Origin, cache or director (or a record kind).
    pub kind: ServerKind,
    /// Where clients fetch objects (for a director: its advertise URL).
    #[serde(rename = "data-url")]
    pub data_url: String,
    /// The server's web URL.
    #[serde(rename = "web-url", default)]
    pub web_url: String,
    /// Namespaces served (empty for directors).
    #[serde(default)]
    pub namespaces: Vec<NamespaceAd>,
    /// Serving or withdrawing.
    #[serde(default)]
    pub status: AdStatus,
    /// The sending process.
    pub instance_id: InstanceId,
    /// Per-process counter: higher is newer.
    pub generation: u64,
    /// Unix milliseconds after which the ad is dead.
    pub expires_at: UnixMillis,
    /// Software version of the sender (informational).
    #[serde(default)]
    pub version: String,
    /// For record kinds (downtime, ban) only: what the operator decided. Last field,
    /// so that a server ad's signed bytes are what they were before records existed
    /// (see [`canonical_ad_bytes`]).
    #[serde(default)]
    pub record: Option<Record>,
    /// Where the server is, as its operator declares it (`[location]` of `skein origin`
    /// and `skein cache`; a Pelican ad's `coordinate`). Last field, after `record`: an ad
    /// without one signs and stores exactly the bytes it did before locations existed
    /// (see `codec::canonical_ad_bytes` and `migrations/README.md`).
    #[serde(default)]
    pub location: Option<Coord>,
}

/// An operator's decision about one server, carried by a downtime or ban record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The trust-file name of the admin key that signed it.
    pub signer: String,
    /// True while in force; a newer record with `false` lifts it (unban, remove).
    pub active: bool,
    /// Downtime start, Unix ms (0 for bans).
    #[serde(default)]
    pub start: UnixMillis,
    /// Downtime end, Unix ms (`u64::MAX` for bans: until lifted).
    #[serde(default)]
    pub end: UnixMillis,
    /// Why, for people.
    #[serde(default)]
    pub reason: String,
}

impl Record {
    /// The unsigned record ad of `kind` about server `target`, made at `now` (its place
    /// in the order: a later record about the same server replaces this one), dropped
    /// by directors at `expires_at`.
    pub fn into_ad(
        self,
        kind: ServerKind,
        target: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Ad {
        Ad {
            name: target.to_string(),
            kind,
            data_url: String::new(),
            web_url: String::new(),
            namespaces: vec![],
            status: AdStatus::Ok,
            instance_id: InstanceId::new(now),
            generation: 0,
            expires_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            record: Some(self),
            location: None,
        }
    }

    /// True if the record keeps its server out of redirects at `now`.
    pub fn holds_back(&self, now: UnixMillis) -> bool {
        self.active && self.start <= now && now < self.end
    }
}

impl Ad {
    /// The key under which directors keep this ad: one live ad per (kind, name).
    pub fn key(&self) -> AdKey {
        AdKey {
            kind: self.kind,
            name: self.name.clone(),
        }
    }

    /// The ad's place in the total order.
    pub fn version(&self) -> AdVersion {
        AdVersion {
            started_at: self.instance_id.started_at,
            uuid: self.instance_id.uuid,
            generation: self.generation,
        }
    }
}

/// An ad with its detached Ed25519 signature (base64url, over [`Ad`]'s canonical bytes).
///
/// Two kinds: a Skein ad is signed by its server (`attestation` absent); a Pelican ad is
/// signed by the director that verified the Pelican server's token, over the ad and
/// the [`Attestation`] of what it verified (see `crate::pelican::attest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAd {
    /// The signed content.
    #[serde(flatten)]
    pub ad: Ad,
    /// base64url (no padding) Ed25519 signature.
    pub signature: String,
    /// Present on Pelican ads: what the attesting director verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Box<Attestation>>,
}

/// Where an ad came from: `skein` (signed by its server) or `pelican` (a Pelican
/// server's token, attested by a director).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Signed by the server's Ed25519 key.
    Skein,
    /// Verified from a Pelican token and attested by a director.
    Pelican,
}

impl Provenance {
    /// The name shown in listings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Skein => "skein",
            Provenance::Pelican => "pelican",
        }
    }

    /// The provenance of an ad carrying `attestation`.
    pub fn of(attestation: Option<&Attestation>) -> Self {
        if attestation.is_some() {
            Provenance::Pelican
        } else {
            Provenance::Skein
        }
    }
}

impl SignedAd {
    /// Skein or Pelican.
    pub fn provenance(&self) -> Provenance {
        Provenance::of(self.attestation.as_deref())
    }

    /// Reads one ad from its JSON, as its `Deserialize` does, in two passes that each
    /// skip the other's fields: `#[serde(flatten)]` would first copy the whole object
    /// into an owned tree (every string and number allocated) and then read the ad from
    /// that. Registrations take this way (a director reads 167 a second at 10,000
    /// servers a minute).
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        /// The fields of [`SignedAd`] beside the flattened ad.
        #[derive(Deserialize)]
        struct Envelope {
            signature: String,
            #[serde(default)]
            attestation: Option<Box<Attestation>>,
        }
        let ad: Ad = serde_json::from_slice(bytes)?;
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        Ok(SignedAd {
            ad,
            signature: envelope.signature,
            attestation: envelope.attestation,
        })
    }
}

/// Identifies one server: directors hold at most one live ad per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AdKey {
    /// The server's kind.
    pub kind: ServerKind,
    /// The server's name.
    pub name: String,
}

impl fmt::Display for AdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}
