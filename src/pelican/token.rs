//! Pelican advertise tokens: the JWT a Pelican server sends as `Authorization: Bearer`.
//!
//! Pelican (`server_utils.GetAdvertisementTok`) mints a WLCG token with a one-minute
//! lifetime: `iss` = the server's issuer URL, `aud` = the director's WLCG audience
//! (`scheme://host[:port]` of its advertise URL), `scope` = `pelican.advertise`, `kid` =
//! the RFC 7638 thumbprint of its key, signed ES256 (P-256 keys, the default), ES384,
//! RS256 or EdDSA (`config.SigningAlgorithmForJWK`). Only those algorithms are ever
//! considered: the header is read and checked before any key is looked up, so `none`
//! and HMAC tokens never reach a key. All time checks use the director's clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::UnixMillis;

/// Longest token accepted, bytes (Pelican's are well under 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `kid` accepted.
pub const MAX_KID_LEN: usize = 256;
/// The scope an advertise token must carry.
pub const ADVERTISE_SCOPE: &str = "pelican.advertise";
/// Longest lifetime (`exp - iat`) accepted: Pelican's tokens live one minute; a token
/// that lives longer is a replay risk the director has no reason to take.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Signature algorithms accepted, by JOSE name.
pub const ALLOWED_ALGS: &[(&str, Algorithm)] = &[
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("RS256", Algorithm::RS256),
    ("EdDSA", Algorithm::EdDSA),
];

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("token is {0} bytes; the limit is {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    /// Not three base64url parts with a JSON header.
    #[error("token is not a JWT: {0}")]
    Malformed(String),
    /// An algorithm outside [`ALLOWED_ALGS`] (`none`, HMAC, ...).
    #[error("token algorithm {0:?} is not accepted (allowed: ES256, ES384, RS256, EdDSA)")]
    Algorithm(String),
    /// No `kid` in the header.
    #[error("token header has no usable kid")]
    MissingKid,
    /// The signature does not verify with the key named by `kid`.
    #[error("token signature does not verify: {0}")]
    Signature(String),
    /// `exp` has passed.
    #[error("token expired at {exp} (director time {now}, leeway {leeway} s)")]
    Expired {
        /// `exp`, Unix seconds.
        exp: u64,
        /// Director time, Unix seconds.
        now: u64,
        /// Leeway, seconds.
        leeway: u64,
    },
    /// `nbf` or `iat` lies in the future.
    #[error("token is not valid yet ({claim} = {at}, director time {now})")]
    NotYetValid {
        /// `nbf` or `iat`.
        claim: &'static str,
        /// Its value.
        at: u64,
        /// Director time, Unix seconds.
        now: u64,
    },
    /// `exp - iat` over [`MAX_TOKEN_LIFETIME_SECS`].
    #[error("token lifetime {0} s is over the {MAX_TOKEN_LIFETIME_SECS} s limit")]
    TooLong(u64),
    /// `aud` names no director of this federation.
    #[error("token audience {0:?} names no director of this federation")]
    Audience(Vec<String>),
    /// No `pelican.advertise` in `scope`.
    #[error("token scope {0:?} lacks pelican.advertise")]
    Scope(String),
}

/// What the header says, checked against the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// The algorithm (one of [`ALLOWED_ALGS`]).
    pub alg: Algorithm,
    /// The key ID.
    pub kid: String,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// A token's claims (only those Skein reads).
#[derive(Debug, Clone, Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    aud: Audience,
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn values(&self) -> Vec<String> {
        match self {
            Audience::None => Vec::new(),
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }
}

/// A token that verified: what the attestation records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The key ID.
    pub kid: String,
    /// The algorithm's JOSE name.
    pub alg: &'static str,
    /// `iat` in Unix milliseconds (or `nbf`, or 0 when neither is present).
    pub issued_at: UnixMillis,
    /// `exp` in Unix milliseconds.
    pub expires_at: UnixMillis,
    /// Lowercase hex SHA-256 of the token text.
    pub sha256: String,
}

/// Reads and checks a token's header: size, shape, algorithm allow-list, `kid`.
pub fn inspect(token: &str) -> Result<TokenHeader, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    let raw: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("header is not JSON: {e}")))?;
    let alg_name = raw.alg.unwrap_or_default();
    let alg = ALLOWED_ALGS
        .iter()
        .find(|(name, _)| *name == alg_name)
        .map(|(_, alg)| *alg)
        .ok_or(TokenError::Algorithm(alg_name))?;
    let kid = raw.kid.unwrap_or_default();
    if kid.is_empty() || kid.len() > MAX_KID_LEN || kid.chars().any(char::is_control) {
        return Err(TokenError::MissingKid);
    }
    Ok(TokenHeader { alg, kid })
}

/// The JOSE name of an allowed algorithm.
pub fn alg_name(alg: Algorithm) -> &'static str {
    ALLOWED_ALGS
        .iter()
        .find(|(_, a)| *a == alg)
        .map(|(name, _)| *name)
        .unwrap_or("?")
}

