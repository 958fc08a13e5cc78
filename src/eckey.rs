//! EC P-256 keys for Pelican-style tokens (`skein keygen --kind ec`): a PKCS#8 PEM file
//! (mode 0600), its public JWKS, and its key id (the RFC 7638 thumbprint, as Pelican
//! assigns it).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use p256::SecretKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::keys::{self, KeyError};

/// A P-256 private key with its key id.
#[derive(Clone)]
pub struct EcKey {
    secret: SecretKey,
    kid: String,
}

impl std::fmt::Debug for EcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EcKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::random(&mut OsRng))
    }

    fn from_secret(secret: SecretKey) -> Self {
        let jwk = secret.public_key().to_jwk();
        let (x, y) = coordinates(&jwk);
        // RFC 7638: SHA-256 of the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Self { secret, kid }
    }

    /// Parses a PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &str) -> Option<Self> {
        SecretKey::from_pkcs8_pem(pem)
            .ok()
            .or_else(|| SecretKey::from_sec1_pem(pem).ok())
            .map(Self::from_secret)
    }

    /// The key id (`kid`) tokens carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 PEM text.
    pub fn to_pem(&self) -> Option<String> {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .ok()
            .map(|pem| pem.to_string())
    }

    /// The key for signing ES256 JWTs.
    pub fn encoding_key(&self) -> Option<EncodingKey> {
        EncodingKey::from_ec_pem(self.to_pem()?.as_bytes()).ok()
    }

    /// The public key as one JWK (`kty`, `crv`, `x`, `y`, `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> Value {
        let jwk = self.secret.public_key().to_jwk();
        let (x, y) = coordinates(&jwk);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// The public JWKS (`{"keys": [...]}`) for a trust file, a registry or `jwks_uri`.
    pub fn public_jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk()] })
    }
}

fn coordinates(jwk: &p256::elliptic_curve::JwkEcKey) -> (String, String) {
    let value: Value = serde_json::from_str(&jwk.to_string()).unwrap_or_default();
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
    (field("x"), field("y"))
}

/// Writes a new random key to `path` (PKCS#8 PEM, mode 0600, never overwriting).
pub fn generate(path: &Path) -> Result<EcKey, KeyError> {
    let key = EcKey::generate();
    let pem = key
        .to_pem()
        .ok_or_else(|| KeyError::Malformed(path.to_path_buf()))?;
    keys::write_secret(path, pem.as_bytes())?;
    Ok(key)
}

/// Loads a PEM key, refusing a file that other users can read.
pub fn load(path: &Path) -> Result<EcKey, KeyError> {
    let text = keys::read_secret(path)?;
    EcKey::from_pem(&text).ok_or_else(|| KeyError::Malformed(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_load_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/issuer.pem");
        let key = generate(&path).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(loaded.public_jwks(), key.public_jwks());
        assert!(generate(&path).is_err(), "never overwrites a key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::Exposed { .. })));

        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid().to_string());
        let token = jsonwebtoken::encode(
            &header,
            &json!({"sub": "x", "exp": 4_000_000_000u64}),
            &key.encoding_key().unwrap(),
        )
        .unwrap();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.public_jwks()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(set.find(key.kid()).unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 does not give a P-256 example; check the shape and stability instead.
        let key = EcKey::generate();
        assert_eq!(key.kid().len(), 43);
        let again = EcKey::from_pem(&key.to_pem().unwrap()).unwrap();
        assert_eq!(again.kid(), key.kid());
    }
}
