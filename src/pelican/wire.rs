//! Pelican's advertisement JSON, exactly as a Pelican v7 server serialises it.
//!
//! Taken from Pelican `server_structs/director.go` (`OriginAdvertise`, `ServerBaseAd`,
//! `NamespaceAd`, `Capabilities`, `TokenIssuer`, `TokenGen`, `Coordinate`, `Downtime`)
//! and `server_structs/api_resp.go` (`SimpleApiResp`). Go's `encoding/json` rules apply:
//! a nil slice is written `null`, a `url.URL` is written as an object of its exported
//! fields, a `time.Time` as RFC 3339 text, untagged fields under their Go names. Every
//! struct tolerates unknown fields, so newer Pelican versions still parse.
//!
//! Pelican once had `OriginAdvertiseV2` / `NamespaceAdV2`; upstream has since folded
//! them into `OriginAdvertise` / `NamespaceAd` with the same JSON. Both names are
//! exported here.

use serde::{Deserialize, Deserializer, Serialize};

/// A Go `[]T` field: `null` (nil slice) and a missing key both read as empty.
fn null_as_empty<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}

/// A Go `string` field that a hand-written client may send as `null`.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// Go's zero `time.Time` as `encoding/json` writes it.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A Go `time.Time` on the wire: RFC 3339 text (`2026-11-27T17:20:00.123456789-06:00`).
///
/// Kept as the text Pelican sent, so a round trip is byte-exact; [`GoTime::unix_millis`]
/// reads it. Go's zero time (`0001-01-01T00:00:00Z`) means "unset".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoTime(pub String);

impl Default for GoTime {
    fn default() -> Self {
        GoTime(GO_ZERO_TIME.to_owned())
    }
}

impl GoTime {
    /// The time as RFC 3339 UTC with millisecond precision (what Go can parse back).
    pub fn from_unix_millis(ms: i64) -> Self {
        GoTime(format_rfc3339_millis(ms))
    }

    /// Unix milliseconds, or `None` for Go's zero time, times before 1970 and text that
    /// is not RFC 3339.
    pub fn unix_millis(&self) -> Option<i64> {
        parse_rfc3339_millis(&self.0).filter(|ms| *ms > 0)
    }

    /// True for Go's zero time (or anything unparseable, which Skein treats alike).
    pub fn is_unset(&self) -> bool {
        self.unix_millis().is_none()
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn format_rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) into Unix milliseconds.
fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Go's `url.URL` as `encoding/json` writes it (it has no JSON marshaller of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoUrl {
    #[serde(rename = "Scheme", default, deserialize_with = "null_as_default")]
    pub scheme: String,
    #[serde(rename = "Opaque", default, deserialize_with = "null_as_default")]
    pub opaque: String,
    /// `*url.Userinfo`: its fields are unexported, so Go writes `null` or `{}`.
    #[serde(rename = "User", default)]
    pub user: Option<serde_json::Value>,
    #[serde(rename = "Host", default, deserialize_with = "null_as_default")]
    pub host: String,
    #[serde(rename = "Path", default, deserialize_with = "null_as_default")]
    pub path: String,
    #[serde(rename = "RawPath", default, deserialize_with = "null_as_default")]
    pub raw_path: String,
    #[serde(rename = "OmitHost", default)]
    pub omit_host: bool,
    #[serde(rename = "ForceQuery", default)]
    pub force_query: bool,
    #[serde(rename = "RawQuery", default, deserialize_with = "null_as_default")]
    pub raw_query: String,
    #[serde(rename = "Fragment", default, deserialize_with = "null_as_default")]
    pub fragment: String,
    #[serde(rename = "RawFragment", default, deserialize_with = "null_as_default")]
    pub raw_fragment: String,
}

impl GoUrl {
    /// Splits `scheme://host/path?query#fragment` into Go's fields.
    pub fn parse(url: &str) -> Self {
        let (rest, fragment) = url.split_once('#').unwrap_or((url, ""));
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (scheme, rest) = rest.split_once("://").unwrap_or(("", rest));
        let (host, path) = match rest.find('/') {
            Some(i) if !scheme.is_empty() => (&rest[..i], &rest[i..]),
            _ if !scheme.is_empty() => (rest, ""),
            _ => ("", rest),
        };
        GoUrl {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            raw_query: query.to_owned(),
            fragment: fragment.to_owned(),
            ..GoUrl::default()
        }
    }

