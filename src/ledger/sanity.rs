//! Bounds on every string and list an ad carries, so that nothing a trusted (or
//! compromised) server signs can break a header, a log line or the director's memory.

use crate::ad::{Ad, NamespaceAd, ServerKind};
use crate::clock::UnixMillis;
use crate::config::check_url;
use crate::paths::is_valid_namespace;

/// Longest URL accepted anywhere in an ad.
pub const MAX_URL_LEN: usize = 2048;
/// Most token issuers (and token-generation entries) per namespace.
pub const MAX_ISSUERS: usize = 16;
/// Most base paths per token issuer.
pub const MAX_BASE_PATHS: usize = 64;
/// Longest free-form short string (software version, token strategy).
pub const MAX_SHORT_LEN: usize = 64;
/// Largest `max-scope-depth` accepted (paths are at most 4096 bytes).
pub const MAX_SCOPE_DEPTH: u32 = 2048;

/// Characters that are legal in a URL but would split a header list or a `Link` entry.
const HEADER_BREAKERS: &[char] = &['<', '>', '"', ',', ';', '\\'];

/// Longest reason a record may give.
pub const MAX_REASON_LEN: usize = 1024;

/// Checks a federation record (downtime, ban): it names a server, carries its record
/// and nothing a server ad carries, and a downtime ends after it starts.
pub(super) fn record(ad: &Ad, now: UnixMillis, max_skew_ms: u64) -> Result<(), String> {
    let Some(record) = &ad.record else {
        return Err(format!("a {} record must carry a record", ad.kind));
    };
    if ad.name.chars().any(char::is_control) {
        return Err("name contains a control character".into());
    }
    if !ad.namespaces.is_empty()
        || !ad.data_url.is_empty()
        || !ad.web_url.is_empty()
        || ad.location.is_some()
    {
        return Err("a record carries no namespaces, no URLs and no location".into());
    }
    short(&ad.version).map_err(|why| format!("version: {why}"))?;
    if record.signer.is_empty() || record.signer.len() > 255 {
        return Err("record signer must be 1 to 255 characters".into());
    }
    if record.reason.len() > MAX_REASON_LEN || record.reason.chars().any(char::is_control) {
        return Err(format!(
            "record reason must be at most {MAX_REASON_LEN} bytes without control characters"
        ));
    }
    if ad.kind == ServerKind::Downtime && record.end <= record.start {
        return Err(format!(
            "downtime ends ({}) before it starts ({})",
            record.end, record.start
        ));
    }
    if ad.instance_id.started_at > now.saturating_add(max_skew_ms) {
        return Err("record signed in the future (check the signer's clock)".into());
    }
    if ad.expires_at <= now {
        return Err(format!("record expired at {} (now {now})", ad.expires_at));
    }
    Ok(())
}

/// Checks the strings and lists of `ad` beyond name, data URL and namespace paths.
pub(super) fn check(ad: &Ad) -> Result<(), String> {
    if ad.name.chars().any(char::is_control) {
        return Err("name contains a control character".into());
    }
    header_url(&ad.data_url).map_err(|why| format!("data-url: {why}"))?;
    if !ad.web_url.is_empty() {
        header_url(&ad.web_url).map_err(|why| format!("web-url: {why}"))?;
    }
    short(&ad.version).map_err(|why| format!("version: {why}"))?;
    if let Some(at) = &ad.location
        && !at.is_valid()
    {
        return Err(format!(
            "location: lat {} / lon {} is not a coordinate (finite, lat -90 to 90, lon -180 to 180)",
            at.lat, at.lon
        ));
    }
    for ns in &ad.namespaces {
        namespace(ns).map_err(|why| format!("namespace {:?}: {why}", ns.path))?;
    }
    Ok(())
}

