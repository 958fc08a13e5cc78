//! Signing and verifying ads: Ed25519 over the ad's canonical bytes ([`canonical_ad_bytes`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer};

use super::{Ad, SignedAd};
use crate::codec;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// The domain tag in front of every ad's signed bytes.
const SIGNING_DOMAIN: &[u8] = b"skein-ad-v1\0";

/// The bytes an ad's signature covers: a domain tag, then the ad in the codec's canonical
/// bincode (fields in declaration order, fixed-width integers, length-prefixed strings).
/// The trailing optional fields (`location`, then `record`) are left out while absent
/// (bincode writes `None` as one 0 byte): an ad signs exactly the bytes it signed before
/// those fields existed, so services of earlier versions keep verifying.
pub fn canonical_ad_bytes(ad: &Ad) -> Vec<u8> {
    let mut out = SIGNING_DOMAIN.to_vec();
    out.extend_from_slice(&codec::canonical_bytes(ad));
    for absent in [ad.location.is_none(), ad.record.is_none()] {
        if !absent || out.last() != Some(&0) {
            break;
        }
        out.pop();
    }
    out
}

/// Why an ad's signature or a key did not check out.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The signature field is not base64url of 64 bytes.
    #[error("signature is not a base64url Ed25519 signature")]
    MalformedSignature,
    /// The signature does not verify with the listed key.
    #[error("signature does not verify with the key listed for this server")]
    BadSignature,
    /// A public key is not base64url of 32 bytes.
    #[error("public key is not a base64url Ed25519 key")]
    MalformedKey,
}

impl Ad {
    /// Signs the ad with `key`.
    pub fn sign(self, key: &SigningKey) -> SignedAd {
        let signature = key.sign(&canonical_ad_bytes(&self));
        SignedAd {
            ad: self,
            signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            attestation: None,
        }
    }
}

impl SignedAd {
    /// Checks the signature against `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), SignError> {
        self.ad.verify_signature(&self.signature, key)
    }
}

impl Ad {
    /// Checks a detached `signature` (base64url) over this ad against `key`: a stored ad
    /// is re-checked this way without rebuilding a [`SignedAd`].
    pub fn verify_signature(&self, signature: &str, key: &VerifyingKey) -> Result<(), SignError> {
        let signature = decode_signature(signature)?;
        key.verify_strict(&canonical_ad_bytes(self), &signature)
            .map_err(|_| SignError::BadSignature)
    }
}

/// A public key as base64url (the form `skein keygen` prints and the trust file holds).
pub fn encode_public_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Parses a base64url public key.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, SignError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim().as_bytes())
        .map_err(|_| SignError::MalformedKey)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| SignError::MalformedKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SignError::MalformedKey)
}

/// A detached Ed25519 signature from its base64url (no padding) text.
pub fn decode_signature(text: &str) -> Result<Signature, SignError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|_| SignError::MalformedSignature)?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| SignError::MalformedSignature)?;
    Ok(Signature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{AdStatus, InstanceId, ServerKind};

    fn sample() -> Ad {
        Ad {
            name: "origin-1".into(),
            kind: ServerKind::Origin,
            data_url: "http://origin-1:9001".into(),
            web_url: String::new(),
            namespaces: vec![],
            status: AdStatus::Ok,
            instance_id: InstanceId::new(1),
            generation: 1,
            expires_at: 100,
            version: String::new(),
            record: None,
            location: None,
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let signed = sample().sign(&key);
        assert_eq!(signed.verify(&key.verifying_key()), Ok(()));
        let mut tampered = signed.clone();
        tampered.ad.generation += 1;
        assert_eq!(
            tampered.verify(&key.verifying_key()),
            Err(SignError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[4; 32]);
        assert_eq!(
            signed.verify(&other.verifying_key()),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn json_round_trip_keeps_signature_valid() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let signed = sample().sign(&key);
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedAd = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(&key.verifying_key()), Ok(()));
    }

    /// The signed bytes (and so every signature) are part of the wire contract: services
    /// and directors of other versions verify them. Pinned against the bytes this build
    /// signed when the function moved here from the codec (the record ad's instance is
    /// fixed here; `into_ad` draws a random one).
    #[test]
    fn signed_bytes_are_pinned() {
        use crate::ad::Record;
        use crate::fixtures;
        use crate::pelican::token::sha256_hex;
        let ad = fixtures::ad("origin-1", ServerKind::Origin, &["/ns", "/other"], 1_000, 3);
        let mut record = Record {
            signer: "ops".into(),
            active: true,
            start: 5,
            end: 9,
            reason: "why".into(),
        }
        .into_ad(ServerKind::Downtime, "origin-1", 1_000, 2_000);
        record.version = "test".into();
        record.instance_id = ad.instance_id;
        assert_eq!(
            sha256_hex(&canonical_ad_bytes(&ad)),
            "4d817c4b012b784ace8fe49033bae05733d963aca54912a98b8122381cb20d24"
        );
        assert_eq!(
            sha256_hex(&canonical_ad_bytes(&record)),
            "fb0be06fb9f5660977ae903d2d7b93e268d504c3dd1ead35be18a684bff11cc3"
        );
        assert_eq!(
            ad.sign(&fixtures::key_for("origin-1")).signature,
            "5-dRviIAJlz3CmvAEOfgai29VGQyyvXDOuhtJCBxtfray2e1pNGrdhAc_S179nbCI-7IY-30TZK7PDyYGoKABw"
        );
        assert_eq!(
            record.sign(&fixtures::key_for("ops")).signature,
            "0w5w5NLZqKw5aCjK60inhMbZsw7kmZnQA43diOfhC9aCQYMI_18Z6Ze9lk3F1MEYLxnpm5RpGjzy1mYsMvyEBg"
        );
    }

    #[test]
    fn public_key_round_trip() {
        let key = SigningKey::from_bytes(&[9; 32]).verifying_key();
        assert_eq!(decode_public_key(&encode_public_key(&key)), Ok(key));
        assert_eq!(decode_public_key("nope"), Err(SignError::MalformedKey));
    }
}
