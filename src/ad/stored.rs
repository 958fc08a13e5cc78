//! An ad as a director keeps it ([`StoredAd`]) and its stored bytes (a [`codec`] envelope).
//!
//! The type belongs to the domain: the ledger, routing and replication hold it; the store
//! only writes the bytes [`StoredAd::encode`] makes and reads them back.

use serde::{Deserialize, Serialize};

use super::{Ad, Provenance, SignedAd};
use crate::clock::UnixMillis;
use crate::codec::{self, CodecError};
use crate::pelican::Attestation;

/// A [`SignedAd`] borrowed from a [`StoredAd`], for serializing only (same JSON).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SignedAdRef<'a> {
    #[serde(flatten)]
    ad: &'a Ad,
    signature: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation: Option<&'a Attestation>,
}

/// An ad as a director keeps it.
///
/// Stored as format 1 (`{ad, signature, received_at, expires_at}`) when it is a Skein
/// ad, format 2 (the same, then `attestation`) when it is a Pelican ad, both with the ad
/// laid out without `location`; an ad with a location is format 3 (the whole struct).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAd {
    /// The ad as signed by its server (or attested by a director).
    pub ad: Ad,
    /// Its signature (base64url).
    pub signature: String,
    /// When this director first accepted this version.
    pub received_at: UnixMillis,
    /// When this director drops it: `min(ad.expires_at, received_at + max_lifetime)`.
    /// Never later than the signed expiry, so copies cannot extend an ad's life.
    pub expires_at: UnixMillis,
    /// Pelican ads: what the attesting director verified.
    pub attestation: Option<Box<Attestation>>,
}

/// `Ad` as formats 1 and 2 lay it out: every field but `location` (which came later),
/// in declaration order (bincode writes a tuple and a struct alike).
type AdV2 = (
    String,
    super::ServerKind,
    String,
    String,
    Vec<super::NamespaceAd>,
    super::AdStatus,
    super::InstanceId,
    u64,
    UnixMillis,
    String,
    Option<super::Record>,
);

/// `ad` in the [`AdV2`] layout (borrowed): the bytes formats 1 and 2 always held.
fn ad_v2(ad: &Ad) -> impl Serialize + '_ {
    (
        &ad.name,
        ad.kind,
        &ad.data_url,
        &ad.web_url,
        &ad.namespaces,
        ad.status,
        ad.instance_id,
        ad.generation,
        ad.expires_at,
        &ad.version,
        &ad.record,
    )
}

fn from_v2(v2: AdV2) -> Ad {
    Ad {
        name: v2.0,
        kind: v2.1,
        data_url: v2.2,
        web_url: v2.3,
        namespaces: v2.4,
        status: v2.5,
        instance_id: v2.6,
        generation: v2.7,
        expires_at: v2.8,
        version: v2.9,
        record: v2.10,
        location: None,
    }
}

/// Format 1: `(ad, signature, received_at, expires_at)`; format 2 appends `attestation`.
type StoredV1 = (AdV2, String, UnixMillis, UnixMillis);
type StoredV2 = (
    AdV2,
    String,
    UnixMillis,
    UnixMillis,
    Option<Box<Attestation>>,
);

impl StoredAd {
    /// Wraps a verified signed ad received at `received_at`, clamping its lifetime.
    pub fn new(signed: SignedAd, received_at: UnixMillis, max_lifetime_ms: u64) -> Self {
        let expires_at = signed
            .ad
            .expires_at
            .min(received_at.saturating_add(max_lifetime_ms));
        Self {
            ad: signed.ad,
            signature: signed.signature,
            received_at,
            expires_at,
            attestation: signed.attestation,
        }
    }

