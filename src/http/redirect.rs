//! Turning a [`Route`] into Pelican's redirect headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::paths::{depth, encoded_path};
use crate::routing::Route;

/// Most candidates listed in `Link` (Pelican's limit).
pub const MAX_LINKS: usize = 6;

/// The headers of a redirect for `path` (clean) along `route`; `query` is appended to
/// `Location` (Pelican passes `authz` and the like through).
///
/// Built on every redirect, so each value is written once into a buffer sized up front:
/// no `format!`, no per-candidate strings, and paths are escaped only when they need it.
pub fn headers(route: &Route, path: &str, query: Option<&str>) -> HeaderMap {
    // Room for these headers and the ones added on the way out (CORS, `Server`), so the
    // map never grows.
    let mut headers = HeaderMap::with_capacity(16);
    let encoded = encoded_path(path);
    let query = query.filter(|q| !q.is_empty());
    if let Some(first) = route.candidates.first() {
        let first = first.data_url();
        let mut location =
            String::with_capacity(first.len() + encoded.len() + query.map_or(0, |q| q.len() + 1));
        location.push_str(first);
        location.push_str(&encoded);
        if let Some(q) = query {
            location.push('?');
            location.push_str(q);
        }
        insert(&mut headers, header::LOCATION, location);
    }
    let depth = depth(&route.prefix);
    let shown = route.candidates.iter().take(MAX_LINKS);
    let mut link = String::with_capacity(
        shown
            .clone()
            .map(|c| c.data_url().len() + encoded.len() + 40)
            .sum(),
    );
    for (i, c) in shown.enumerate() {
        if i > 0 {
            link.push_str(", ");
        }
        link.push('<');
        link.push_str(c.data_url());
        link.push_str(&encoded);
        link.push_str(">; rel=\"duplicate\"; pri=");
        push_number(&mut link, i + 1);
        link.push_str("; depth=");
        push_number(&mut link, depth);
    }
    insert(&mut headers, header::LINK, link);
    let ns = route.namespace();
    let prefix = encoded_path(&route.prefix);
    let collections = route.collections_url().filter(|_| ns.caps.listings);
    let mut namespace =
        String::with_capacity(prefix.len() + collections.map_or(0, |url| url.len() + 20) + 40);
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
    insert(
        &mut headers,
        HeaderName::from_static("x-pelican-namespace"),
        namespace,
    );
    let mut issuers = String::new();
    for issuer in ns.issuers.iter().filter(|i| !i.issuer_url.is_empty()) {
        if !issuers.is_empty() {
            issuers.push_str(", ");
        }
        issuers.push_str("issuer=");
        issuers.push_str(&issuer.issuer_url);
    }
    if !issuers.is_empty() {
        insert(
            &mut headers,
            HeaderName::from_static("x-pelican-authorization"),
            issuers,
        );
    }
    // Pelican's client rejects the whole response if this header lacks an issuer, a
    // non-zero max-scope-depth or a strategy, so it is sent only when complete.
    if let Some(g) = ns
        .generation
        .iter()
        .find(|g| !g.issuer.is_empty() && g.max_scope_depth > 0 && !g.strategy.is_empty())
    {
        let mut value =
            String::with_capacity(g.issuer.len() + g.strategy.len() + prefix.len() + 64);
        value.push_str("issuer=");
        value.push_str(&g.issuer);
        value.push_str(", max-scope-depth=");
        push_number(&mut value, g.max_scope_depth as usize);
        value.push_str(", strategy=");
        value.push_str(&g.strategy);
        value.push_str(", base-path=");
        value.push_str(&prefix);
        insert(
            &mut headers,
            HeaderName::from_static("x-pelican-token-generation"),
            value,
        );
    }
    headers
}

/// Appends `n` in decimal (what `write!` would, without the formatting machinery).
fn push_number(out: &mut String, mut n: usize) {
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

fn insert(headers: &mut HeaderMap, name: HeaderName, value: String) {
    // Every part was validated (URLs at ingest, paths percent-encoded); a value that still
    // is not a legal header is dropped rather than answered.
    match HeaderValue::try_from(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => tracing::error!(header = %name, "dropped an illegal header value"),
    }
}

#[cfg(test)]
mod tests {
    use super::push_number;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 1, 6, 9, 10, 42, 100, 65_535, usize::MAX] {
            let mut out = String::from("x=");
            push_number(&mut out, n);
            assert_eq!(out, format!("x={n}"));
        }
    }
}