fn namespace(ns: &NamespaceAd) -> Result<(), String> {
    if ns.issuers.len() > MAX_ISSUERS {
        return Err(format!("more than {MAX_ISSUERS} token issuers"));
    }
    if ns.generation.len() > MAX_ISSUERS {
        return Err(format!("more than {MAX_ISSUERS} token-generation entries"));
    }
    for issuer in &ns.issuers {
        header_url(&issuer.issuer_url).map_err(|why| format!("token-issuer: {why}"))?;
        if issuer.base_paths.len() > MAX_BASE_PATHS {
            return Err(format!(
                "token-issuer has more than {MAX_BASE_PATHS} base paths"
            ));
        }
        if let Some(bad) = issuer.base_paths.iter().find(|p| !is_valid_namespace(p)) {
            return Err(format!(
                "token-issuer base path {bad:?} is not a clean absolute path"
            ));
        }
    }
    for generation in &ns.generation {
        if !generation.issuer.is_empty() {
            header_url(&generation.issuer)
                .map_err(|why| format!("token-generation issuer: {why}"))?;
        }
        short(&generation.strategy).map_err(|why| format!("token-generation strategy: {why}"))?;
        if generation
            .strategy
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!(
                "token-generation strategy {:?} must be letters, digits, - or _",
                generation.strategy
            ));
        }
        if generation.max_scope_depth > MAX_SCOPE_DEPTH {
            return Err(format!(
                "token-generation max-scope-depth {} is more than {MAX_SCOPE_DEPTH}",
                generation.max_scope_depth
            ));
        }
    }
    Ok(())
}

/// An http(s) URL that can go into a redirect header unchanged.
fn header_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("URL longer than {MAX_URL_LEN} bytes"));
    }
    if PASSED.holds(url) {
        return Ok(());
    }
    check_url(url)?;
    if !url.is_ascii() {
        return Err(format!("{url:?} must be ASCII (percent-encode it)"));
    }
    if let Some(c) = url.chars().find(|c| HEADER_BREAKERS.contains(c)) {
        return Err(format!("{url:?} contains {c:?}"));
    }
    PASSED.note(url);
    Ok(())
}

/// URLs that passed [`header_url`] lately. Every server re-sends the same URLs with each
/// ad, once a minute to every director, and parsing one (IDNA included) costs more than
/// the rest of the sanity checks together; the answer for a given string never changes.
static PASSED: PassedUrls = PassedUrls::new();

/// Most URLs remembered; when full the set starts over (bounded memory, whatever is sent).
const MAX_PASSED_URLS: usize = 65_536;

/// A set of URL strings known to pass, cleared when it reaches [`MAX_PASSED_URLS`].
struct PassedUrls(std::sync::Mutex<Option<std::collections::HashSet<Box<str>>>>);

impl PassedUrls {
    const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    fn holds(&self, url: &str) -> bool {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.as_ref().is_some_and(|set| set.contains(url))
    }

    fn note(&self, url: &str) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let set = set.get_or_insert_with(Default::default);
        if set.len() >= MAX_PASSED_URLS {
            set.clear();
        }
        set.insert(url.into());
    }
}

