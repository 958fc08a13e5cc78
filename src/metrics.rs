//! Per-director counters rendered as Prometheus text.
//!
//! Each director owns its registry (rather than a process-global recorder) so that
//! several directors in one process, as in the cluster tests, keep separate counts.
//! The redirect counters are plain atomics: the hot path takes no lock.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcome of a redirect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectResult {
    /// Redirected (or 200 with `redirect=false`).
    Redirected,
    /// No server for the path.
    NotFound,
    /// Bad path or method not allowed.
    Refused,
}

const REDIRECT_LABELS: [&str; 3] = ["redirected", "not_found", "refused"];

/// A counter family keyed by rendered label sets.
#[derive(Default)]
struct Family {
    values: Mutex<BTreeMap<String, u64>>,
}

impl Family {
    fn add(&self, labels: &[(&str, &str)], n: u64) {
        let rendered = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *values.entry(rendered).or_insert(0) += n;
    }

    fn get(&self, labels: &str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.get(labels).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.values().sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, value) in values.iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Gauges read from the director's state when metrics are rendered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// Ads held and not expired.
    pub ads_live: usize,
    /// Directors known, this one included.
    pub peers_known: usize,
    /// The store was found damaged and no peer has refilled it yet.
    pub store_degraded: bool,
    /// The last commit failed: ingest refuses ads.
    pub store_write_failing: bool,
    /// Of the live ads, Pelican ads.
    pub ads_live_pelican: usize,
    /// Requests made to the Pelican registry so far.
    pub registry_requests: u64,
}

/// The director's metrics.
#[derive(Default)]
pub struct Metrics {
    ads_received: Family,
    pelican_registrations: Family,
    forwards: Family,
    redirects: [AtomicU64; 3],
    pruned: AtomicU64,
}

impl Metrics {
    /// Counts an ad received, by result (`accepted`, `duplicate`, `stale`, `forbidden`, ...).
    pub fn ad_received(&self, result: &str) {
        self.ads_received.add(&[("result", result)], 1);
    }

    /// Counts a Pelican server's registration, by result (`accepted`, `duplicate`,
    /// `stale`, or the refusal code: `token`, `scope`, `unknown_key`, ...).
    pub fn pelican_registration(&self, result: &str) {
        self.pelican_registrations.add(&[("result", result)], 1);
    }

    /// Pelican registrations with `result`.
    pub fn pelican_registrations_with(&self, result: &str) -> u64 {
        self.pelican_registrations
            .get(&format!("result=\"{result}\""))
    }

    /// Counts forward attempts to a peer, by result (`accepted`, `duplicate`, `error`, ...).
    pub fn forwarded(&self, peer: &str, result: &str) {
        self.forwards.add(&[("peer", peer), ("result", result)], 1);
    }

    /// Counts a redirect decision.
    pub fn redirect(&self, result: RedirectResult) {
        self.redirects[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts pruned ads.
    pub fn pruned(&self, n: u64) {
        self.pruned.fetch_add(n, Ordering::Relaxed);
    }

    /// Ads received with `result`.
    pub fn ads_received_with(&self, result: &str) -> u64 {
        self.ads_received.get(&format!("result=\"{result}\""))
    }

    /// All forward attempts this director made.
    pub fn forwards_total(&self) -> u64 {
        self.forwards.total()
    }

    /// Renders Prometheus text; gauges are passed in by the caller.
    pub fn render(&self, gauges: Gauges) -> String {
        let Gauges {
            ads_live,
            ads_live_pelican,
            peers_known,
            registry_requests,
            ..
        } = gauges;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP skein_ads_live Ads held and not expired.\n# TYPE skein_ads_live gauge\nskein_ads_live {ads_live}"
        );
        let _ = writeln!(
            out,
            "# HELP skein_ads_live_by_provenance Live ads by where they came from.\n# TYPE skein_ads_live_by_provenance gauge\nskein_ads_live_by_provenance{{provenance=\"skein\"}} {}\nskein_ads_live_by_provenance{{provenance=\"pelican\"}} {ads_live_pelican}",
            ads_live.saturating_sub(ads_live_pelican)
        );
        let _ = writeln!(
            out,
            "# HELP skein_pelican_registry_requests_total Requests made to the Pelican registry for keys.\n# TYPE skein_pelican_registry_requests_total counter\nskein_pelican_registry_requests_total {registry_requests}"
        );
        self.pelican_registrations.render(
            &mut out,
            "skein_pelican_registrations_total",
            "Pelican servers' registrations (token-verified ads), by result.",
        );
        let _ = writeln!(
            out,
            "# HELP skein_peers_known Directors known, this one included.\n# TYPE skein_peers_known gauge\nskein_peers_known {peers_known}"
        );
        let _ = writeln!(
            out,
            "# HELP skein_store_degraded 1 while the store, found damaged at start, has not been refilled from a peer.\n# TYPE skein_store_degraded gauge\nskein_store_degraded {}",
            u8::from(gauges.store_degraded)
        );
        let _ = writeln!(
            out,
            "# HELP skein_store_write_failing 1 while store commits fail (a full disk): ads are refused.\n# TYPE skein_store_write_failing gauge\nskein_store_write_failing {}",
            u8::from(gauges.store_write_failing)
        );
        self.ads_received.render(
            &mut out,
            "skein_ads_received_total",
            "Ads received, by result.",
        );
        self.forwards.render(
            &mut out,
            "skein_forwards_total",
            "Ads forwarded to peer directors, by peer and result.",
        );
        let _ = writeln!(
            out,
            "# HELP skein_redirects_total Client redirect requests, by result.\n# TYPE skein_redirects_total counter"
        );
        for (i, label) in REDIRECT_LABELS.iter().enumerate() {
            let value = self.redirects[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "skein_redirects_total{{result=\"{label}\"}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP skein_ads_pruned_total Ads dropped at expiry.\n# TYPE skein_ads_pruned_total counter\nskein_ads_pruned_total {}",
            self.pruned.load(Ordering::Relaxed)
        );
        out
    }
}
