//! Turning a [`Route`] into Pelican's redirect headers.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::paths::{depth, encoded_path};
use crate::routing::Route;

/// Most candidates listed in `Link` (Pelican's limit).
pub const MAX_LINKS: usize = 6;

/// The headers of a redirect for `path` (clean) along `route`, added to `into`; `query`
/// is appended to `Location` (Pelican passes `authz` and the like through).
///
/// Built on every redirect, so every value is written once, one after another, into one
/// buffer sized up front, which the values then share: one allocation for all of them,
/// no `format!`, no per-candidate strings, and paths are escaped only when they need it.
pub fn headers(into: HeaderMap, route: &Route, path: &str, query: Option<&str>) -> HeaderMap {
    written(route, path, query).into_headers(into)
}

/// The values [`headers`] adds, written once: added to a header map, or written out as
/// HTTP/1.1 header lines.
pub fn written(route: &Route, path: &str, query: Option<&str>) -> Values {
    let encoded = encoded_path(path);
    let query = query.filter(|q| !q.is_empty());
    let ns = route.namespace();
    let prefix = encoded_path(route.prefix);
    let collections = route.collections_url().filter(|_| ns.caps.listings);
    let shown = route.candidates.iter().take(MAX_LINKS);
    let issuers = ns.issuers.iter().filter(|i| !i.issuer_url.is_empty());
    // Pelican's client rejects the whole response if this header lacks an issuer, a
    // non-zero max-scope-depth or a strategy, so it is sent only when complete.
    let generation = ns
        .generation
        .iter()
        .find(|g| !g.issuer.is_empty() && g.max_scope_depth > 0 && !g.strategy.is_empty());
    let first = route.candidates.first().map(|c| c.data_url());
    let capacity = first.map_or(0, |url| {
        url.len() + encoded.len() + query.map_or(0, |q| q.len() + 1)
    }) + shown
        .clone()
        .map(|c| c.data_url().len() + encoded.len() + 40)
        .sum::<usize>()
        + prefix.len()
        + collections.map_or(0, |url| url.len() + 20)
        + 40
        + issuers
            .clone()
            .map(|i| i.issuer_url.len() + 9)
            .sum::<usize>()
        + generation.map_or(0, |g| g.issuer.len() + g.strategy.len() + prefix.len() + 64);
    let mut values = Values::with_capacity(capacity);
    if let Some(first) = first {
        values.text.push_str(first);
        values.text.push_str(&encoded);
        if let Some(q) = query {
            values.text.push('?');
            values.text.push_str(q);
        }
        values.end(header::LOCATION);
    }
    let depth = depth(route.prefix);
    for (i, c) in shown.enumerate() {
        let link = &mut values.text;
        if i > 0 {
            link.push_str(", ");
        }
        link.push('<');
        link.push_str(c.data_url());
        link.push_str(&encoded);
        link.push_str(">; rel=\"duplicate\"; pri=");
        push_number(link, i + 1);
        link.push_str("; depth=");
        push_number(link, depth);
    }
    values.end(header::LINK);
    let namespace = &mut values.text;
    namespace.push_str("namespace=");
    namespace.push_str(&prefix);
    namespace.push_str(if ns.caps.public_reads {
        ", require-token=false"
    } else {
        ", require-token=true"
    });
    if let Some(url) = collections {
        namespace.push_str(", collections-url=");
        namespace.push_str(url);
    }
    values.end(HeaderName::from_static("x-pelican-namespace"));
    for (i, issuer) in issuers.enumerate() {
        if i > 0 {
            values.text.push_str(", ");
        }
        values.text.push_str("issuer=");
        values.text.push_str(&issuer.issuer_url);
    }
    values.end_unless_empty(HeaderName::from_static("x-pelican-authorization"));
    if let Some(g) = generation {
        let value = &mut values.text;
        value.push_str("issuer=");
        value.push_str(&g.issuer);
        value.push_str(", max-scope-depth=");
        push_number(value, g.max_scope_depth as usize);
        value.push_str(", strategy=");
        value.push_str(&g.strategy);
        value.push_str(", base-path=");
        value.push_str(&prefix);
        values.end(HeaderName::from_static("x-pelican-token-generation"));
    }
    values
}

