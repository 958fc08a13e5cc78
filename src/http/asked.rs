//! What the object handler reads of a request (method, target, the few headers it uses),
//! from hyper's request parts or from the HTTP/1.1 loop's parsed head, so that the loop
//! answers a redirect without building a header map it would read two values of.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, Method, Uri};

/// A request as the object handler sees it.
#[derive(Clone, Copy)]
pub(super) struct Asked<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target.
    pub uri: &'a Uri,
    headers: Headers<'a>,
    extensions: Option<&'a Extensions>,
}

/// `value` as text, if it is visible ASCII or tab (what `HeaderValue::to_str` takes).
fn text(value: &[u8]) -> Option<&str> {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// True if `line` is a header `name` (a line's name is as sent, a map's lower case).
fn is_named(line: &httparse::Header<'_>, name: &HeaderName) -> bool {
    line.name.eq_ignore_ascii_case(name.as_str())
}

/// The values of one header, from either place.
enum Values<'a> {
    Map(axum::http::header::ValueIter<'a, axum::http::HeaderValue>),
    Lines {
        lines: &'a [httparse::Header<'a>],
        name: &'a HeaderName,
    },
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next().map(|v| v.as_bytes()),
            Values::Lines { lines, name } => {
                let at = lines.iter().position(|h| is_named(h, name))?;
                let value = lines[at].value;
                *lines = &lines[at + 1..];
                Some(value)
            }
        }
    }
}

impl DoubleEndedIterator for Values<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Values::Map(values) => values.next_back().map(|v| v.as_bytes()),
            Values::Lines { lines, name } => {
                let at = lines.iter().rposition(|h| is_named(h, name))?;
                let value = lines[at].value;
                *lines = &lines[..at];
                Some(value)
            }
        }
    }
}

/// Where the request's headers are.
#[derive(Clone, Copy)]
enum Headers<'a> {
    /// A header map (hyper's parts, the router, tests).
    Map(&'a HeaderMap),
    /// Header lines as `httparse` read them: names and values checked as `http` checks
    /// them, in the order sent.
    Lines(&'a [httparse::Header<'a>]),
}

impl<'a> Asked<'a> {
    /// A request that hyper (or the router) read.
    pub(super) fn of(parts: &'a Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: Headers::Map(&parts.headers),
            extensions: Some(&parts.extensions),
        }
    }

    /// A request the HTTP/1.1 loop read: `lines` are its header lines.
    pub(super) fn read(
        method: &'a Method,
        uri: &'a Uri,
        lines: &'a [httparse::Header<'a>],
    ) -> Self {
        Self {
            method,
            uri,
            headers: Headers::Lines(lines),
            extensions: None,
        }
    }

    /// The target's path.
    pub(super) fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The first value of the header `name`, if it is text (visible ASCII, as
    /// `HeaderValue::to_str` takes).
    pub(super) fn header_text(&self, name: &HeaderName) -> Option<&'a str> {
        let value = match self.headers {
            Headers::Map(map) => map.get(name)?.as_bytes(),
            Headers::Lines(lines) => lines.iter().find(|h| is_named(h, name))?.value,
        };
        text(value)
    }

    /// Every value of the header `name` that is text, in the order sent (what
    /// `HeaderMap::get_all` and `to_str` give).
    pub(super) fn texts_named(
        &self,
        name: &'a HeaderName,
    ) -> impl DoubleEndedIterator<Item = &'a str> + use<'a> {
        let values = match self.headers {
            Headers::Map(map) => Values::Map(map.get_all(name).iter()),
            Headers::Lines(lines) => Values::Lines { lines, name },
        };
        values.filter_map(text)
    }

    /// The connection's peer as the request carries it (axum's `ConnectInfo`), if it does.
    pub(super) fn connect_info(&self) -> Option<SocketAddr> {
        self.extensions?
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request};

    #[test]
    fn headers_read_the_same_from_a_map_and_from_lines() {
        let head = b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3\r\nAuthorization: Bearer t\r\nX-Odd: caf\xc3\xa9\r\n\r\n";
        let mut lines = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut lines);
        assert!(parsed.parse(head).unwrap().is_complete());
        let mut request = Request::get("/a?b");
        for h in parsed.headers.iter() {
            request = request.header(h.name, HeaderValue::from_bytes(h.value).unwrap());
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let uri: Uri = "/a?b".parse().unwrap();
        let from_map = Asked::of(&parts);
        let from_lines = Asked::read(&Method::GET, &uri, parsed.headers);
        let xff = HeaderName::from_static("x-forwarded-for");
        for asked in [from_map, from_lines] {
            let values: Vec<&str> = asked.texts_named(&xff).collect();
            assert_eq!(values, ["1.1.1.1", "2.2.2.2, 3.3.3.3"]);
            let last: Vec<&str> = asked.texts_named(&xff).rev().collect();
            assert_eq!(last[0], "2.2.2.2, 3.3.3.3");
            assert_eq!(
                asked.header_text(&axum::http::header::AUTHORIZATION),
                Some("Bearer t")
            );
            assert_eq!(asked.header_text(&axum::http::header::ACCEPT), None);
            // A value that is not visible ASCII is no text, as for `to_str`.
            assert_eq!(asked.header_text(&HeaderName::from_static("x-odd")), None);
            assert_eq!(asked.path(), "/a");
        }
    }
}
