//! Per-director counters, histograms and gauges rendered as Prometheus text.
//!
//! Each director owns its registry (rather than a process-global recorder) so that
//! several directors in one process, as in the cluster tests, keep separate counts.
//! That rules out the `metrics` crate (one global recorder per process); the
//! `prometheus-client` crate would fit, but the text format is small and the renderer
//! below is tested, so it stays hand-written. The redirect counters and the request
//! histograms are plain atomics: the hot path takes no lock.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::route_class::ROUTE_CLASSES;
pub use crate::route_class::RouteClass;
use crate::striped::Striped;

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

    /// The sum over every label set that contains `label` (`result="held"`, say).
    fn sum_where(&self, label: &str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .iter()
            .filter(|(labels, _)| labels.split(',').any(|l| l == label))
            .map(|(_, v)| v)
            .sum()
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

/// Upper bounds of the request-duration buckets, microseconds (100 µs to 10 s).
const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket histogram of durations: three relaxed atomic adds per observation, to
/// this thread's stripe.
#[derive(Default)]
struct Histogram(Striped<HistogramCells>);

/// One stripe of a [`Histogram`].
#[derive(Debug, Default)]
struct HistogramCells {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, micros: u64) {
        let at = BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS_US.len());
        let cells = self.0.mine();
        cells.buckets[at].fetch_add(1, Ordering::Relaxed);
        cells.sum_us.fetch_add(micros, Ordering::Relaxed);
        cells.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The sum over the stripes of what `field` reads.
    fn total(&self, field: impl Fn(&HistogramCells) -> &AtomicU64) -> u64 {
        self.0.all().map(|c| field(c).load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for i in 0..=BUCKETS_US.len() {
            cumulative += self.total(|c| &c.buckets[i]);
            let le = match BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.total(|c| &c.sum_us) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let count = self.total(|c| &c.count);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// State read at scrape time (gauges), gathered by the `/metrics` handler.
#[derive(Debug, Default)]
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
    /// Live ads by (kind, status) label values.
    pub ads_by_kind: Vec<(&'static str, &'static str, usize)>,
    /// Per peer: forward backlog, in sync at the last digest exchange, last successful
    /// contact (Unix ms, 0 if never).
    pub peers: Vec<PeerGauges>,
    /// Bytes the store takes on disk.
    pub store_bytes: Option<u64>,
}

/// One peer's gauges.
#[derive(Debug, Default, Clone)]
pub struct PeerGauges {
    /// Its advertise URL.
    pub url: String,
    /// Ads waiting to be forwarded to it.
    pub backlog: usize,
    /// The last digest exchange found nothing to pull or push (None: none yet).
    pub in_sync: Option<bool>,
    /// Last successful contact, Unix ms.
    pub last_success_ms: u64,
}

/// The director's metrics.
#[derive(Default)]
pub struct Metrics {
    durations: [Histogram; ROUTE_CLASSES.len()],
    ads_received: Family,
    forwards: Family,
    offers: Family,
    syncs: AtomicU64,
    /// By result; written by every redirect, so striped per thread.
    redirects: Striped<[AtomicU64; 3]>,
    pruned: AtomicU64,
    /// Connection threads' yields (`http::rest`): at most one per thread per millisecond.
    yields: AtomicU64,
    trust_reloads: Family,
    revoked: AtomicU64,
    pelican_registrations: Family,
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

    /// Counts ads offered to a peer by version, by result (`held`: the peer had it, so
    /// nothing more was sent; `wanted`: it lacked it and gets the full ad; `error`).
    pub fn offered(&self, peer: &str, result: &str, n: u64) {
        if n > 0 {
            self.offers.add(&[("peer", peer), ("result", result)], n);
        }
    }

    /// Ads offered to peers with `result`, over every peer.
    pub fn offered_with(&self, result: &str) -> u64 {
        self.offers.sum_where(&format!("result=\"{result}\""))
    }

    /// Full ads this director forwarded (sent in a forward request) with `result`, over
    /// every peer.
    pub fn forwarded_with(&self, result: &str) -> u64 {
        self.forwards.sum_where(&format!("result=\"{result}\""))
    }

    /// Counts a digest exchange with a peer that completed.
    pub fn synced(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Digest exchanges with peers completed so far.
    pub fn syncs_total(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Counts a redirect decision.
    pub fn redirect(&self, result: RedirectResult) {
        self.redirects.mine()[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection thread giving its core up after holding it too long.
    pub fn connection_thread_yielded(&self) {
        self.yields.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts pruned ads.
    pub fn pruned(&self, n: u64) {
        self.pruned.fetch_add(n, Ordering::Relaxed);
    }

    /// Records how long a request of `class` took.
    pub fn request(&self, class: RouteClass, elapsed: std::time::Duration) {
        self.durations[class as usize].observe(elapsed.as_micros() as u64);
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

    /// Renders Prometheus text with only the two basic gauges.
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

    pub fn render(&self, ads_live: usize, peers_known: usize) -> String {
        self.render_with(&Gauges {
            ads_live,
            peers_known,
            ..Gauges::default()
        })
    }

    /// Renders Prometheus text; gauges are read by the caller.
    pub fn render_with(&self, gauges: &Gauges) -> String {
        let (ads_live, peers_known) = (gauges.ads_live, gauges.peers_known);
        let (ads_live_pelican, registry_requests) =
            (gauges.ads_live_pelican, gauges.registry_requests);
        let mut out = String::new();
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
            "# HELP skein_store_degraded 1 while the store, found damaged at start, has not been refilled from a peer.\n# TYPE skein_store_degraded gauge\nskein_store_degraded {}",
            u8::from(gauges.store_degraded)
        );
        let _ = writeln!(
            out,
            "# HELP skein_store_write_failing 1 while store commits fail (a full disk): ads are refused.\n# TYPE skein_store_write_failing gauge\nskein_store_write_failing {}",
            u8::from(gauges.store_write_failing)
        );
        let _ = writeln!(
            out,
            "# HELP skein_build_info The running build.\n# TYPE skein_build_info gauge\nskein_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
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
        self.offers.render(
            &mut out,
            "skein_forward_offers_total",
            "Ads offered to peer directors by version, by peer and result (held: not sent).",
        );
        let _ = writeln!(
            out,
            "# HELP skein_digest_syncs_total Digest exchanges with peer directors completed.\n# TYPE skein_digest_syncs_total counter\nskein_digest_syncs_total {}",
            self.syncs_total()
        );
        let _ = writeln!(
            out,
            "# HELP skein_redirects_total Client redirect requests, by result.\n# TYPE skein_redirects_total counter"
        );
        for (i, label) in REDIRECT_LABELS.iter().enumerate() {
            let value: u64 = self
                .redirects
                .all()
                .map(|r| r[i].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(out, "skein_redirects_total{{result=\"{label}\"}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP skein_connection_thread_yields_total Times a connection thread gave its core up after using 1 ms of CPU time without once finding nothing to do.\n# TYPE skein_connection_thread_yields_total counter\nskein_connection_thread_yields_total {}",
            self.yields.load(Ordering::Relaxed)
        );
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
        let name = "skein_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a request, by route class.\n# TYPE {name} histogram"
        );
        for (i, class) in ROUTE_CLASSES.iter().enumerate() {
            self.durations[i].render(&mut out, name, &format!("class=\"{class}\""));
        }
        render_gauges(&mut out, gauges);
        out
    }
}

fn render_gauges(out: &mut String, gauges: &Gauges) {
    let _ = writeln!(
        out,
        "# HELP skein_ads Live ads held, by kind and status.\n# TYPE skein_ads gauge"
    );
    for (kind, status, n) in &gauges.ads_by_kind {
        let _ = writeln!(out, "skein_ads{{kind=\"{kind}\",status=\"{status}\"}} {n}");
    }
    if let Some(bytes) = gauges.store_bytes {
        let _ = writeln!(
            out,
            "# HELP skein_store_disk_bytes Size of the store on disk.\n# TYPE skein_store_disk_bytes gauge\nskein_store_disk_bytes {bytes}"
        );
    }
    type Sample = fn(&PeerGauges) -> Option<String>;
    let per_peer: [(&str, &str, Sample); 3] = [
        (
            "skein_peer_forward_backlog",
            "Ads waiting to be forwarded to a peer director.",
            |p| Some(p.backlog.to_string()),
        ),
        (
            "skein_peer_in_sync",
            "1 if the last digest exchange with a peer found nothing to pull or push.",
            |p| p.in_sync.map(|s| u8::from(s).to_string()),
        ),
        (
            "skein_peer_last_success_timestamp_seconds",
            "Last successful contact with a peer director (Unix seconds).",
            |p| Some((p.last_success_ms as f64 / 1e3).to_string()),
        ),
    ];
    for (name, help, value) in per_peer {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for peer in &gauges.peers {
            if let Some(v) = value(peer) {
                let _ = writeln!(out, "{name}{{peer=\"{}\"}} {v}", escape(&peer.url));
            }
        }
    }
}
