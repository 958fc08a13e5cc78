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

/// The director's metrics.
#[derive(Default)]
pub struct Metrics {
    ads_received: Family,
    forwards: Family,
    redirects: [AtomicU64; 3],
    pruned: AtomicU64,
    trust_reloads: Family,
    revoked: AtomicU64,
}

impl Metrics {
    /// Counts an ad received, by result (`accepted`, `duplicate`, `stale`, `forbidden`, ...).
    pub fn ad_received(&self, result: &str) {
        self.ads_received.add(&[("result", result)], 1);
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

    /// Counts a trust-file reload, by result (`applied` or `refused`).
    pub fn trust_reload(&self, result: &str) {
        self.trust_reloads.add(&[("result", result)], 1);
    }

    /// Counts held ads dropped because the trust no longer admits them.
    pub fn revoked(&self, n: u64) {
        self.revoked.fetch_add(n, Ordering::Relaxed);
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
    pub fn render(&self, ads_live: usize, peers_known: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP skein_ads_live Ads held and not expired.\n# TYPE skein_ads_live gauge\nskein_ads_live {ads_live}"
        );
        let _ = writeln!(
            out,
            "# HELP skein_peers_known Directors known, this one included.\n# TYPE skein_peers_known gauge\nskein_peers_known {peers_known}"
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
        self.trust_reloads.render(
            &mut out,
            "skein_trust_reloads_total",
            "Trust file reloads (SIGHUP, file change), by result.",
        );
        let _ = writeln!(
            out,
            "# HELP skein_ads_revoked_total Held ads dropped because the trust no longer admits them.\n# TYPE skein_ads_revoked_total counter\nskein_ads_revoked_total {}",
            self.revoked.load(Ordering::Relaxed)
        );
        out
    }
}
