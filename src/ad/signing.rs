//! Signing and verifying ads: Ed25519 over the ad's canonical bytes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer};

use super::{Ad, SignedAd};
use crate::codec;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

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
        let signature = key.sign(&codec::canonical_ad_bytes(&self));
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
        key.verify_strict(&codec::canonical_ad_bytes(self), &signature)
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

    #[test]
    fn public_key_round_trip() {
        let key = SigningKey::from_bytes(&[9; 32]).verifying_key();
        assert_eq!(decode_public_key(&encode_public_key(&key)), Ok(key));
        assert_eq!(decode_public_key("nope"), Err(SignError::MalformedKey));
    }
}
