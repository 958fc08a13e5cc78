//! Turning a [`Route`] into Pelican's redirect headers.

use std::cell::Cell;

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

/// The values [`headers`] adds, written once as HTTP/1.1 header lines: copied out as
/// they are, or added to a header map. A value that is not a legal header value is
/// dropped (every part was validated, URLs at ingest and paths escaped, so it is a
/// defence, not a filter).
pub fn written(route: &Route, path: &str, query: Option<&str>) -> Values {
    let encoded = encoded_path(path);
    let query = query.filter(|q| !q.is_empty());
    let terms = route.terms();
    // The namespace itself is read only when it names tokens.
    let ns = terms.names_tokens.then(|| route.namespace());
    let prefix = encoded_path(route.prefix);
    let collections = route.collections_url().filter(|_| terms.caps.listings);
    let shown = route.candidates.iter().take(MAX_LINKS);
    let issuers = ns
        .into_iter()
        .flat_map(|ns| &ns.issuers)
        .filter(|i| !i.issuer_url.is_empty());
    // Pelican's client rejects the whole response if this header lacks an issuer, a
    // non-zero max-scope-depth or a strategy, so it is sent only when complete.
    let generation = ns.and_then(|ns| {
        ns.generation
            .iter()
            .find(|g| !g.issuer.is_empty() && g.max_scope_depth > 0 && !g.strategy.is_empty())
    });
    let first = route.candidates.first().map(|c| c.data_url());
    let capacity = first.map_or(0, |url| {
        url.len() + encoded.len() + query.map_or(0, |q| q.len() + 1) + 12
    }) + shown
        .clone()
        .map(|c| c.data_url().len() + encoded.len() + 40)
        .sum::<usize>()
        + prefix.len()
        + collections.map_or(0, |url| url.len() + 20)
        + 80
        + issuers
            .clone()
            .map(|i| i.issuer_url.len() + 9)
            .sum::<usize>()
        + 27
        + generation.map_or(0, |g| g.issuer.len() + g.strategy.len() + prefix.len() + 96);
    let mut values = Values::with_capacity(capacity);
    if let Some(first) = first {
        values.begin(header::LOCATION.as_str());
        values.push(first);
        values.push(&encoded);
        if let Some(q) = query {
            values.push("?");
            values.push(q);
        }
        values.end();
    }
    let depth = depth(route.prefix);
    values.begin(header::LINK.as_str());
    for (i, c) in shown.enumerate() {
        if i > 0 {
            values.push(", ");
        }
        values.push("<");
        values.push(c.data_url());
        values.push(&encoded);
        values.push(">; rel=\"duplicate\"; pri=");
        values.push_number(i + 1);
        values.push("; depth=");
        values.push_number(depth);
    }
    values.end();
    values.begin("x-pelican-namespace");
    values.push("namespace=");
    values.push(&prefix);
    values.push(if terms.caps.public_reads {
        ", require-token=false"
    } else {
        ", require-token=true"
    });
    if let Some(url) = collections {
        values.push(", collections-url=");
        values.push(url);
    }
    values.end();
    let mut issuers = issuers.peekable();
    if issuers.peek().is_some() {
        values.begin("x-pelican-authorization");
        for (i, issuer) in issuers.enumerate() {
            if i > 0 {
                values.push(", ");
            }
            values.push("issuer=");
            values.push(&issuer.issuer_url);
        }
        values.end();
    }
    if let Some(g) = generation {
        values.begin("x-pelican-token-generation");
        values.push("issuer=");
        values.push(&g.issuer);
        values.push(", max-scope-depth=");
        values.push_number(g.max_scope_depth as usize);
        values.push(", strategy=");
        values.push(&g.strategy);
        values.push(", base-path=");
        values.push(&prefix);
        values.end();
    }
    values
}

/// Most headers [`written`] writes.
const MOST_VALUES: usize = 5;

/// The status line of a redirect written as HTTP/1.1: the front of every [`Values`]
/// buffer, so that the connection's writer can take the buffer as its output as it is.
const STATUS_LINE: &[u8] = b"HTTP/1.1 307 Temporary Redirect\r\n";

/// Room a [`Values`] buffer keeps after the values for what the writer appends (the CORS
/// lines, `Date`): taken as its output, the buffer then does not grow.
const WRITER_ROOM: usize = 512;

/// Largest buffer kept for reuse: one that grew for a large answer is let go.
const MAX_SPARE: usize = 64 * 1024;

