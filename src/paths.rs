//! Object paths: parsing hostile input into a clean path, prefix matching, re-encoding.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The longest object path accepted (bytes, decoded).
pub const MAX_PATH_LEN: usize = 4096;

/// Characters escaped when a path goes back into a URL or header: everything but
/// unreserved characters, `/` and a few sub-delimiters that are safe in a path.
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b';')
    .add(b',');

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/`.
    #[error("path must start with /")]
    NotAbsolute,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// Percent-encoding that is not UTF-8.
    #[error("path is not valid UTF-8 after percent-decoding")]
    BadEncoding,
    /// NUL, CR, LF or another control character.
    #[error("path contains a control character")]
    ControlCharacter,
    /// A `.` or `..` segment.
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
}

/// Decodes and checks a request path; returns it with duplicate slashes folded.
pub fn parse_object_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH_LEN * 3 {
        return Err(PathError::TooLong);
    }
    // Without a `%` there is nothing to decode, and `raw` is already UTF-8.
    if !raw.as_bytes().contains(&b'%') {
        return clean_decoded(raw);
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::BadEncoding)?;
    clean_decoded(&decoded)
}

/// Checks an already-decoded path; returns it with duplicate slashes folded.
fn clean_decoded(decoded: &str) -> Result<String, PathError> {
    if is_clean_ascii(decoded) {
        return Ok(decoded.to_owned());
    }
    clean_by_segments(decoded)
}

/// [`clean_decoded`] for any path: segment by segment.
fn clean_by_segments(decoded: &str) -> Result<String, PathError> {
    if !decoded.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if decoded.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let mut clean = String::with_capacity(decoded.len());
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        clean.push('/');
        clean.push_str(segment);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    Ok(clean)
}

/// Checks a namespace prefix as advertised: a clean path, already decoded (as object
/// paths are once parsed), so a `%` in it is a literal `%`.
pub fn is_valid_namespace(prefix: &str) -> bool {
    clean_decoded(prefix).is_ok_and(|clean| clean == prefix)
}

/// Percent-encodes a clean path for a `Location` or `Link` header.
pub fn encode_path(path: &str) -> String {
    encoded_path(path).into_owned()
}

/// [`encode_path`] without a copy when nothing needs escaping (the usual object path).
pub fn encoded_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.bytes().all(|b| PLAIN[usize::from(b)]) {
        return std::borrow::Cow::Borrowed(path);
    }
    utf8_percent_encode(path, PATH_ESCAPE).into()
}

/// [`is_plain`] of every byte, looked up (a check of every byte of every redirect path).
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_plain(b as u8);
        b += 1;
    }
    table
};

/// True if `b` stands for itself in an encoded path: printable ASCII that
/// [`PATH_ESCAPE`] keeps (a test checks every byte against it).
const fn is_plain(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'#'
                | b'%'
                | b'<'
                | b'>'
                | b'?'
                | b'['
                | b'\\'
                | b']'
                | b'^'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b';'
                | b','
        )
}

/// True if `path` is already what [`clean_decoded`] makes of it, and plain ASCII (the
/// usual object path): absolute, no control character, no empty, `.` or `..` segment,
/// no trailing slash (bar `/` itself). One pass over the bytes, where cleaning splits
/// and copies segment by segment.
fn is_clean_ascii(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.len() > MAX_PATH_LEN {
        return false;
    }
    if bytes.len() == 1 {
        return true;
    }
    // Where the current segment began (just after its slash).
    let mut segment = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if !b.is_ascii() || b.is_ascii_control() {
            return false;
        }
        if b == b'/' {
            if !is_kept_segment(&bytes[segment..i]) {
                return false;
            }
            segment = i + 1;
        }
    }
    is_kept_segment(&bytes[segment..])
}

/// A segment cleaning keeps as it is: not empty, `.` or `..`.
fn is_kept_segment(segment: &[u8]) -> bool {
    !matches!(segment, b"" | b"." | b"..")
}

/// True if `path` is `prefix` or lies below it on a component boundary.
pub fn is_under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The component prefixes of a clean path, longest first: `/a/b/c`, `/a/b`, `/a`.
pub fn prefixes_longest_first(path: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(path.len());
    std::iter::from_fn(move || {
        let current = end?;
        if current == 0 {
            end = None;
            return None;
        }
        let prefix = &path[..current];
        end = prefix.bytes().rposition(|b| b == b'/');
        Some(prefix)
    })
    .filter(|p| !p.is_empty() && *p != "/")
}

/// Number of path components in a namespace prefix (`/a/b` has 2).
pub fn depth(prefix: &str) -> usize {
    // Each component starts where a byte other than `/` follows a `/` (or the start).
    let mut after_slash = true;
    let mut count = 0;
    for b in prefix.bytes() {
        if b == b'/' {
            after_slash = true;
        } else if after_slash {
            after_slash = false;
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(parse_object_path("/a/../etc"), Err(PathError::DotSegment));
        assert_eq!(parse_object_path("/a/%2e%2e/b"), Err(PathError::DotSegment));
        assert_eq!(
            parse_object_path("/a%00b"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            parse_object_path("/a%0d%0aSet-Cookie:x"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(parse_object_path("/a%ff"), Err(PathError::BadEncoding));
        assert_eq!(parse_object_path("a"), Err(PathError::NotAbsolute));
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(parse_object_path(&long), Err(PathError::TooLong));
    }

    #[test]
    fn clean_paths_pass_and_fold_slashes() {
        assert_eq!(
            parse_object_path("/ligo//frames/x.gwf").unwrap(),
            "/ligo/frames/x.gwf"
        );
        assert_eq!(parse_object_path("/a%20b").unwrap(), "/a b");
        assert_eq!(encode_path("/a b/c?d"), "/a%20b/c%3Fd");
    }

    #[test]
    fn prefix_matching_respects_components() {
        assert!(is_under_prefix("/ligo/frames/x", "/ligo/frames"));
        assert!(is_under_prefix("/ligo/frames", "/ligo/frames"));
        assert!(!is_under_prefix("/ligo/framesx", "/ligo/frames"));
        assert!(is_under_prefix("/anything", "/"));
        let all: Vec<_> = prefixes_longest_first("/a/b/c").collect();
        assert_eq!(all, vec!["/a/b/c", "/a/b", "/a"]);
        assert_eq!(depth("/a/b"), 2);
        for (path, components) in [("/", 0), ("", 0), ("a", 1), ("//a//bc/", 2), ("/a/b/c", 3)] {
            assert_eq!(depth(path), components, "{path:?}");
        }
    }

    #[test]
    fn namespaces_are_decoded_paths() {
        // Found by fuzzing (object_path): a request for `/a%2541` parses to `/a%41`, but
        // the namespace `/a%41` was refused because it was percent-decoded a second time.
        let clean = parse_object_path("/a%2541/x").unwrap();
        assert_eq!(clean, "/a%41/x");
        assert!(is_valid_namespace("/a%41"));
        assert!(prefixes_longest_first(&clean).all(is_valid_namespace));
        assert!(!is_valid_namespace("/a/../b"));
        assert!(!is_valid_namespace("/a//b"));
        assert!(!is_valid_namespace("/a/"));
        assert!(!is_valid_namespace("/a\nb"));
        assert!(!is_valid_namespace("a"));
    }

    #[test]
    fn plain_bytes_are_the_ones_the_escape_set_keeps() {
        for b in 0..=u8::MAX {
            let one = [b];
            let alone = std::str::from_utf8(&one).unwrap_or("\u{80}");
            let kept = utf8_percent_encode(alone, PATH_ESCAPE).to_string() == alone;
            assert_eq!(is_plain(b), b.is_ascii() && kept, "byte {b:#04x}");
        }
    }

    #[test]
    fn the_fast_paths_agree_on_edge_cases() {
        for path in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//b",
            "/.",
            "/..",
            "/a/.",
            "/a/../b",
            "/.a",
            "/a..",
            "/...",
            "a",
            "",
            "/a\x7fb",
            "/a\tb",
            "/é",
            "/a\u{85}b",
        ] {
            assert_eq!(clean_decoded(path), clean_by_segments(path), "{path:?}");
            assert_eq!(
                encoded_path(path),
                std::borrow::Cow::<str>::from(utf8_percent_encode(path, PATH_ESCAPE)),
                "{path:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn the_fast_paths_agree_with_the_slow_ones(raw in "(/|\\.|a|%2[eEfF]|%[0-9a-fA-F]{0,2}|[\\x00-\\x1f\\x7f\\u{85}]|\\PC){0,12}") {
            prop_assert_eq!(clean_decoded(&raw), clean_by_segments(&raw));
            let slow: std::borrow::Cow<str> = utf8_percent_encode(&raw, PATH_ESCAPE).into();
            prop_assert_eq!(encoded_path(&raw), slow);
            let decoded = percent_decode_str(&raw).decode_utf8();
            let expected = match decoded {
                Ok(decoded) => clean_by_segments(&decoded),
                Err(_) => Err(PathError::BadEncoding),
            };
            if raw.len() <= MAX_PATH_LEN * 3 {
                prop_assert_eq!(parse_object_path(&raw), expected);
            }
        }

        #[test]
        fn parsed_paths_are_header_safe(raw in "\\PC*") {
            if let Ok(clean) = parse_object_path(&format!("/{raw}")) {
                let encoded = encode_path(&clean);
                prop_assert!(encoded.bytes().all(|b| (0x21..0x7f).contains(&b)));
                prop_assert!(!clean.contains("/../"));
            }
        }
    }
}
