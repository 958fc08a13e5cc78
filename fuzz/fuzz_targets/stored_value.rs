//! Fuzz target: a value read back from sled (envelope, checksum, bincode payload).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein::codec;
use skein::ad::StoredAd;
use skein::peers::PeerRecord;

fuzz_target!(|data: &[u8]| {
    // Raw bytes as stored (almost always refused by the checksum).
    let _ = codec::decode::<StoredAd>(data);
    // The same bytes as a payload behind a valid envelope header, so the bincode
    // decoder itself is exercised.
    let mut framed = vec![codec::VALUE_FORMAT];
    framed.extend_from_slice(&crc32(data).to_le_bytes());
    framed.extend_from_slice(data);
    if let Ok(ad) = codec::decode::<StoredAd>(&framed) {
        let again: StoredAd = codec::decode(&codec::encode(&ad)).expect("round trip");
        assert_eq!(again, ad);
    }
    let _ = codec::decode::<PeerRecord>(&framed);
    let _ = codec::decode::<u64>(&framed);
});

fn crc32(bytes: &[u8]) -> u32 {
    // The same CRC-32 (IEEE) as the codec, computed bitwise so the target needs no
    // extra dependency.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
