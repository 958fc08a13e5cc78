//! What the status page shows, gathered from the director's state in one place.
//!
//! [`StatusView`] is plain data: other parts of the director add what they know here
//! (a field and a line in [`StatusView::gather`]), and the page and the JSON API render it.

use serde::Serialize;

use crate::ad::{AdStatus, ServerKind};
use crate::clock::UnixMillis;
use crate::http::AppState;
use crate::routing::View;
use crate::routing::signals::{ServerHealth, Signals};

/// Everything the status page shows, at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// When this view was gathered (Unix ms).
    pub now: UnixMillis,
    /// The director answering.
    pub director: DirectorStatus,
    /// Live and withdrawing origins and caches, by kind then name.
    pub servers: Vec<ServerRow>,
    /// Other directors, by URL.
    pub peers: Vec<PeerRow>,
}

/// The director itself.
#[derive(Debug, Clone, Serialize)]
pub struct DirectorStatus {
    /// Its name.
    pub name: String,
    /// Its advertise URL.
    pub url: String,
    /// Skein's version.
    pub version: &'static str,
    /// When this process started (Unix ms).
    pub started_at: UnixMillis,
    /// Instance UUID of this process.
    pub instance: String,
    /// Store open and view loaded.
    pub ready: bool,
    /// Why `/ready` is not 200, if it is not: (`write_failing`, `refilling`, `degraded` or
    /// `not_ready`, the detail).
    pub not_ready: Option<(&'static str, String)>,
    /// Where the store lives.
    pub store_path: String,
    /// Store schema version.
    pub schema_version: u32,
    /// Ads held (all kinds, directors included).
    pub ads_held: usize,
    /// Directors known, this one included.
    pub directors_known: usize,
    /// Ads waiting to be forwarded to any peer.
    pub forward_backlog: usize,
}

/// One origin or cache.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRow {
    /// Origin or cache.
    pub kind: ServerKind,
    /// Its name (from the network: escape it).
    pub name: String,
    /// Serving or withdrawing.
    pub status: AdStatus,
    /// Namespace prefixes it serves.
    pub namespaces: Vec<String>,
    /// Where clients fetch from.
    pub data_url: String,
    /// When this director accepted the current ad (Unix ms).
    pub received_at: UnixMillis,
    /// When this director drops it (Unix ms).
    pub expires_at: UnixMillis,
    /// The ad's generation.
    pub generation: u64,
    /// The server's software version, as advertised.
    pub version: String,
    /// Health as the probes last saw it; `None` when not probed.
    pub health: Option<HealthCell>,
    /// A downtime or ban held for it (operator records), if any.
    pub downtime: Option<String>,
    /// Where the ad came from: `skein` (signed by the server) or `pelican` (a Pelican
    /// server's token, attested by a director).
    pub provenance: &'static str,
}

/// A server's health, for display.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HealthCell {
    /// Probes succeed.
    pub up: bool,
    /// Recent success rate, 0 to 1.
    pub success_rate: f64,
    /// Last round trip, ms.
    pub latency_ms: f64,
    /// When last probed (Unix ms).
    pub checked_at: UnixMillis,
}

impl From<ServerHealth> for HealthCell {
    fn from(h: ServerHealth) -> Self {
        Self {
            up: h.up,
            success_rate: h.ewma,
            latency_ms: h.latency_ms,
            checked_at: h.checked_at,
        }
    }
}

/// One other director.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// Its advertise URL.
    pub url: String,
    /// Its name, once its ad is known.
    pub name: Option<String>,
    /// Its version, once its ad is known.
    pub version: Option<String>,
    /// The last contact succeeded.
    pub reachable: bool,
    /// Caught up as far as this director knows: reachable and nothing waiting for it.
    /// `None` before the first contact.
    pub in_sync: Option<bool>,
    /// Ads waiting to be forwarded to it.
    pub backlog: usize,
    /// When it last answered (Unix ms, 0: never).
    pub last_ok: UnixMillis,
    /// The last error: its cause, and the whole text.
    pub last_error: Option<ErrorText>,
}

/// An error as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorText {
    /// The innermost cause, at most [`SHORT_ERROR`] characters.
    pub short: String,
    /// The whole chain, as logged.
    pub full: String,
}

