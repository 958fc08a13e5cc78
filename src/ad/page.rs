//! The binary form of a page of ads that directors exchange on catch-up: each ad as its
//! stored envelope (`StoredAd::encode`), prefixed by its length.
//!
//! A catch-up moves every ad a director lacks; as JSON, writing and parsing the pages
//! cost about a tenth of a refill's CPU. A director asks for this form with `Accept`
//! ([`MEDIA_TYPE`]) and reads whichever form the answer's `Content-Type` names, so a
//! peer that only speaks JSON still works. Only the signed parts of each ad are used:
//! the sender's receipt and expiry times are its own, and the receiver checks every ad
//! as if its server had sent it.

use super::{SignedAd, StoredAd};
use crate::codec::CodecError;

/// The media type of a binary page (version 1 of this layout).
pub const MEDIA_TYPE: &str = "application/vnd.skein.ads.v1";

/// What a director sends as `Accept` when it fetches: the binary page, else JSON.
pub const ACCEPT: &str = "application/vnd.skein.ads.v1, application/json;q=0.5";

/// Bytes of each ad's length prefix (u32, little-endian).
const PREFIX: usize = 4;

/// Why a binary page could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// The page ends inside a length prefix or an ad.
    #[error("the page is cut short at byte {0}")]
    Truncated(usize),
    /// More ads than were asked for.
    #[error("the page holds more than the {0} ads asked for")]
    TooMany(usize),
    /// An ad's envelope does not decode.
    #[error("ad {index} of the page: {error}")]
    Ad {
        /// Its place in the page.
        index: usize,
        /// Why.
        error: CodecError,
    },
}

/// Writes `ads` as one binary page.
pub fn encode<'a>(ads: impl IntoIterator<Item = &'a StoredAd>) -> Vec<u8> {
    let mut page = Vec::new();
    for ad in ads {
        let bytes = ad.encode();
        // An envelope is far below 4 GiB (the codec caps payloads at 16 MiB).
        page.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        page.extend_from_slice(&bytes);
    }
    page
}

/// Reads a binary page of at most `most` ads.
pub fn decode(page: &[u8], most: usize) -> Result<Vec<SignedAd>, PageError> {
    let mut ads = Vec::new();
    let mut at = 0;
    while at < page.len() {
        if ads.len() == most {
            return Err(PageError::TooMany(most));
        }
        let prefix = page
            .get(at..at + PREFIX)
            .ok_or(PageError::Truncated(page.len()))?;
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + PREFIX;
        let bytes = start
            .checked_add(len)
            .and_then(|end| page.get(start..end))
            .ok_or(PageError::Truncated(page.len()))?;
        let stored = StoredAd::decode(bytes).map_err(|error| PageError::Ad {
            index: ads.len(),
            error,
        })?;
        ads.push(SignedAd {
            ad: stored.ad,
            signature: stored.signature,
            attestation: stored.attestation,
        });
        at = start + len;
    }
    Ok(ads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::fixtures;

    fn stored(name: &str) -> StoredAd {
        let signed = fixtures::ad(name, ServerKind::Origin, &["/ns"], 1_700_000_000_000, 3)
            .sign(&fixtures::key_for(name));
        StoredAd::new(signed, 1_700_000_000_500, 900_000)
    }

    #[test]
    fn a_page_reads_back_as_the_signed_ads_in_order() {
        let ads: Vec<StoredAd> = (0..5).map(|i| stored(&format!("origin-{i}"))).collect();
        let page = encode(&ads);
        let read = decode(&page, 5).unwrap();
        let signed: Vec<SignedAd> = ads.iter().map(StoredAd::signed).collect();
        assert_eq!(read, signed);
        assert_eq!(decode(&encode([]), 0).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_page_is_an_error_never_a_panic() {
        let ads: Vec<StoredAd> = (0..3).map(|i| stored(&format!("origin-{i}"))).collect();
        let page = encode(&ads);
        assert_eq!(decode(&page, 2), Err(PageError::TooMany(2)));
        for cut in [1, 3, 4, 10, page.len() - 1] {
            assert!(
                matches!(decode(&page[..cut], 3), Err(PageError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut flipped = page.clone();
        flipped[20] ^= 0xff;
        assert!(matches!(
            decode(&flipped, 3),
            Err(PageError::Ad { index: 0, .. })
        ));
        let mut huge = page;
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge, 3), Err(PageError::Truncated(_))));
    }
}
