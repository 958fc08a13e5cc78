//! Fuzz target: request paths, from raw URL text to a clean path and back into headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein::paths::{
    MAX_PATH_LEN, encode_path, is_under_prefix, is_valid_namespace, parse_object_path,
    prefixes_longest_first,
};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(clean) = parse_object_path(raw) else {
        return;
    };
    assert!(clean.starts_with('/'));
    assert!(clean.len() <= MAX_PATH_LEN);
    assert!(!clean.chars().any(char::is_control));
    assert!(!clean.split('/').any(|s| s == "." || s == ".."));
    assert!(!clean.contains("//"));
    // Parsing is idempotent on a clean path's encoding.
    let encoded = encode_path(&clean);
    assert_eq!(parse_object_path(&encoded).as_deref(), Ok(clean.as_str()));
    // The encoding is a legal header value with nothing that splits a header or a Link.
    assert!(encoded.bytes().all(|b| (0x21..0x7f).contains(&b)));
    assert!(!encoded.contains(['<', '>', ',', ';', '"']));
    let location = format!("http://cache.example:8443{encoded}");
    assert!(http::HeaderValue::from_str(&location).is_ok());
    let link = format!("<{location}>; rel=\"duplicate\"; pri=1; depth=1");
    assert_eq!(skein::client::parse_link_urls(&link), vec![location]);
    for prefix in prefixes_longest_first(&clean) {
        assert!(is_under_prefix(&clean, prefix));
        assert!(is_valid_namespace(prefix));
    }
});
