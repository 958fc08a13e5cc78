//! Attestations: a director's signed statement that it verified a Pelican ad.
//!
//! A Pelican advertise token lives a minute and names one director, so peers cannot
//! check it again. The director that verified it signs, with its own Ed25519 key, the
//! Skein ad it made from the Pelican ad together with what it verified (issuer, `kid`,
//! SHA-256 of the token, when, the Pelican JSON itself). The [`SignedAd`] carries the
//! attestation and the director's signature in place of a server's signature; peers
//! accept it only from a director in their trust file and only for namespaces their
//! own trust file or registry gives that Pelican server. See `docs/replication.md`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use crate::ad::{Ad, SignError, SignedAd, SigningKey, VerifyingKey};
use crate::clock::UnixMillis;

const ATTESTATION_DOMAIN: &[u8] = b"skein-pelican-attestation-v1\0";

/// Where the verifying director found the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// The registry's per-prefix JWKS.
    Registry,
    /// A `[[pelican]]` entry of the director's trust file.
    TrustFile,
}

/// What a director verified about one Pelican ad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The verifying director's name (a director in every peer's trust file).
    pub director: String,
    /// When it verified the token (its clock, Unix ms).
    pub verified_at: UnixMillis,
    /// Where the key came from.
    pub key_source: KeySource,
    /// The ad's registry prefix (`/origins/<host>`, `/caches/<site>`).
    pub registry_prefix: String,
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `kid`.
    pub kid: String,
    /// The token's algorithm.
    pub alg: String,
    /// The token's `exp` (Unix ms).
    pub token_expires_at: UnixMillis,
    /// Lowercase hex SHA-256 of the token.
    pub token_sha256: String,
    /// The Pelican ad as received (JSON).
    pub pelican_ad: String,
}

/// The bytes a director signs: a domain tag, the Skein ad, the attestation.
fn signing_bytes(ad: &Ad, attestation: &Attestation) -> Vec<u8> {
    let mut out = ATTESTATION_DOMAIN.to_vec();
    out.extend_from_slice(&crate::ad::canonical_ad_bytes(ad));
    out.extend_from_slice(&crate::codec::canonical_bytes(attestation));
    out
}

/// Signs `ad` with its attestation, as director `key`.
pub fn attest(ad: Ad, attestation: Attestation, key: &SigningKey) -> SignedAd {
    let signature = key.sign(&signing_bytes(&ad, &attestation));
    SignedAd {
        ad,
        signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        attestation: Some(Box::new(attestation)),
    }
}

/// Checks a director's signature over an attested ad.
pub fn verify(
    ad: &Ad,
    attestation: &Attestation,
    signature: &str,
    key: &VerifyingKey,
) -> Result<(), SignError> {
    key.verify_strict(
        &signing_bytes(ad, attestation),
        &crate::ad::decode_signature(signature)?,
    )
    .map_err(|_| SignError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::fixtures;

    fn attestation() -> Attestation {
        Attestation {
            director: "d1".into(),
            verified_at: 5,
            key_source: KeySource::TrustFile,
            registry_prefix: "/origins/o".into(),
            issuer: "https://o".into(),
            kid: "k".into(),
            alg: "ES256".into(),
            token_expires_at: 60_000,
            token_sha256: "00".repeat(32),
            pelican_ad: "{}".into(),
        }
    }

    #[test]
    fn signs_and_verifies_and_detects_tampering() {
        let key = fixtures::key_for("d1");
        let ad = fixtures::ad("o", ServerKind::Origin, &["/data"], 10, 1);
        let signed = attest(ad, attestation(), &key);
        let att = signed.attestation.as_deref().unwrap();
        assert_eq!(
            verify(&signed.ad, att, &signed.signature, &key.verifying_key()),
            Ok(())
        );
        let mut other = att.clone();
        other.kid = "k2".into();
        assert_eq!(
            verify(&signed.ad, &other, &signed.signature, &key.verifying_key()),
            Err(SignError::BadSignature)
        );
        let mut moved = signed.ad.clone();
        moved.data_url = "https://evil:1".into();
        assert_eq!(
            verify(&moved, att, &signed.signature, &key.verifying_key()),
            Err(SignError::BadSignature)
        );
        let stranger = fixtures::key_for("d2");
        assert!(
            verify(
                &signed.ad,
                att,
                &signed.signature,
                &stranger.verifying_key()
            )
            .is_err()
        );
        // A server's own signature scheme does not accept an attestation signature.
        assert!(signed.verify(&key.verifying_key()).is_err());
    }
}
