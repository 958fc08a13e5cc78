//! Fuzz target: an ad body as it arrives on the wire (JSON), then trust verification.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skein::ad::{ServerKind, SignedAd};
use skein::fixtures;
use skein::trust::Trust;
use skein::wire::ForwardBody;

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        fixtures::trust(&[
            ("origin-1", ServerKind::Origin, &["/test", "/ligo"]),
            ("cache-1", ServerKind::Cache, &["/"]),
            ("director-a", ServerKind::Director, &[]),
        ])
    })
}

fn check(signed: &SignedAd) {
    // Verification must answer (accept or refuse), never panic.
    let _ = trust().check(signed);
    // Whatever decoded re-encodes and decodes to the same ad.
    if let Ok(text) = serde_json::to_vec(signed) {
        let again: SignedAd = serde_json::from_slice(&text).expect("re-encoded ad decodes");
        assert_eq!(&again, signed);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = serde_json::from_slice::<SignedAd>(data) {
        check(&signed);
    }
    if let Ok(ForwardBody::Batch(ads)) = serde_json::from_slice::<ForwardBody>(data) {
        ads.iter().for_each(check);
    }
});