    /// The signed form, borrowed: serializes exactly as [`StoredAd::signed`] does, without
    /// copying the ad (a catch-up page serializes a thousand at a time).
    pub fn signed_ref(&self) -> SignedAdRef<'_> {
        SignedAdRef {
            ad: &self.ad,
            signature: &self.signature,
            attestation: self.attestation.as_deref(),
        }
    }

    /// The signed form, as sent to peers.
    pub fn signed(&self) -> SignedAd {
        SignedAd {
            ad: self.ad.clone(),
            signature: self.signature.clone(),
            attestation: self.attestation.clone(),
        }
    }

    /// Skein or Pelican.
    pub fn provenance(&self) -> Provenance {
        Provenance::of(self.attestation.as_deref())
    }

    /// The stored bytes: an ad without a location in the format it always had (1 for
    /// Skein ads, 2 for attested ones: a build from before locations reads it), one with
    /// a location in format 3 (the whole `StoredAd`).
    pub fn encode(&self) -> Vec<u8> {
        let (ad, signature) = (ad_v2(&self.ad), &self.signature);
        let (received_at, expires_at) = (self.received_at, self.expires_at);
        match (&self.ad.location, &self.attestation) {
            (Some(_), _) => codec::encode_as(codec::LOCATED_AD_FORMAT, self),
            (None, None) => codec::encode(&(ad, signature, received_at, expires_at)),
            (None, Some(attestation)) => codec::encode_as(
                codec::ATTESTED_AD_FORMAT,
                &(ad, signature, received_at, expires_at, Some(attestation)),
            ),
        }
    }

    /// Reads bytes written by [`StoredAd::encode`] (any of the three formats).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (ad, signature, received_at, expires_at, attestation) =
            match codec::envelope_format(bytes)? {
                codec::LOCATED_AD_FORMAT => return codec::decode_payload(bytes),
                codec::ATTESTED_AD_FORMAT => codec::decode_payload::<StoredV2>(bytes)?,
                _ => {
                    let (ad, signature, received_at, expires_at) =
                        codec::decode::<StoredV1>(bytes)?;
                    (ad, signature, received_at, expires_at, None)
                }
            };
        Ok(Self {
            ad: from_v2(ad),
            signature,
            received_at,
            expires_at,
            attestation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::fixtures;
    use crate::pelican::token::sha256_hex;
    use crate::pelican::{Attestation, KeySource, attest::attest};

    /// Stored bytes outlive builds (a store is reopened by the next version). Pinned
    /// against the bytes this build wrote when the type moved here from the store.
    #[test]
    fn stored_bytes_are_pinned_and_round_trip() {
        let ad = fixtures::ad("origin-1", ServerKind::Origin, &["/ns", "/other"], 1_000, 3);
        let skein = StoredAd::new(
            ad.clone().sign(&fixtures::key_for("origin-1")),
            2_000,
            900_000,
        );
        let attestation = Attestation {
            director: "director-a".into(),
            verified_at: 1_500,
            key_source: KeySource::Registry,
            registry_prefix: "/origins/origin-1".into(),
            issuer: "https://origin-1".into(),
            kid: "kid".into(),
            alg: "ES256".into(),
            token_expires_at: 61_000,
            token_sha256: "ab".repeat(32),
            pelican_ad: r#"{"name":"x"}"#.into(),
        };
        let signed = attest(ad, attestation, &fixtures::key_for("director-a"));
        assert_eq!(
            signed.signature,
            "Bqu5MM-FS2kFDekxH23NZ0gmRa_dw0gl_rpRbGZtj0VFPzYJuwVNXt5Uj0zvYRHZzLcmL69zUrv5La8vMXUtAg"
        );
        let pelican = StoredAd::new(signed, 2_000, 900_000);
        assert_eq!(
            sha256_hex(&skein.encode()),
            "120ec837848a7d32ee4e9f39960381790d738223152dc701be8fc0e7d2f6cc43"
        );
        assert_eq!(
            sha256_hex(&pelican.encode()),
            "21c3f32335264535898474752cd66e5c7de8e0b3c7e93e66f15e86f1d761f5d8"
        );
        // The borrowed signed form is the owned one on the wire, attested or not.
        for stored in [&skein, &pelican] {
            assert_eq!(
                serde_json::to_value(stored.signed_ref()).unwrap(),
                serde_json::to_value(stored.signed()).unwrap()
            );
        }
        assert_eq!(StoredAd::decode(&skein.encode()), Ok(skein.clone()));
        assert_eq!(StoredAd::decode(&pelican.encode()), Ok(pelican.clone()));
        // The two-pass JSON reader reads what `Deserialize` reads, attested or not.
        for stored in [&skein, &pelican] {
            let json = serde_json::to_vec(&stored.signed()).unwrap();
            let read = SignedAd::from_json(&json).unwrap();
            assert_eq!(read, serde_json::from_slice::<SignedAd>(&json).unwrap());
            assert_eq!(read, stored.signed());
        }
    }

    #[test]
    fn the_two_pass_json_reader_refuses_what_deserialize_refuses() {
        let signed = fixtures::ad("origin-1", ServerKind::Origin, &["/ns"], 1_000, 3)
            .sign(&fixtures::key_for("origin-1"));
        let mut object = serde_json::to_value(&signed).unwrap();
        let fields = object.as_object_mut().unwrap();
        fields.insert("extra".into(), serde_json::json!({"ignored": [1, 2]}));
        let with_extra = serde_json::to_vec(&object).unwrap();
        assert_eq!(SignedAd::from_json(&with_extra).unwrap(), signed);
        for field in ["signature", "name", "generation"] {
            let mut without = object.clone();
            without.as_object_mut().unwrap().remove(field);
            let bytes = serde_json::to_vec(&without).unwrap();
            assert!(serde_json::from_slice::<SignedAd>(&bytes).is_err());
            assert!(SignedAd::from_json(&bytes).is_err(), "{field} missing");
        }
        for bad in [&b"[]"[..], b"{", b"", b"{\"signature\": 3}"] {
            assert!(SignedAd::from_json(bad).is_err());
        }
    }
}