impl ErrorText {
    /// Keeps the innermost cause of an error chain (`a: b: c` from reqwest and friends:
    /// the end says what went wrong, the start repeats the URL).
    pub fn of(full: String) -> Self {
        let parts: Vec<&str> = full.split(": ").collect();
        let mut short = String::new();
        for part in parts.iter().rev() {
            let next = if short.is_empty() {
                part.to_string()
            } else {
                format!("{part}: {short}")
            };
            if next.chars().count() > SHORT_ERROR && !short.is_empty() {
                break;
            }
            short = next;
        }
        Self {
            short: shorten(&short, SHORT_ERROR),
            full,
        }
    }
}

/// Longest error shown on the page; the rest is in its tooltip and the logs.
const SHORT_ERROR: usize = 80;

impl StatusView {
    /// Reads the director's state: memory only, no I/O and no lock held for long.
    pub fn gather(state: &AppState) -> Self {
        let now = state.ledger.clock().now_ms();
        let view = state.ledger.view();
        let instance = state.identity.instance();
        let director = DirectorStatus {
            name: state.name.clone(),
            url: state.advertise_url.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: instance.started_at,
            instance: instance.uuid.to_string(),
            ready: state.ready.load(std::sync::atomic::Ordering::SeqCst),
            not_ready: super::super::health::not_ready(state),
            store_path: state.ledger.store().path().display().to_string(),
            schema_version: crate::store::SCHEMA_VERSION,
            ads_held: view.len(),
            directors_known: state.peers.count_with_self(),
            forward_backlog: state.replicator.backlog(),
        };
        let servers = server_rows(&view, state.signals.as_ref());
        let peers = state
            .peers
            .statuses()
            .into_iter()
            .map(|p| {
                let backlog = state.replicator.backlog_of(&p.url);
                let in_sync = (p.last_ok != 0 || p.last_error.is_some())
                    .then_some(p.reachable && backlog == 0);
                PeerRow {
                    in_sync,
                    backlog,
                    last_error: p.last_error.map(ErrorText::of),
                    url: p.url,
                    name: p.name,
                    version: p.version,
                    reachable: p.reachable,
                    last_ok: p.last_ok,
                }
            })
            .collect();
        Self {
            now,
            director,
            servers,
            peers,
        }
    }
}

/// Every origin and cache of `view`, by kind then name, with what `signals` know.
pub fn server_rows(view: &View, signals: &dyn Signals) -> Vec<ServerRow> {
    let mut servers: Vec<ServerRow> = view
        .ads()
        .filter(|a| matches!(a.ad.kind, ServerKind::Origin | ServerKind::Cache))
        .map(|a| ServerRow {
            kind: a.ad.kind,
            name: a.ad.name.clone(),
            status: a.ad.status,
            namespaces: a.ad.namespaces.iter().map(|n| n.path.clone()).collect(),
            data_url: a.ad.data_url.clone(),
            received_at: a.received_at,
            expires_at: a.expires_at,
            generation: a.ad.generation,
            version: a.ad.version.clone(),
            health: signals.health(&a.ad.key()).map(HealthCell::from),
            downtime: records_about(view, &a.ad.name),
            provenance: a.provenance().as_str(),
        })
        .collect();
    servers.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    servers
}

/// The operator records in force for server `name`: "banned: why" or
/// "downtime <start> to <end>: why".
fn records_about(view: &View, name: &str) -> Option<String> {
    let record = |kind| {
        view.get(&crate::ad::AdKey {
            kind,
            name: name.to_string(),
        })
        .and_then(|a| a.ad.record.clone())
        .filter(|r| r.active)
    };
    let date = |ms: UnixMillis| {
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
    };
    let why = |reason: &str| {
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {}", shorten(reason, 80))
        }
    };
    if let Some(ban) = record(ServerKind::Ban) {
        return Some(format!("banned{}", why(&ban.reason)));
    }
    record(ServerKind::Downtime).map(|d| {
        format!(
            "downtime {} to {}{}",
            date(d.start),
            date(d.end),
            why(&d.reason)
        )
    })
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorText, shorten};

    #[test]
    fn errors_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééé", 2), "éé…");
    }

    #[test]
    fn an_error_chain_shows_its_cause() {
        let full = "http://127.0.0.1:1/api/v1.0/director/directors: error sending request for url (http://127.0.0.1:1/api/v1.0/director/directors): client error (Connect): tcp connect error: Connection refused (os error 111)";
        let e = ErrorText::of(full.into());
        assert_eq!(
            e.short,
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(e.full, full);
        assert_eq!(ErrorText::of("x".repeat(200)).short.chars().count(), 81);
    }
}