    /// The URL as text (`url.URL.String()` for the fields Pelican uses).
    pub fn to_url_string(&self) -> String {
        let mut out = String::new();
        if !self.scheme.is_empty() {
            out.push_str(&self.scheme);
            out.push(':');
        }
        if !self.opaque.is_empty() {
            out.push_str(&self.opaque);
        } else {
            if !self.scheme.is_empty() || !self.host.is_empty() {
                out.push_str("//");
            }
            out.push_str(&self.host);
            out.push_str(&self.path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            out.push('?');
            out.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            out.push('#');
            out.push_str(&self.fragment);
        }
        out
    }
}

/// `server_structs.TokenIssuer`: an issuer whose tokens the server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIssuer {
    #[serde(rename = "base-paths", default, deserialize_with = "null_as_empty")]
    pub base_paths: Vec<String>,
    #[serde(
        rename = "restricted-paths",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub restricted_paths: Vec<String>,
    #[serde(rename = "issuer", default)]
    pub issuer_url: GoUrl,
}

/// `server_structs.TokenGen`: how a client obtains a token for a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGen {
    /// `StrategyType`: `"OAuth2"` or `"Vault"`.
    #[serde(rename = "strategy", default, deserialize_with = "null_as_default")]
    pub strategy: String,
    #[serde(rename = "vault-server", default, deserialize_with = "null_as_default")]
    pub vault_server: String,
    #[serde(rename = "max-scope-depth", default)]
    pub max_scope_depth: u32,
    #[serde(rename = "issuer", default)]
    pub credential_issuer: GoUrl,
}

/// `server_structs.Capabilities` (JSON keys kept upper case by Pelican for compatibility).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(rename = "PublicRead", default)]
    pub public_reads: bool,
    #[serde(rename = "Read", default)]
    pub reads: bool,
    #[serde(rename = "Write", default)]
    pub writes: bool,
    #[serde(rename = "Listing", default)]
    pub listings: bool,
    #[serde(rename = "FallBackRead", default)]
    pub direct_reads: bool,
    #[serde(rename = "Copies", default)]
    pub copies: bool,
}

/// `server_structs.NamespaceAd`: one namespace a server offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceAd {
    /// Untagged in Go, so its JSON key is the field name.
    #[serde(rename = "Caps", default)]
    pub caps: Capabilities,
    #[serde(rename = "path", default, deserialize_with = "null_as_default")]
    pub path: String,
    #[serde(
        rename = "token-generation",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub generation: Vec<TokenGen>,
    #[serde(rename = "token-issuer", default, deserialize_with = "null_as_empty")]
    pub issuer: Vec<TokenIssuer>,
    #[serde(rename = "from-topology", default)]
    pub from_topology: bool,
}

/// `server_structs.Coordinate` (mapstructure tags only, so JSON uses the Go names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    #[serde(rename = "Lat", default)]
    pub lat: f64,
    #[serde(rename = "Long", default)]
    pub long: f64,
    #[serde(rename = "AccuracyRadius", default)]
    pub accuracy_radius: u16,
    #[serde(rename = "Source", default, deserialize_with = "null_as_default")]
    pub source: String,
    #[serde(rename = "FromTTLCache", default)]
    pub from_ttl_cache: bool,
}

/// `server_structs.Downtime`: a planned or unplanned outage of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    #[serde(rename = "id", default, deserialize_with = "null_as_default")]
    pub uuid: String,
    #[serde(rename = "serverName", default, deserialize_with = "null_as_default")]
    pub server_name: String,
    #[serde(rename = "serverId", default, deserialize_with = "null_as_default")]
    pub server_id: String,
    #[serde(rename = "createdBy", default, deserialize_with = "null_as_default")]
    pub created_by: String,
    #[serde(rename = "updatedBy", default, deserialize_with = "null_as_default")]
    pub updated_by: String,
    #[serde(rename = "source", default, deserialize_with = "null_as_default")]
    pub source: String,
    /// `SCHEDULED` or `UNSCHEDULED`.
    #[serde(rename = "class", default, deserialize_with = "null_as_default")]
    pub class: String,
    #[serde(rename = "description", default, deserialize_with = "null_as_default")]
    pub description: String,
    #[serde(rename = "severity", default, deserialize_with = "null_as_default")]
    pub severity: String,
    /// Unix milliseconds.
    #[serde(rename = "startTime", default)]
    pub start_time: i64,
    /// Unix milliseconds; `-1` means indefinite.
    #[serde(rename = "endTime", default)]
    pub end_time: i64,
    #[serde(rename = "createdAt", default)]
    pub created_at: i64,
    #[serde(rename = "updatedAt", default)]
    pub updated_at: i64,
    #[serde(rename = "deletedAt", default)]
    pub deleted_at: Option<i64>,
}