/// Most headers [`headers`] writes.
const MOST_VALUES: usize = 5;

/// Header values written one after another into one buffer: each ends where the next
/// begins.
pub struct Values {
    text: String,
    /// Each header written, with where its value ends in `text`.
    ends: [Option<(HeaderName, usize)>; MOST_VALUES],
    written: usize,
}

impl Values {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            text: String::with_capacity(capacity),
            ends: Default::default(),
            written: 0,
        }
    }

    fn start(&self) -> usize {
        self.written
            .checked_sub(1)
            .and_then(|last| self.ends[last].as_ref())
            .map_or(0, |(_, end)| *end)
    }

    /// The value of `name` is what was written since the last value ended.
    fn end(&mut self, name: HeaderName) {
        if let Some(slot) = self.ends.get_mut(self.written) {
            *slot = Some((name, self.text.len()));
            self.written += 1;
        }
    }

    /// Like [`Values::end`], but an empty value is no header at all.
    fn end_unless_empty(&mut self, name: HeaderName) {
        if self.text.len() > self.start() {
            self.end(name);
        }
    }

    /// The values as HTTP/1.1 header lines (`name: value` and CRLF) appended to `out`,
    /// dropping a value that is not a legal header, as [`Values::into_headers`] does.
    pub fn write_http1(&self, out: &mut Vec<u8>) {
        let mut start = 0;
        for (name, end) in self.ends.iter().flatten() {
            let value = &self.text.as_bytes()[start..*end];
            start = *end;
            if !is_legal_value(value) {
                tracing::error!(header = %name, "dropped an illegal header value");
                continue;
            }
            super::h1::push_header(out, name.as_str().as_bytes(), value);
        }
    }

    /// The values added to `headers`, every one a slice of the one buffer.
    pub fn into_headers(self, mut headers: HeaderMap) -> HeaderMap {
        let shared = Bytes::from(self.text);
        let mut start = 0;
        for (name, end) in self.ends.into_iter().flatten() {
            // Every part was validated (URLs at ingest, paths percent-encoded); a value
            // that still is not a legal header is dropped rather than answered.
            match HeaderValue::from_maybe_shared(shared.slice(start..end)) {
                Ok(value) => {
                    headers.insert(name, value);
                }
                Err(_) => tracing::error!(header = %name, "dropped an illegal header value"),
            }
            start = end;
        }
        headers
    }
}

/// What `HeaderValue` accepts: no control byte but tab. Checked eight bytes at a time
/// (a redirect's values are hundreds of bytes), byte by byte only in a word that may
/// hold one.
fn is_legal_value(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let legal = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
    // Any byte below `n` (for n <= 0x80), exactly: a borrow only starts at such a byte.
    let has_below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGHS != 0;
    let mut words = value.chunks_exact(8);
    for chunk in &mut words {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            return false;
        };
        let word = u64::from_ne_bytes(bytes);
        let suspect = has_below(word, 0x20) || has_below(word ^ (ONES * 0x7f), 1);
        if suspect && !chunk.iter().all(legal) {
            return false;
        }
    }
    words.remainder().iter().all(legal)
}

