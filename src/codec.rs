//! The one place bincode is used: stored-value envelopes and the canonical bytes of a value.
//!
//! The codec knows no domain type: what an ad's signature covers is `crate::ad`'s business
//! (`crate::ad::canonical_ad_bytes`), built on [`canonical_bytes`].
//!
//! A stored value is `[format version: u8][crc32 of payload: u32 LE][bincode payload]`.
//! bincode is pinned at 1.3.3 (the project has ended; see `migrations/README.md`).

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The value format this build writes (for every value but attested ads).
pub const VALUE_FORMAT: u8 = 1;

/// The format of a stored ad that carries a Pelican attestation: the same envelope, a
/// payload with one more field (see `migrations/README.md`). Skein ads stay format 1,
/// so a build that predates Pelican ads still reads them (and quarantines only these).
pub const ATTESTED_AD_FORMAT: u8 = 2;

/// The format of a stored ad that carries a location: the whole `StoredAd` (the ad with
/// its last field, `location`, and the attestation if any). Ads without a location keep
/// formats 1 and 2, byte for byte (see `migrations/README.md`).
pub const LOCATED_AD_FORMAT: u8 = 3;

/// Formats this build reads.
const KNOWN_FORMATS: &[u8] = &[VALUE_FORMAT, ATTESTED_AD_FORMAT, LOCATED_AD_FORMAT];

const HEADER_LEN: usize = 5;
/// No stored value or signed ad is anywhere near this; a corrupt length prefix is.
const MAX_PAYLOAD: u64 = 16 << 20;

/// bincode settings: fixed-width integers, no trailing bytes, bounded allocation.
fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .with_limit(MAX_PAYLOAD)
}

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Shorter than the envelope header.
    #[error("value is truncated ({0} bytes)")]
    Truncated(usize),
    /// A format version this build does not read.
    #[error("unknown value format {0}")]
    UnknownFormat(u8),
    /// The payload does not match its checksum.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC32 in the envelope.
        stored: u32,
        /// CRC32 of the payload read.
        computed: u32,
    },
    /// The payload is not a valid encoding of the expected type.
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// Encodes `value` in the current envelope format.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_as(VALUE_FORMAT, value)
}

/// Encodes `value` in an envelope marked `format` (the caller picks the payload layout).
pub fn encode_as<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    // Serializing plain data structs into a Vec cannot fail.
    let payload = options().serialize(value).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(format);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes an envelope written by [`encode`], checking format and checksum.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match envelope_format(bytes)? {
        VALUE_FORMAT => decode_payload(bytes),
        other => Err(CodecError::UnknownFormat(other)),
    }
}

/// The format of a sound envelope (known format, checksum matching).
pub fn envelope_format(bytes: &[u8]) -> Result<u8, CodecError> {
    checked_payload(bytes).map(|_| bytes[0])
}

/// Decodes the payload of a sound envelope of any known format as `T`.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let payload = checked_payload(bytes)?;
    options()
        .deserialize(payload)
        .map_err(|e| CodecError::Payload(e.to_string()))
}

/// The payload of an envelope, after checking format and checksum.
fn checked_payload(bytes: &[u8]) -> Result<&[u8], CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if !KNOWN_FORMATS.contains(&bytes[0]) {
        return Err(CodecError::UnknownFormat(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Canonical bytes of any value: bincode with fixed-width integers, fields in declaration
/// order, length-prefixed strings. What ad signatures and attestations cover.
pub fn canonical_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    options().serialize(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(value in proptest::collection::vec(any::<(u64, String)>(), 0..8)) {
            let bytes = encode(&value);
            prop_assert_eq!(decode::<Vec<(u64, String)>>(&bytes).unwrap(), value);
        }

        #[test]
        fn any_single_bit_flip_is_detected(value in any::<(u64, String)>(), bit in any::<usize>()) {
            let mut bytes = encode(&value);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode::<(u64, String)>(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<(u64, String)>(&bytes);
        }
    }

    #[test]
    fn truncated_and_unknown_format() {
        assert_eq!(decode::<u64>(&[1, 2]), Err(CodecError::Truncated(2)));
        assert_eq!(
            decode::<u64>(&[9, 0, 0, 0, 0]),
            Err(CodecError::UnknownFormat(9))
        );
    }
}