/// `server_structs.ServerBaseAd`: the fields every Pelican ad carries (embedded in Go).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerBaseAd {
    #[serde(rename = "name", default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Process start, Unix seconds; 0 when unknown (servers older than v7.9).
    #[serde(rename = "startTime", default)]
    pub start_time: i64,
    /// Hex-encoded UUID chosen at process start; empty when unknown.
    #[serde(rename = "instanceID", default, deserialize_with = "null_as_default")]
    pub instance_id: String,
    /// Counter incremented for each ad the process generates; 0 when unknown.
    #[serde(rename = "generationID", default)]
    pub generation_id: u64,
    #[serde(rename = "version", default, deserialize_with = "null_as_default")]
    pub version: String,
    /// When the ad expires (Go zero time when unknown).
    #[serde(rename = "expiry", default)]
    pub expiration: GoTime,
}

/// `server_structs.OriginAdvertise`: what origins AND caches POST to
/// `/api/v1.0/director/registerOrigin` / `registerCache`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OriginAdvertise {
    #[serde(flatten)]
    pub server_base_ad: ServerBaseAd,
    #[serde(rename = "serverId", default, deserialize_with = "null_as_default")]
    pub server_id: String,
    /// `/origins/<host>` or `/caches/<sitename>`: whose registry key signs the token.
    #[serde(
        rename = "registry-prefix",
        default,
        deserialize_with = "null_as_default"
    )]
    pub registry_prefix: String,
    #[serde(
        rename = "broker-url",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_empty"
    )]
    pub broker_url: String,
    #[serde(rename = "data-url", default, deserialize_with = "null_as_default")]
    pub data_url: String,
    #[serde(
        rename = "web-url",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_empty"
    )]
    pub web_url: String,
    #[serde(
        rename = "coordinate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub coordinate: Option<Coordinate>,
    #[serde(rename = "capabilities", default)]
    pub caps: Capabilities,
    #[serde(rename = "namespaces", default, deserialize_with = "null_as_empty")]
    pub namespaces: Vec<NamespaceAd>,
    #[serde(rename = "token-issuer", default, deserialize_with = "null_as_empty")]
    pub issuer: Vec<TokenIssuer>,
    /// `OriginStorageType`: `posix`, `posixv2`, `s3`, `https`, `globus`, ... (empty: posix).
    #[serde(rename = "storageType", default, deserialize_with = "null_as_default")]
    pub storage_type: String,
    /// Negative sense kept from Pelican: `true` disables the director's self-test.
    #[serde(rename = "directorTest", default)]
    pub disable_director_test: bool,
    #[serde(rename = "downtimes", default, deserialize_with = "null_as_empty")]
    pub downtimes: Vec<Downtime>,
    #[serde(
        rename = "requiredFeatures",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub required_features: Vec<String>,
    /// The server's clock when it sent the ad (Go zero time if unset): skew detection.
    #[serde(rename = "now", default)]
    pub now: GoTime,
    /// Overall health, e.g. `"OK"` or `"shutting down"` (Pelican >= 7.17; empty before).
    #[serde(rename = "status", default, deserialize_with = "null_as_default")]
    pub status: String,
}

/// The name Pelican used for this struct before folding V2 into it.
pub type OriginAdvertiseV2 = OriginAdvertise;
/// The name Pelican used for this struct before folding V2 into it.
pub type NamespaceAdV2 = NamespaceAd;

/// `server_structs.SimpleApiResp`: Pelican's generic API answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleApiResp {
    /// [`RESP_OK`], [`RESP_FAILED`] or `"timeout"`.
    pub status: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub msg: String,
}

/// `server_structs.RespOK`.
pub const RESP_OK: &str = "success";
/// `server_structs.RespFailed`.
pub const RESP_FAILED: &str = "error";

impl SimpleApiResp {
    /// `{"status":"success","msg":...}`.
    pub fn ok(msg: impl Into<String>) -> Self {
        SimpleApiResp {
            status: RESP_OK.to_owned(),
            msg: msg.into(),
        }
    }

    /// `{"status":"error","msg":...}`.
    pub fn failed(msg: impl Into<String>) -> Self {
        SimpleApiResp {
            status: RESP_FAILED.to_owned(),
            msg: msg.into(),
        }
    }
}

