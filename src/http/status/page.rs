//! The status page's HTML, rendered from a [`StatusView`] with `maud` (which escapes
//! every interpolated string, so names and URLs from ads cannot inject markup).
//!
//! Why maud rather than askama: the page is a function of one Rust struct, and maud's
//! templates are Rust code checked by the compiler against it (a renamed field breaks the
//! build, not the page), with no template files to embed or keep in step, and escaping is
//! the default for every interpolation; only the constant stylesheet is inserted raw.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::human::{ago, span, until, utc};
use super::view::{HealthCell, PeerRow, ServerRow, StatusView};
use crate::ad::AdStatus;

/// Seconds between automatic reloads.
pub const REFRESH_SECS: u32 = 10;

/// Ads closer than this to expiry are flagged.
const EXPIRY_WARNING_MS: u64 = 60_000;

const STYLE: &str = r#"
:root{--bg:#f4f6f9;--card:#fff;--ink:#1d2733;--mute:#6b7785;--line:#e3e8ee;--ok:#1f8a4c;--okbg:#e3f5ea;
--warn:#a86400;--warnbg:#fff2dc;--bad:#b42318;--badbg:#fde8e6;--acc:#2f5fb3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#17212e;color:#fff;padding:14px 28px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
header h1{font-size:20px;margin:0;font-weight:600}
header .url{color:#9fb3c8;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px}
header .right{margin-left:auto;color:#9fb3c8;font-size:12px}
main{padding:20px 28px;max-width:1500px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;margin-bottom:22px}
.fact{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.fact .k{color:var(--mute);font-size:11px;text-transform:uppercase;letter-spacing:.05em}
.fact .v{font-size:18px;font-weight:600;margin-top:2px;overflow-wrap:anywhere}
.fact .note{color:var(--mute);font-size:12px;margin-top:2px;overflow-wrap:anywhere}
.fact .note .mono{font-size:11.5px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin-bottom:22px;overflow-x:auto}
section h2{font-size:15px;margin:0;padding:12px 16px;border-bottom:1px solid var(--line);display:flex;gap:10px;align-items:baseline}
section h2 .count{color:var(--mute);font-weight:400;font-size:13px}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--mute);font-weight:600;padding:8px 12px;border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:8px 12px;border-bottom:1px solid var(--line);vertical-align:top}
td.nowrap{white-space:nowrap}
tr:last-child td{border-bottom:0}
tbody tr:hover{background:#f8fafc}
.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
.mute{color:var(--mute)}
.pill{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.ok{background:var(--okbg);color:var(--ok)} .warn{background:var(--warnbg);color:var(--warn)} .bad{background:var(--badbg);color:var(--bad)}
.kind{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--acc);font-weight:700}
.ns{display:inline-block;background:#eef2f7;border-radius:4px;padding:0 6px;margin:1px 3px 1px 0;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.err{color:var(--bad);font-size:12.5px}
.soon{color:var(--warn);font-weight:600}
.empty{padding:16px;color:var(--mute)}
footer{padding:0 28px 28px;color:var(--mute);font-size:13px}
footer a{color:var(--acc);margin-right:14px;text-decoration:none}
footer a:hover{text-decoration:underline}
"#;

/// The whole page.
pub fn render(view: &StatusView) -> Markup {
    let d = &view.director;
    let now = view.now;
    let withdrawing = view
        .servers
        .iter()
        .filter(|s| s.status == AdStatus::ShuttingDown)
        .count();
    let unreachable = view.peers.iter().filter(|p| !p.reachable).count();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                title { "Skein · " (d.name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Skein director " (d.name) }
                    span.url { (d.url) }
                    @match &d.not_ready {
                        None => { span.pill.ok { "ready" } }
                        Some((status, _)) => { span.pill.bad { (status.replace('_', " ")) } }
                    }
                    span.right title=(utc(now)) {
                        "updated " (utc(now)) " · reloads every " (REFRESH_SECS) " s"
                    }
                }
                main {
                    @if let Some((_, detail)) = &d.not_ready {
                        p.pill.bad { (detail) }
                    }
                    div.facts {
                        (fact("version", html! { (d.version) }, html! { span.mono { (d.instance) } }))
                        (fact("uptime", html! { (span(now.saturating_sub(d.started_at))) }, html! { "since " (utc(d.started_at)) }))
                        (fact("origins + caches", html! { (view.servers.len()) }, html! { (withdrawing) " withdrawing" }))
                        (fact("directors known", html! { (d.directors_known) }, html! { (unreachable) " unreachable" }))
                        (fact("forward backlog", html! { (d.forward_backlog) }, html! { "ads waiting for peers" }))
                        (fact("store", html! { @if d.ready { "open" } @else { "loading" } " · " (d.ads_held) " ads" },
                            html! { span.mono { (d.store_path) } " · schema v" (d.schema_version) }))
                    }
                    (servers(&view.servers, now))
                    (peers(&view.peers, now))
                }
                footer {
                    a href="/metrics" { "/metrics" }
                    a href="/api/v1.0/director/status" { "status JSON" }
                    a href="/api/v1.0/director/ads" { "ads" }
                    a href="/api/v1.0/director/directors" { "directors" }
                    a href="/api/v2.0/director/listNamespaces" { "namespaces" }
                    a href="/api/v1.0/director/discoverServers" { "Prometheus targets" }
                    a href="/.well-known/pelican-configuration" { "discovery" }
                    a href="/ready" { "/ready" }
                }
            }
        }
    }
}

fn fact(key: &str, value: Markup, note: Markup) -> Markup {
    html! { div.fact { div.k { (key) } div.v { (value) } div.note { (note) } } }
}

fn servers(rows: &[ServerRow], now: u64) -> Markup {
    html! {
        section #servers {
            h2 { "Origins and caches" span.count { (rows.len()) } }
            @if rows.is_empty() {
                div.empty { "No server has advertised to this federation yet." }
            } @else {
                table {
                    thead { tr {
                        th { "kind" } th { "name" } th { "status" } th { "health" } th { "downtime" }
                        th { "namespaces" } th { "data URL" } th { "last ad" } th { "expires" } th { "generation" }
                    } }
                    tbody {
                        @for row in rows { (server_row(row, now)) }
                    }
                }
            }
        }
    }
}

fn server_row(row: &ServerRow, now: u64) -> Markup {
    let expiring = row.expires_at.saturating_sub(now) < EXPIRY_WARNING_MS;
    html! {
        tr {
            td { span.kind { (row.kind) } }
            td.nowrap { strong { (row.name) } div.mute.mono { (row.provenance) @if !row.version.is_empty() { " · " (row.version) } } }
            td { @match row.status {
                AdStatus::Ok => span.pill.ok { "ok" },
                AdStatus::ShuttingDown => span.pill.warn { "shutting down" },
            } }
            td { (health(row.health, now)) }
            td { @match &row.downtime { Some(d) => span.pill.warn { (d) }, None => span.mute { "—" } } }
            td { @for ns in &row.namespaces { span.ns { (ns) } } }
            td.mono { (row.data_url) }
            td title=(utc(row.received_at)) { (ago(now, row.received_at)) }
            td title=(utc(row.expires_at)) class=[expiring.then_some("soon")] { (until(now, row.expires_at)) }
            td.mono { (row.generation) }
        }
    }
}

fn health(cell: Option<HealthCell>, now: u64) -> Markup {
    match cell {
        None => html! { span.mute { "not probed" } },
        Some(h) => html! {
            span.pill.ok[h.up].bad[!h.up] title={ "probed " (ago(now, h.checked_at)) } {
                @if h.up { "up" } @else { "down" }
            }
            span.mute { " " (format!("{:.0}%", h.success_rate * 100.0)) " · " (format!("{:.0} ms", h.latency_ms)) }
        },
    }
}

fn peers(rows: &[PeerRow], now: u64) -> Markup {
    html! {
        section #peers {
            h2 { "Other directors" span.count { (rows.len()) } }
            @if rows.is_empty() {
                div.empty { "This director knows no other director." }
            } @else {
                table {
                    thead { tr {
                        th { "URL" } th { "name" } th { "reachable" } th { "in sync" }
                        th { "forward backlog" } th { "last success" } th { "last error" }
                    } }
                    tbody {
                        @for p in rows {
                            tr {
                                td.mono { (p.url) }
                                td.nowrap { @if let Some(n) = &p.name { (n) } @else { span.mute { "—" } } }
                                td { @if p.reachable { span.pill.ok { "yes" } } @else { span.pill.bad { "no" } } }
                                td { @match p.in_sync {
                                    Some(true) => span.pill.ok { "yes" },
                                    Some(false) => span.pill.warn { "behind" },
                                    None => span.mute { "unknown" },
                                } }
                                td.mono { (p.backlog) }
                                td title=(utc(p.last_ok)) { (ago(now, p.last_ok)) }
                                td { @if let Some(e) = &p.last_error { span.err title=(e.full) { (e.short) } } @else { span.mute { "—" } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::http::status::view::{DirectorStatus, ErrorText};

    fn view_with(name: &str) -> StatusView {
        let now = 1_800_000_000_000;
        StatusView {
            now,
            director: DirectorStatus {
                name: "director-a".into(),
                url: "http://director-a:8444".into(),
                version: "0.1.0",
                started_at: now - 3_600_000,
                instance: "u".into(),
                ready: true,
                not_ready: None,
                store_path: "/var/lib/skein".into(),
                schema_version: 1,
                ads_held: 1,
                directors_known: 2,
                forward_backlog: 0,
            },
            servers: vec![ServerRow {
                kind: ServerKind::Origin,
                name: name.into(),
                status: AdStatus::Ok,
                namespaces: vec!["/ns".into()],
                data_url: "http://o:1".into(),
                received_at: now - 12_000,
                expires_at: now + 14 * 60_000,
                generation: 7,
                version: "1.0".into(),
                health: None,
                downtime: None,
                provenance: "skein",
            }],
            peers: vec![PeerRow {
                url: "http://director-b:8444".into(),
                name: None,
                version: None,
                reachable: false,
                in_sync: Some(false),
                backlog: 3,
                last_ok: 0,
                last_error: Some(ErrorText::of("connection refused <&>".into())),
            }],
        }
    }

    #[test]
    fn ad_content_is_escaped_and_times_are_human() {
        let html = render(&view_with("<script>alert(1)</script>")).into_string();
        assert!(!html.contains("<script>"), "unescaped name in page");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("connection refused &lt;&amp;&gt;"));
        for needle in [
            "12 s ago",
            "in 14 min",
            "1 h",
            "never",
            "behind",
            "/metrics",
        ] {
            assert!(html.contains(needle), "{needle} missing");
        }
    }
}
