//! Turning a [`Route`] into Pelican's redirect headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::paths::{depth, encode_path};
use crate::routing::Route;

/// Most candidates listed in `Link` (Pelican's limit).
pub const MAX_LINKS: usize = 6;

/// The headers of a redirect for `path` (clean) along `route`; `query` is appended to
/// `Location` (Pelican passes `authz` and the like through).
pub fn headers(route: &Route, path: &str, query: Option<&str>) -> HeaderMap {
    use std::fmt::Write;
    let mut headers = HeaderMap::new();
    let encoded = encode_path(path);
    let query = query.filter(|q| !q.is_empty());
    let first = &route.candidates[0].data_url;
    let mut location =
        String::with_capacity(first.len() + encoded.len() + query.map_or(0, |q| q.len() + 1));
    location.push_str(first);
    location.push_str(&encoded);
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    insert(&mut headers, header::LOCATION, location);
    let depth = depth(&route.prefix);
    // One buffer for the whole header: no per-candidate strings.
    let shown = route.candidates.iter().take(MAX_LINKS);
    let mut link = String::with_capacity(
        shown
            .clone()
            .map(|c| c.data_url.len() + encoded.len() + 40)
            .sum(),
    );
    for (i, c) in shown.enumerate() {
        if i > 0 {
            link.push_str(", ");
        }
        let _ = write!(
            link,
            "<{}{encoded}>; rel=\"duplicate\"; pri={}; depth={depth}",
            c.data_url,
            i + 1
        );
    }
    insert(&mut headers, header::LINK, link);
    let ns = &route.namespace;
    let mut namespace = format!(
        "namespace={}, require-token={}",
        encode_path(&route.prefix),
        !ns.caps.public_reads
    );
    if let Some(url) = route.collections_url.as_ref().filter(|_| ns.caps.listings) {
        namespace.push_str(&format!(", collections-url={url}"));
    }
    insert(
        &mut headers,
        HeaderName::from_static("x-pelican-namespace"),
        namespace,
    );
    let issuers: Vec<String> = ns
        .issuers
        .iter()
        .filter(|i| !i.issuer_url.is_empty())
        .map(|i| format!("issuer={}", i.issuer_url))
        .collect();
    if !issuers.is_empty() {
        insert(
            &mut headers,
            HeaderName::from_static("x-pelican-authorization"),
            issuers.join(", "),
        );
    }
    // Pelican's client rejects the whole response if this header lacks an issuer, a
    // non-zero max-scope-depth or a strategy, so it is sent only when complete.
    if let Some(g) = ns
        .generation
        .iter()
        .find(|g| !g.issuer.is_empty() && g.max_scope_depth > 0 && !g.strategy.is_empty())
    {
        insert(
            &mut headers,
            HeaderName::from_static("x-pelican-token-generation"),
            format!(
                "issuer={}, max-scope-depth={}, strategy={}, base-path={}",
                g.issuer,
                g.max_scope_depth,
                g.strategy,
                encode_path(&route.prefix)
            ),
        );
    }
    headers
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