/// The director's answer when an administrator has not approved a server or namespace
/// (`gin.H{"approval_error": true, "error": ...}` in Pelican's `registerServerAd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalErrorResp {
    pub approval_error: bool,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The ad Pelican's `director/director_test.go` posts in its downtime test (a map
    /// with only some keys: everything else must default).
    const DIRECTOR_TEST_AD: &str = r#"{
        "name": "test-origin-server",
        "registry-prefix": "/origins/example.org",
        "data-url": "https://example.org:8443",
        "web-url": "https://example.org:8444",
        "downtimes": [{
            "id": "uuid-1", "createdBy": "admin", "updatedBy": "admin", "source": "cache",
            "class": "SCHEDULED", "severity": "Outage (completely inaccessible)",
            "startTime": 1795798000000, "endTime": 1795805200000
        }]
    }"#;

    /// A full origin ad as Go's `json.Marshal(OriginAdvertise{...})` writes it after
    /// `origin/advertise.go` `CreateAdvertisement` + `Initialize` + `ad.Now = time.Now()`
    /// (field order of the struct, nil slices as null, url.URL as an object).
    const FULL_ORIGIN_AD: &str = r#"{"name":"origin.example.org","startTime":1795800000,"instanceID":"8f14e45fceea167a5a36dedd4bea2543","generationID":7,"version":"7.21.0","expiry":"2026-11-27T11:45:00.123456789-06:00","serverId":"c7c2fd9a-6f5e-4bd1-8e40-0e3d2b3c1a11","registry-prefix":"/origins/origin.example.org","broker-url":"https://broker.example.org/api/v1.0/broker/reverse?origin=origin.example.org&prefix=%2Fdata","data-url":"https://origin.example.org:8443","web-url":"https://origin.example.org:8444","coordinate":{"Lat":43.07,"Long":-89.4,"AccuracyRadius":0,"Source":"declared","FromTTLCache":false},"capabilities":{"PublicRead":false,"Read":true,"Write":false,"Listing":true,"FallBackRead":true,"Copies":true},"namespaces":[{"Caps":{"PublicRead":false,"Read":true,"Write":false,"Listing":true,"FallBackRead":true,"Copies":true},"path":"/data","token-generation":[{"strategy":"OAuth2","vault-server":"","max-scope-depth":3,"issuer":{"Scheme":"https","Opaque":"","User":null,"Host":"origin.example.org:8444","Path":"","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"","Fragment":"","RawFragment":""}}],"token-issuer":[{"base-paths":["/data"],"restricted-paths":null,"issuer":{"Scheme":"https","Opaque":"","User":null,"Host":"origin.example.org:8444","Path":"","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"","Fragment":"","RawFragment":""}}],"from-topology":false}],"token-issuer":[{"base-paths":["/data"],"restricted-paths":null,"issuer":{"Scheme":"https","Opaque":"","User":null,"Host":"origin.example.org:8444","Path":"","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"","Fragment":"","RawFragment":""}}],"storageType":"posix","directorTest":false,"downtimes":null,"requiredFeatures":null,"now":"2026-11-27T11:30:00.5-06:00","status":"OK"}"#;

    /// A cache ad (`cache/advertise.go`): no issuers, Go zero times for an old server.
    const OLD_CACHE_AD: &str = r#"{"name":"cache.example.org","startTime":0,"instanceID":"","generationID":0,"version":"7.8.2","expiry":"0001-01-01T00:00:00Z","serverId":"","registry-prefix":"/caches/cache.example.org","data-url":"https://cache.example.org:8442","web-url":"https://cache.example.org:8444","capabilities":{"PublicRead":false,"Read":false,"Write":false,"Listing":false,"FallBackRead":false,"Copies":false},"namespaces":null,"token-issuer":null,"storageType":"","directorTest":true,"downtimes":[],"requiredFeatures":[],"now":"0001-01-01T00:00:00Z","status":""}"#;

    #[test]
    fn director_test_ad_parses_with_defaults() {
        let ad: OriginAdvertise = serde_json::from_str(DIRECTOR_TEST_AD).unwrap();
        assert_eq!(ad.server_base_ad.name, "test-origin-server");
        assert_eq!(ad.registry_prefix, "/origins/example.org");
        assert_eq!(ad.data_url, "https://example.org:8443");
        assert_eq!(ad.downtimes.len(), 1);
        assert_eq!(ad.downtimes[0].class, "SCHEDULED");
        assert_eq!(ad.downtimes[0].deleted_at, None);
        assert!(ad.namespaces.is_empty());
        assert!(ad.server_base_ad.expiration.is_unset());
        assert_eq!(ad.server_base_ad.generation_id, 0);
    }

    #[test]
    fn full_origin_ad_maps_every_field() {
        let ad: OriginAdvertise = serde_json::from_str(FULL_ORIGIN_AD).unwrap();
        let base = &ad.server_base_ad;
        assert_eq!(base.start_time, 1_795_800_000);
        assert_eq!(base.instance_id, "8f14e45fceea167a5a36dedd4bea2543");
        assert_eq!(base.generation_id, 7);
        // 11:45:00.123 at UTC-6 is 17:45:00.123 UTC.
        assert_eq!(
            base.expiration.unix_millis(),
            Some(1_795_801_500_123),
            "expiry"
        );
        assert_eq!(ad.now.unix_millis(), Some(1_795_800_600_500));
        assert!(ad.caps.reads && ad.caps.direct_reads && !ad.caps.writes);
        assert_eq!(ad.namespaces[0].path, "/data");
        assert_eq!(ad.namespaces[0].generation[0].max_scope_depth, 3);
        assert_eq!(
            ad.issuer[0].issuer_url.to_url_string(),
            "https://origin.example.org:8444"
        );
        assert!(ad.issuer[0].restricted_paths.is_empty());
        assert_eq!(
            ad.coordinate.as_ref().map(|c| c.source.as_str()),
            Some("declared")
        );
        assert_eq!(ad.status, "OK");
    }

    #[test]
    fn round_trips_keep_every_value() {
        for text in [DIRECTOR_TEST_AD, FULL_ORIGIN_AD, OLD_CACHE_AD] {
            let ad: OriginAdvertise = serde_json::from_str(text).unwrap();
            let again: OriginAdvertise =
                serde_json::from_str(&serde_json::to_string(&ad).unwrap()).unwrap();
            assert_eq!(ad, again);
        }
    }

    #[test]
    fn serialises_with_pelicans_keys() {
        let ad: OriginAdvertise = serde_json::from_str(FULL_ORIGIN_AD).unwrap();
        let out: Value = serde_json::to_value(&ad).unwrap();
        let original: Value = serde_json::from_str(FULL_ORIGIN_AD).unwrap();
        // Equal except where Go writes a nil slice as null and we write [].
        let mut original = original;
        for key in ["downtimes", "requiredFeatures"] {
            original[key] = json!([]);
        }
        original["token-issuer"][0]["restricted-paths"] = json!([]);
        original["namespaces"][0]["token-issuer"][0]["restricted-paths"] = json!([]);
        assert_eq!(out, original);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let text = r#"{"name":"x","data-url":"https://x","futureField":{"a":1},
            "capabilities":{"Read":true,"NewCap":true},
            "namespaces":[{"path":"/p","Caps":{},"extra":[1]}]}"#;
        let ad: OriginAdvertise = serde_json::from_str(text).unwrap();
        assert!(ad.caps.reads);
        assert_eq!(ad.namespaces[0].path, "/p");
    }

    #[test]
    fn old_server_ad_has_no_ordering_fields() {
        let ad: OriginAdvertise = serde_json::from_str(OLD_CACHE_AD).unwrap();
        assert!(ad.server_base_ad.expiration.is_unset());
        assert!(ad.now.is_unset());
        assert!(ad.namespaces.is_empty());
        assert!(ad.disable_director_test);
    }

    #[test]
    fn go_time_parses_rfc3339_forms() {
        let t = |s: &str| GoTime(s.to_owned()).unix_millis();
        assert_eq!(t("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(t("2026-11-27T17:45:00Z"), Some(1_795_801_500_000));
        assert_eq!(t("2026-11-27T18:45:00+01:00"), Some(1_795_801_500_000));
        assert_eq!(t("2026-11-27T17:45:00.9999Z"), Some(1_795_801_500_999));
        assert_eq!(t(GO_ZERO_TIME), None);
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-27T17:45:00",
            "2026-11-27T17:45:00.Z",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        let ms = 1_795_801_500_123;
        assert_eq!(GoTime::from_unix_millis(ms).unix_millis(), Some(ms));
        assert_eq!(GoTime::from_unix_millis(ms).0, "2026-11-27T17:45:00.123Z");
    }

    #[test]
    fn go_url_parses_and_prints() {
        for s in ["https://h.example:8444", "https://h/p/q?x=1#f", "http://h"] {
            assert_eq!(GoUrl::parse(s).to_url_string(), s);
        }
        assert_eq!(GoUrl::parse("https://h/p").path, "/p");
    }

    #[test]
    fn simple_api_resp_matches_pelican() {
        let ok = serde_json::to_string(&SimpleApiResp::ok("Successful registration")).unwrap();
        assert_eq!(
            ok,
            r#"{"status":"success","msg":"Successful registration"}"#
        );
        let bare = serde_json::to_string(&SimpleApiResp::failed("")).unwrap();
        assert_eq!(bare, r#"{"status":"error"}"#);
    }
}