/// Appends `n` in decimal (what `write!` would, without the formatting machinery).
fn push_number(out: &mut String, mut n: usize) {
    // Most numbers written are one digit (a `Link` priority, a depth).
    if n < 10 {
        out.push(char::from(b'0' + n as u8));
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{ServerKind, TokenGeneration, TokenIssuer};
    use crate::fixtures;

    fn pairs(headers: &HeaderMap) -> Vec<(&str, &str)> {
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn every_value_is_written_in_order() {
        let mut namespace = fixtures::public_namespace("/ns");
        namespace.caps.public_reads = false;
        namespace.issuers = ["https://a.example", "", "https://b.example"]
            .map(|url| TokenIssuer {
                issuer_url: url.into(),
                base_paths: vec![],
            })
            .into();
        namespace.generation = vec![
            // Incomplete: skipped.
            TokenGeneration {
                strategy: String::new(),
                max_scope_depth: 3,
                issuer: "https://a.example".into(),
            },
            TokenGeneration {
                strategy: "OAuth2".into(),
                max_scope_depth: 12,
                issuer: "https://b.example".into(),
            },
        ];
        let candidates = vec![
            fixtures::candidate("c1", ServerKind::Cache),
            fixtures::candidate("o1", ServerKind::Origin),
        ];
        let route = fixtures::route_in(namespace, candidates);
        let full = headers(HeaderMap::new(), &route, "/ns/a b", Some("authz=t"));
        assert_eq!(
            pairs(&full),
            [
                ("location", "http://c1.example:8443/ns/a%20b?authz=t"),
                (
                    "link",
                    "<http://c1.example:8443/ns/a%20b>; rel=\"duplicate\"; pri=1; depth=1, \
                     <http://o1.example:8443/ns/a%20b>; rel=\"duplicate\"; pri=2; depth=1"
                ),
                ("x-pelican-namespace", "namespace=/ns, require-token=true"),
                (
                    "x-pelican-authorization",
                    "issuer=https://a.example, issuer=https://b.example"
                ),
                (
                    "x-pelican-token-generation",
                    "issuer=https://b.example, max-scope-depth=12, strategy=OAuth2, base-path=/ns"
                ),
            ]
        );
        // No issuer, no generation, no candidate: only what is always written.
        let route = fixtures::route_in(fixtures::public_namespace("/ns"), vec![]);
        assert_eq!(
            pairs(&headers(HeaderMap::new(), &route, "/ns/x", None)),
            [
                ("link", ""),
                ("x-pelican-namespace", "namespace=/ns, require-token=false"),
            ]
        );
    }

    #[test]
    fn legal_values_are_what_header_value_accepts() {
        // Every byte, at every place in a word and in the remainder.
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut value = vec![b'a'; 20];
                value[at] = b;
                assert_eq!(
                    is_legal_value(&value),
                    HeaderValue::from_bytes(&value).is_ok(),
                    "byte {b:#04x} at {at}"
                );
            }
        }
        assert!(is_legal_value(b""));
        assert!(is_legal_value("caf\u{e9}\tbar ~".as_bytes()));
    }

    #[test]
    fn http1_lines_are_the_header_map_written_out() {
        let candidates = vec![
            fixtures::candidate("c1", ServerKind::Cache),
            fixtures::candidate("o1", ServerKind::Origin),
        ];
        let route = fixtures::route_in(fixtures::public_namespace("/ns"), candidates);
        for (path, query) in [("/ns/a b", Some("authz=t")), ("/ns/x", None)] {
            let mut lines = Vec::new();
            super::written(&route, path, query).write_http1(&mut lines);
            let mut expected = Vec::new();
            for (name, value) in &headers(HeaderMap::new(), &route, path, query) {
                expected.extend_from_slice(name.as_str().as_bytes());
                expected.extend_from_slice(b": ");
                expected.extend_from_slice(value.as_bytes());
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(
                String::from_utf8(lines).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        // A value that is no legal header is dropped from both.
        let route = fixtures::route_in(
            fixtures::public_namespace("/ns"),
            vec![fixtures::candidate("c1", ServerKind::Cache)],
        );
        let illegal = headers(
            HeaderMap::new(),
            &route,
            "/ns/x",
            Some("a\r\nset-cookie: x"),
        );
        assert!(illegal.get("location").is_none());
        let mut lines = Vec::new();
        super::written(&route, "/ns/x", Some("a\r\nset-cookie: x")).write_http1(&mut lines);
        let lines = String::from_utf8(lines).unwrap();
        assert!(
            !lines.contains("set-cookie") && !lines.contains("location"),
            "{lines}"
        );
        assert!(lines.contains("link: "), "{lines}");
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 1, 6, 9, 10, 42, 100, 65_535, usize::MAX] {
            let mut out = String::from("x=");
            push_number(&mut out, n);
            assert_eq!(out, format!("x={n}"));
        }
    }
}