thread_local! {
    /// A buffer for the next [`Values`] on this thread: what the last one left (the
    /// output buffer it was exchanged for, emptied), so a redirect allocates none.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Header values written once, as HTTP/1.1 header lines one after another, behind a
/// redirect's status line.
pub struct Values {
    /// The status line, then `name: value` and CRLF for each header written.
    lines: Vec<u8>,
    /// Each header kept: where its line, its value and the value's end are in `lines`.
    spans: [(usize, usize, usize); MOST_VALUES],
    kept: usize,
    /// The header being written: where its line and its value start.
    open: Option<(usize, usize)>,
}

impl Values {
    fn with_capacity(capacity: usize) -> Self {
        let mut lines = SPARE.try_with(Cell::take).unwrap_or_default();
        lines.clear();
        lines.reserve(STATUS_LINE.len() + capacity + WRITER_ROOM);
        lines.extend_from_slice(STATUS_LINE);
        Self {
            lines,
            spans: [(0, 0, 0); MOST_VALUES],
            kept: 0,
            open: None,
        }
    }

    /// A value of the header `name` starts.
    fn begin(&mut self, name: &str) {
        let line = self.lines.len();
        self.lines.extend_from_slice(name.as_bytes());
        self.lines.extend_from_slice(b": ");
        self.open = Some((line, self.lines.len()));
    }

    /// Appends `part` to the value.
    fn push(&mut self, part: &str) {
        self.lines.extend_from_slice(part.as_bytes());
    }

    /// Appends `n` in decimal.
    fn push_number(&mut self, n: usize) {
        push_number(&mut self.lines, n);
    }

    /// The value ends: kept if it is a legal header value, else dropped (line and all).
    fn end(&mut self) {
        let Some((line, value)) = self.open.take() else {
            return;
        };
        if !is_legal_value(&self.lines[value..]) {
            let name = String::from_utf8_lossy(&self.lines[line..value - 2]).into_owned();
            tracing::error!(header = %name, "dropped an illegal header value");
            self.lines.truncate(line);
            return;
        }
        if let Some(span) = self.spans.get_mut(self.kept) {
            *span = (line, value, self.lines.len());
            self.kept += 1;
        }
        self.lines.extend_from_slice(b"\r\n");
    }

    /// The values as HTTP/1.1 header lines (`name: value` and CRLF) appended to `out`
    /// (what the tests compare with the header map).
    #[cfg(test)]
    fn write_http1(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.lines[STATUS_LINE.len()..]);
    }

    /// The redirect's status line and the values' header lines, appended to `out`. Into
    /// an empty `out` (nearly always: a client sends its next request after this answer)
    /// nothing is copied: the buffers change hands, and `out`'s old one is kept for the
    /// next redirect of this thread.
    pub fn into_http1(mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.lines);
        } else {
            out.extend_from_slice(&self.lines);
        }
    }

    /// The values added to `headers`, every one a slice of the one buffer.
    pub fn into_headers(mut self, mut headers: HeaderMap) -> HeaderMap {
        let shared = Bytes::from(std::mem::take(&mut self.lines));
        for &(line, value, end) in &self.spans[..self.kept] {
            // Every value was checked as written; `HeaderValue` checks again.
            let name = HeaderName::from_bytes(&shared[line..value - 2]);
            match (
                name,
                HeaderValue::from_maybe_shared(shared.slice(value..end)),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ => tracing::error!("dropped an illegal header"),
            }
        }
        headers
    }
}

impl Drop for Values {
    fn drop(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        if lines.capacity() <= MAX_SPARE {
            // Gone only while the thread ends: the buffer is then freed.
            let _ = SPARE.try_with(|spare| spare.set(lines));
        }
    }
}

/// What `HeaderValue` accepts: no control byte but tab. A redirect's values are hundreds
/// of bytes, nearly always plain ASCII: they are screened eight bytes at a time with no
/// branch (so the compiler can widen it), and looked at byte by byte only when the
/// screen finds a byte that may be illegal.
fn is_legal_value(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOWS: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let legal = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
    let words = value.chunks_exact(8);
    let rest = words.remainder();
    // Each byte's low seven bits plus one (no carry into the next byte), low seven bits
    // kept: below 0x21 for every control byte and DEL, and also for tab, 0x80-0x9f and
    // 0xff (legal: the byte-by-byte look decides). A borrow in the subtraction starts
    // only at a byte below 0x21, so a high bit is set exactly where one is.
    let suspects = words.fold(0, |suspects, word| {
        let word = <[u8; 8]>::try_from(word).map_or(HIGHS, u64::from_ne_bytes);
        let shifted = ((word & LOWS) + ONES) & LOWS;
        suspects | (shifted.wrapping_sub(ONES * 0x21) & !shifted & HIGHS)
    });
    if suspects != 0 {
        return value.iter().all(legal);
    }
    rest.iter().all(legal)
}

/// Appends `n` in decimal (what `write!` would, without the formatting machinery).
fn push_number(out: &mut Vec<u8>, mut n: usize) {
    // Most numbers written are one digit (a `Link` priority, a depth).
    if n < 10 {
        out.push(b'0' + n as u8);
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
    out.extend_from_slice(&digits[at..]);
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
    fn an_http1_answer_is_the_status_line_then_the_values() {
        let route = fixtures::route_in(
            fixtures::public_namespace("/ns"),
            vec![fixtures::candidate("c1", ServerKind::Cache)],
        );
        let mut lines = Vec::new();
        written(&route, "/ns/x", None).write_http1(&mut lines);
        let expected = [STATUS_LINE, &lines[..]].concat();
        // Twice into an empty output (the second time in a buffer the first gave back),
        // then after an answer already written (pipelined requests): the same bytes.
        for _ in 0..2 {
            let mut out = Vec::new();
            written(&route, "/ns/x", None).into_http1(&mut out);
            assert_eq!(out, expected);
            drop(out);
            let mut stale = b"an earlier answer, already sent".to_vec();
            stale.clear();
            written(&route, "/ns/x", None).into_http1(&mut stale);
            assert_eq!(stale, expected);
        }
        let mut pipelined = b"earlier".to_vec();
        written(&route, "/ns/x", None).into_http1(&mut pipelined);
        assert_eq!(pipelined, [&b"earlier"[..], &expected[..]].concat());
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 1, 6, 9, 10, 42, 100, 65_535, usize::MAX] {
            let mut out = b"x=".to_vec();
            push_number(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("x={n}"));
        }
    }
}
