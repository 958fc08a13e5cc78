//! Public key sets (JWKS) of Pelican servers, parsed with hard bounds.
//!
//! A set larger than [`MAX_JWKS_BYTES`] or holding more than [`MAX_KEYS`] keys is
//! refused whole; a key that is malformed, oversized, of an unsupported type or curve,
//! or whose declared `alg` is not allowed is left out (and named in the set, so a token
//! that names it is told why). A key without `kid` gets its RFC 7638 thumbprint, which
//! is what Pelican (`jwk.AssignKeyID`) uses.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::token::sha256_hex;

/// Largest JWKS document accepted, bytes.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys in one set.
pub const MAX_KEYS: usize = 16;
/// Largest RSA modulus accepted, bits; smallest too.
const MAX_RSA_BITS: usize = 8192;
const MIN_RSA_BITS: usize = 2048;

/// Why a JWKS was refused whole.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Over [`MAX_JWKS_BYTES`].
    #[error("JWKS is {0} bytes; the limit is {MAX_JWKS_BYTES}")]
    TooLarge(usize),
    /// Over [`MAX_KEYS`].
    #[error("JWKS holds {0} keys; the limit is {MAX_KEYS}")]
    TooManyKeys(usize),
    /// Not a JSON object with a `keys` array.
    #[error("JWKS is malformed: {0}")]
    Malformed(String),
}

/// One usable public key.
#[derive(Clone)]
pub struct PublicKey {
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("alg", &self.alg).finish()
    }
}

/// A parsed key set: usable keys by `kid`, and the kids left out with the reason.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
    rejected: HashMap<String, String>,
}

/// The result of looking a `kid` up in a set.
#[derive(Debug, Clone)]
pub enum KidLookup {
    /// Usable.
    Found(PublicKey),
    /// Present but left out, with the reason.
    Rejected(String),
    /// Not in the set.
    Unknown,
}

impl KeySet {
    /// Parses a JWKS document.
    pub fn parse(bytes: &[u8]) -> Result<Arc<Self>, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(bytes.len()));
        }
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| JwksError::Malformed(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwksError::Malformed("no \"keys\" array".into()))?;
        if keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(keys.len()));
        }
        let mut set = KeySet::default();
        for (i, raw) in keys.iter().enumerate() {
            let label = raw
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| thumbprint(raw))
                .unwrap_or_else(|| format!("#{i}"));
            match usable(raw) {
                Ok(key) => {
                    set.keys.insert(label, key);
                }
                Err(why) => {
                    tracing::debug!(kid = %label, %why, "JWKS key left out");
                    set.rejected.insert(label, why);
                }
            }
        }
        Ok(Arc::new(set))
    }

    /// Parses a JWKS held in a `jsonwebtoken` set (tests and fixtures).
    pub fn from_jwk_set(set: &JwkSet) -> Result<Arc<Self>, JwksError> {
        let bytes = serde_json::to_vec(set).map_err(|e| JwksError::Malformed(e.to_string()))?;
        Self::parse(&bytes)
    }

    /// Looks a key up.
    pub fn lookup(&self, kid: &str) -> KidLookup {
        if let Some(key) = self.keys.get(kid) {
            return KidLookup::Found(key.clone());
        }
        match self.rejected.get(kid) {
            Some(why) => KidLookup::Rejected(why.clone()),
            None => KidLookup::Unknown,
        }
    }

    /// True if `kid` names a usable key.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks one key's shape and size, then builds it.
fn usable(raw: &Value) -> Result<PublicKey, String> {
    let text_len = |name: &str| raw.get(name).and_then(Value::as_str).map_or(0, str::len);
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => {
            let (alg, coord_len) = match ec.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 43),
                EllipticCurve::P384 => (Algorithm::ES384, 64),
                ref other => return Err(format!("curve {other:?} is not accepted")),
            };
            if text_len("x") != coord_len || text_len("y") != coord_len {
                return Err("EC coordinates have the wrong length".into());
            }
            alg
        }
        AlgorithmParameters::RSA(_) => {
            let bits = text_len("n") * 6;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS + 6).contains(&bits) || text_len("e") > 8 {
                return Err(format!("RSA modulus of about {bits} bits is not accepted"));
            }
            Algorithm::RS256
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 || text_len("x") != 43 {
                return Err("only Ed25519 octet key pairs are accepted".into());
            }
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are never accepted".into());
        }
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let agrees = matches!(
            (declared, alg),
            (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::ES384, Algorithm::ES384)
                | (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !agrees {
            return Err(format!("declared alg {declared:?} does not fit the key"));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(PublicKey { alg, key })
}

/// RFC 7638 thumbprint (SHA-256, base64url) of a JWK's required members.
pub fn thumbprint(raw: &Value) -> Option<String> {
    use base64::Engine;
    let s = |name: &str| raw.get(name).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv")?, s("x")?),
        _ => return None,
    };
    let hex = sha256_hex(canonical.as_bytes());
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn parses_a_p256_key() {
        let set = KeySet::parse(format!(r#"{{"keys":[{P256}]}}"#).as_bytes()).unwrap();
        assert!(matches!(set.lookup("k1"), KidLookup::Found(k) if k.alg == Algorithm::ES256));
        assert!(matches!(set.lookup("other"), KidLookup::Unknown));
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 section 3.1.
        let raw: Value = serde_json::from_str(r#"{"kty":"RSA","e":"AQAB","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#).unwrap();
        assert_eq!(
            thumbprint(&raw).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn bad_sets_and_keys_are_refused() {
        assert!(matches!(
            KeySet::parse(b"not json"),
            Err(JwksError::Malformed(_))
        ));
        assert!(matches!(KeySet::parse(b"{}"), Err(JwksError::Malformed(_))));
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(
            KeySet::parse(&huge).err(),
            Some(JwksError::TooLarge(MAX_JWKS_BYTES + 1))
        );
        let many = format!(r#"{{"keys":[{}]}}"#, vec![P256; MAX_KEYS + 1].join(","));
        assert_eq!(
            KeySet::parse(many.as_bytes()).err(),
            Some(JwksError::TooManyKeys(MAX_KEYS + 1))
        );
        let hmac = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#;
        let set = KeySet::parse(hmac.as_bytes()).unwrap();
        assert!(matches!(set.lookup("h"), KidLookup::Rejected(_)));
        let huge_rsa = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"r","e":"AQAB","n":"{}"}}]}}"#,
            "A".repeat(4000)
        );
        let set = KeySet::parse(huge_rsa.as_bytes()).unwrap();
        assert!(matches!(set.lookup("r"), KidLookup::Rejected(_)));
        let short_ec = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"e","x":"AA","y":"AA"}]}"#;
        let set = KeySet::parse(short_ec.as_bytes()).unwrap();
        assert!(matches!(set.lookup("e"), KidLookup::Rejected(_)));
        let lying = P256.replace(r#""alg":"ES256""#, r#""alg":"RS256""#);
        let set = KeySet::parse(format!(r#"{{"keys":[{lying}]}}"#).as_bytes()).unwrap();
        assert!(matches!(set.lookup("k1"), KidLookup::Rejected(_)));
    }
}