/// The WLCG audience of a URL as Pelican computes it (`token.GetWLCGAudience`):
/// `scheme://host[:port]`, the port dropped when it is the scheme's default.
pub fn wlcg_audience(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() || authority.is_empty() {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            if p.chars().all(|c| c.is_ascii_digit()) {
                (h, Some(p))
            } else {
                (authority, None)
            }
        }
        _ => (authority, None),
    };
    let default = matches!(
        (scheme.as_str(), port),
        ("http", Some("80")) | ("https", Some("443"))
    );
    Some(match port {
        Some(p) if !default && !p.is_empty() => {
            format!("{scheme}://{}:{p}", host.to_ascii_lowercase())
        }
        _ => format!("{scheme}://{}", host.to_ascii_lowercase()),
    })
}

/// Verifies signature and claims of a token whose header passed [`inspect`].
///
/// `audiences` are WLCG audiences (see [`wlcg_audience`]) of every director of this
/// federation; the token's `aud` must name one. `leeway_secs` applies to `exp`, `nbf`
/// and `iat` alike.
pub fn verify(
    token: &str,
    header: &TokenHeader,
    key: &DecodingKey,
    audiences: &[String],
    now: UnixMillis,
    leeway_secs: u64,
) -> Result<VerifiedToken, TokenError> {
    let mut validation = Validation::new(header.alg);
    // Claims are checked below against the director's (injectable) clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| TokenError::Signature(e.to_string()))?;
    let claims = data.claims;
    let now_s = now / 1000;
    let exp = claims
        .exp
        .ok_or_else(|| TokenError::Malformed("no exp claim".into()))?;
    if exp.saturating_add(leeway_secs) <= now_s {
        return Err(TokenError::Expired {
            exp,
            now: now_s,
            leeway: leeway_secs,
        });
    }
    for (claim, at) in [("nbf", claims.nbf), ("iat", claims.iat)] {
        if let Some(at) = at.filter(|at| *at > now_s.saturating_add(leeway_secs)) {
            return Err(TokenError::NotYetValid {
                claim,
                at,
                now: now_s,
            });
        }
    }
    let start = claims.iat.or(claims.nbf);
    if let Some(start) = start {
        let lifetime = exp.saturating_sub(start);
        if lifetime > MAX_TOKEN_LIFETIME_SECS {
            return Err(TokenError::TooLong(lifetime));
        }
    } else if exp > now_s.saturating_add(MAX_TOKEN_LIFETIME_SECS) {
        return Err(TokenError::TooLong(exp - now_s));
    }
    let aud = claims.aud.values();
    let named = aud.iter().any(|a| {
        let a = wlcg_audience(a).unwrap_or_else(|| a.clone());
        audiences.contains(&a)
    });
    if !named {
        return Err(TokenError::Audience(aud));
    }
    let scope = claims.scope.unwrap_or_default();
    if !scope.split(' ').any(|s| s == ADVERTISE_SCOPE) {
        return Err(TokenError::Scope(scope));
    }
    Ok(VerifiedToken {
        issuer: claims.iss,
        subject: claims.sub,
        kid: header.kid.clone(),
        alg: alg_name(header.alg),
        issued_at: start.unwrap_or(0).saturating_mul(1000),
        expires_at: exp.saturating_mul(1000),
        sha256: sha256_hex(token.as_bytes()),
    })
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_part(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_allow_list_is_checked_before_keys() {
        let body = encode_part(r#"{"exp":1}"#);
        for (alg, expect) in [
            ("none", TokenError::Algorithm("none".into())),
            ("HS256", TokenError::Algorithm("HS256".into())),
            ("PS256", TokenError::Algorithm("PS256".into())),
        ] {
            let token = format!(
                "{}.{body}.",
                encode_part(&format!(r#"{{"alg":"{alg}","kid":"k"}}"#))
            );
            assert_eq!(inspect(&token), Err(expect));
        }
        let no_kid = format!("{}.{body}.sig", encode_part(r#"{"alg":"ES256"}"#));
        assert_eq!(inspect(&no_kid), Err(TokenError::MissingKid));
        let ok = format!(
            "{}.{body}.sig",
            encode_part(r#"{"alg":"ES256","kid":"k1"}"#)
        );
        assert_eq!(inspect(&ok).map(|h| h.kid), Ok("k1".to_string()));
        assert!(matches!(inspect("a.b"), Err(TokenError::Malformed(_))));
        assert!(matches!(inspect("!!!.b.c"), Err(TokenError::Malformed(_))));
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            inspect(&huge),
            Err(TokenError::TooLarge(MAX_TOKEN_BYTES + 1))
        );
    }

    #[test]
    fn wlcg_audience_matches_pelican() {
        let cases = [
            ("http://example.com:8080/path", "http://example.com:8080"),
            ("https://example.com/path", "https://example.com"),
            ("https://example.com:443", "https://example.com"),
            ("http://example.com:80/", "http://example.com"),
            (
                "https://Dir.Example.org:8444",
                "https://dir.example.org:8444",
            ),
            ("http://127.0.0.1:4000", "http://127.0.0.1:4000"),
        ];
        for (url, aud) in cases {
            assert_eq!(wlcg_audience(url).as_deref(), Some(aud), "{url}");
        }
        assert_eq!(wlcg_audience("not a url"), None);
    }
}
