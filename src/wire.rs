//! JSON shapes of the HTTP API, shared by the server handlers and the typed client.

use serde::{Deserialize, Serialize};

use crate::ad::{AdKey, AdVersion, Provenance, SignedAd};
use crate::clock::UnixMillis;

/// Pelican's federation discovery document (`/.well-known/pelican-configuration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationDiscovery {
    /// Where this document lives.
    #[serde(default)]
    pub discovery_endpoint: String,
    /// A director clients should ask.
    #[serde(default)]
    pub director_endpoint: String,
    /// Every director known (for services advertising to all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub director_advertise_endpoints: Vec<String>,
    /// Namespace registry (empty: Skein uses a trust file).
    #[serde(default)]
    pub namespace_registration_endpoint: String,
    /// Federation JWKS (empty where not used).
    #[serde(default)]
    pub jwks_uri: String,
    /// Connection broker (empty where not used).
    #[serde(default)]
    pub broker_endpoint: String,
}

/// One entry of `GET /api/v1.0/director/directors`: Pelican's DirectorAd plus Skein's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorInfo {
    /// Director name (empty until its ad is known).
    #[serde(default)]
    pub name: String,
    /// Instance start, Unix ms.
    #[serde(rename = "startTime", default)]
    pub start_time: UnixMillis,
    /// Instance UUID.
    #[serde(rename = "instanceID", default)]
    pub instance_id: String,
    /// Ad generation.
    #[serde(rename = "generationID", default)]
    pub generation_id: u64,
    /// Software version.
    #[serde(default)]
    pub version: String,
    /// Ad expiry, Unix ms.
    #[serde(default)]
    pub expiry: UnixMillis,
    /// The director's URL.
    pub advertise_url: String,
    /// When it last answered this director (Unix ms, 0: never).
    #[serde(default)]
    pub last_seen: UnixMillis,
    /// Whether the last contact succeeded.
    #[serde(default)]
    pub reachable: bool,
    /// True for the director answering.
    #[serde(rename = "self", default)]
    pub is_self: bool,
}

/// Answer to an ad registration or forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// `accepted`, `duplicate` or `stale`.
    pub status: String,
}

/// One ad as listed by `GET /api/v1.0/director/ads`: the signed ad plus local facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdListing {
    /// The ad and its signature, as the server sent it.
    #[serde(flatten)]
    pub signed: SignedAd,
    /// When this director accepted it.
    pub received_at: UnixMillis,
    /// When this director drops it.
    pub effective_expiry: UnixMillis,
    /// `skein` (signed by its server) or `pelican` (a Pelican server's token, attested).
    #[serde(default = "skein_provenance")]
    pub provenance: Provenance,
}

fn skein_provenance() -> Provenance {
    Provenance::Skein
}

/// One entry of a digest: which version of which ad a director holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The ad's key.
    pub key: AdKey,
    /// The version held.
    pub version: AdVersion,
}

/// `GET /api/v1.0/director/digest?buckets=256`: one hash per bucket of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSummary {
    /// The wrapping sum of the entry hashes in each bucket.
    pub buckets: Vec<u64>,
}

/// What a peer answers to a summary request: a summary, or (a director from before
/// bucketed digests, which ignores the query) its full list of entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DigestAnswer {
    /// Bucket hashes.
    Summary(DigestSummary),
    /// Every entry.
    Full(Vec<DigestEntry>),
}

/// Answer to `POST /api/v1.0/director/forward/offer` (whose body is a list of
/// [`DigestEntry`]): the indexes of the offered entries newer than what the peer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferAnswer {
    /// Indexes into the offer, ascending.
    pub wanted: Vec<usize>,
}

/// Body of `POST /api/v1.0/director/ads/fetch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Keys wanted.
    pub keys: Vec<AdKey>,
}

/// Error body of every 4xx/5xx.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Short machine-readable code.
    pub error: String,
    /// A sentence for humans.
    pub detail: String,
}

/// Body of `POST /api/v1.0/director/forward`: one ad, or a batch.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ForwardBody {
    /// A batch of ads (answered with one [`ForwardResult`] each, in order).
    Batch(Vec<SignedAd>),
    /// A single ad (answered with a [`RegisterResponse`]).
    One(Box<SignedAd>),
}

impl ForwardBody {
    /// Reads a forward body: a JSON array of ads (a batch) or one ad object. Each ad is
    /// read by [`SignedAd::from_json`]; serde's `untagged` would first copy the whole
    /// body into an owned tree, and each ad's `flatten` would copy it again.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        use serde::de::Error as _;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => {
                let ads: Vec<&serde_json::value::RawValue> = serde_json::from_slice(bytes)?;
                ads.iter()
                    .enumerate()
                    .map(|(i, ad)| {
                        SignedAd::from_json(ad.get().as_bytes()).map_err(|error| {
                            serde_json::Error::custom(format!("ad {i} of the batch: {error}"))
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map(ForwardBody::Batch)
            }
            _ => SignedAd::from_json(bytes).map(|ad| ForwardBody::One(Box::new(ad))),
        }
    }
}

/// The outcome for one ad of a forwarded batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardResult {
    /// `accepted`, `duplicate`, `stale` or `refused`.
    pub status: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::fixtures;

    fn signed(name: &str) -> SignedAd {
        fixtures::ad(name, ServerKind::Origin, &["/ns"], 1_000, 1).sign(&fixtures::key_for(name))
    }

    #[test]
    fn a_forward_body_reads_back_what_was_written() {
        let batch = ForwardBody::Batch(vec![signed("a"), signed("b")]);
        let bytes = serde_json::to_vec(&batch).unwrap();
        match ForwardBody::from_json(&bytes).unwrap() {
            ForwardBody::Batch(ads) => assert_eq!(ads, vec![signed("a"), signed("b")]),
            other => panic!("read {other:?}"),
        }
        let mut one = b" \n".to_vec();
        one.extend(serde_json::to_vec(&ForwardBody::One(Box::new(signed("a")))).unwrap());
        match ForwardBody::from_json(&one).unwrap() {
            ForwardBody::One(ad) => assert_eq!(*ad, signed("a")),
            other => panic!("read {other:?}"),
        }
        match ForwardBody::from_json(b" [ ] ").unwrap() {
            ForwardBody::Batch(ads) => assert!(ads.is_empty()),
            other => panic!("read {other:?}"),
        }
    }

    #[test]
    fn a_bad_ad_in_a_forward_batch_is_named() {
        let mut ads = serde_json::to_value(vec![signed("a"), signed("b")]).unwrap();
        ads[1].as_object_mut().unwrap().remove("signature");
        let error = ForwardBody::from_json(&serde_json::to_vec(&ads).unwrap()).unwrap_err();
        assert!(error.to_string().contains("ad 1 of the batch"), "{error}");
        for bad in [
            &b""[..],
            b"null",
            b"3",
            b"[3]",
            b"[{}]",
            b"{",
            b"[{\"a\":1}",
        ] {
            assert!(ForwardBody::from_json(bad).is_err(), "{bad:?}");
        }
    }
}