/// A short, printable string.
fn short(text: &str) -> Result<(), String> {
    if text.len() > MAX_SHORT_LEN {
        return Err(format!("longer than {MAX_SHORT_LEN} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{ServerKind, TokenGeneration, TokenIssuer};
    use crate::fixtures;

    fn with_ns(edit: impl FnOnce(&mut NamespaceAd)) -> Ad {
        let mut ad = fixtures::ad("o", ServerKind::Origin, &["/ns"], 1, 1);
        edit(&mut ad.namespaces[0]);
        ad
    }

    fn issuer(url: &str) -> TokenIssuer {
        TokenIssuer {
            issuer_url: url.into(),
            base_paths: vec!["/ns".into()],
        }
    }

    #[test]
    fn sound_ads_pass() {
        let ad = with_ns(|ns| {
            ns.issuers.push(issuer("https://issuer.example/ns"));
            ns.generation.push(TokenGeneration {
                strategy: "OAuth2".into(),
                max_scope_depth: 3,
                issuer: "https://issuer.example/ns".into(),
            });
        });
        assert_eq!(check(&ad), Ok(()));
    }

    #[test]
    fn hostile_token_fields_are_refused() {
        let cases: Vec<Ad> = vec![
            with_ns(|ns| ns.issuers.push(issuer("file:///etc/passwd"))),
            with_ns(|ns| {
                ns.issuers
                    .push(issuer("https://a.example/\r\nSet-Cookie: x"))
            }),
            with_ns(|ns| {
                ns.issuers
                    .push(issuer("https://a.example/x, issuer=https://evil"))
            }),
            with_ns(|ns| {
                ns.issuers
                    .push(issuer(&format!("https://a.example/{}", "a".repeat(3000))))
            }),
            with_ns(|ns| ns.issuers = vec![issuer("https://a.example"); MAX_ISSUERS + 1]),
            with_ns(|ns| {
                ns.issuers.push(TokenIssuer {
                    issuer_url: "https://a.example".into(),
                    base_paths: vec!["/ns/../etc".into()],
                })
            }),
            with_ns(|ns| {
                ns.generation.push(TokenGeneration {
                    strategy: "OAuth2\nX: y".into(),
                    max_scope_depth: 1,
                    issuer: "https://a.example".into(),
                })
            }),
            with_ns(|ns| {
                ns.generation.push(TokenGeneration {
                    strategy: "OAuth2".into(),
                    max_scope_depth: u32::MAX,
                    issuer: "https://a.example".into(),
                })
            }),
            with_ns(|ns| {
                ns.generation.push(TokenGeneration {
                    strategy: "OAuth2".into(),
                    max_scope_depth: 1,
                    issuer: "javascript:alert(1)".into(),
                })
            }),
        ];
        for ad in cases {
            assert!(check(&ad).is_err(), "accepted {:?}", ad.namespaces[0]);
        }
        let mut ad = with_ns(|_| {});
        ad.name = "o\u{7}".into();
        assert!(check(&ad).is_err());
        let mut ad = with_ns(|_| {});
        ad.web_url = "ftp://x".into();
        assert!(check(&ad).is_err());
        let mut ad = with_ns(|_| {});
        ad.data_url = "http://o.example/<x>".into();
        assert!(check(&ad).is_err());
        let mut ad = with_ns(|_| {});
        ad.version = "v".repeat(MAX_SHORT_LEN + 1);
        assert!(check(&ad).is_err());
    }

    #[test]
    fn a_location_must_be_a_coordinate() {
        let at = |lat: f64, lon: f64| {
            let mut ad = with_ns(|_| {});
            ad.location = Some(crate::coord::Coord { lat, lon });
            check(&ad)
        };
        assert_eq!(at(43.07, -89.4), Ok(()));
        assert_eq!(at(-90.0, 180.0), Ok(()));
        for (lat, lon) in [
            (90.5, 0.0),
            (0.0, -180.1),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
            (f64::NEG_INFINITY, 0.0),
        ] {
            let why = at(lat, lon).unwrap_err();
            assert!(why.starts_with("location: "), "{why}");
        }
        let mut record = crate::ad::Record {
            signer: "ops".into(),
            active: true,
            start: 0,
            end: u64::MAX,
            reason: String::new(),
        }
        .into_ad(ServerKind::Ban, "o", 1, u64::MAX);
        assert_eq!(super::record(&record, 1, 0), Ok(()));
        record.location = crate::coord::Coord::new(1.0, 1.0);
        assert!(super::record(&record, 1, 0).is_err());
    }

    /// Remembering URLs that passed changes no answer: the same strings pass and fail
    /// the second time as the first, and the set stays bounded.
    #[test]
    fn remembered_urls_give_the_same_answers() {
        for _ in 0..2 {
            assert_eq!(header_url("https://cache.example:8443"), Ok(()));
            assert!(header_url("https://cache.example:8443/a,b").is_err());
            assert!(header_url("ftp://cache.example").is_err());
            assert!(header_url("https://cach\u{e9}.example").is_err());
        }
        let set = PassedUrls::new();
        for i in 0..MAX_PASSED_URLS + 10 {
            set.note(&format!("https://s{i}.example"));
        }
        let held = set.0.lock().unwrap().as_ref().map_or(0, |s| s.len());
        assert!(held <= MAX_PASSED_URLS, "{held}");
        assert!(set.holds(&format!("https://s{}.example", MAX_PASSED_URLS + 9)));
    }
}
