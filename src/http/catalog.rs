//! What the federation serves, for clients and monitors: namespace listings (Pelican's v2
//! and the v1 shape older clients read) and Prometheus HTTP service discovery.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::ad::{AdStatus, NamespaceAd, ServerKind};
use crate::routing::Purpose;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v2.0/director/listNamespaces", get(list_namespaces))
        .route("/api/v1.0/director/listNamespaces", get(list_namespaces_v1))
        .route("/api/v1.0/director/discoverServers", get(discover_servers))
}

/// Every namespace served, as the serving origin advertises it (a cache's copy if no
/// origin serves it).
fn namespaces(state: &AppState) -> Vec<NamespaceAd> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    view.namespaces(now)
        .into_iter()
        .filter_map(|prefix| view.route(&prefix, Purpose::Read, now).ok())
        .map(|route| route.namespace().clone())
        .collect()
}

async fn list_namespaces(State(state): State<Arc<AppState>>) -> Json<Vec<NamespaceAd>> {
    Json(namespaces(&state))
}

/// Pelican's v1 namespace entry (`NamespaceAdV1`): one per namespace and issuer base path.
#[derive(Debug, Serialize, PartialEq)]
struct NamespaceV1 {
    #[serde(rename = "requireToken")]
    require_token: bool,
    path: String,
    /// Go's `url.URL` as `encoding/json` writes it: an object, not a string.
    #[serde(rename = "url")]
    issuer: GoUrl,
    #[serde(rename = "maxScopeDepth")]
    max_scope_depth: u32,
    strategy: String,
    #[serde(rename = "basePath")]
    base_path: String,
    #[serde(rename = "vaultServer")]
    vault_server: String,
    dirlisthost: String,
}

/// The fields of Go's `net/url.URL`, so a Go client decoding v1 gets a usable URL.
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct GoUrl {
    scheme: String,
    opaque: String,
    user: Option<()>,
    host: String,
    path: String,
    raw_path: String,
    omit_host: bool,
    force_query: bool,
    raw_query: String,
    fragment: String,
    raw_fragment: String,
}

impl GoUrl {
    fn parse(text: &str) -> Self {
        let Ok(url) = reqwest::Url::parse(text) else {
            return Self {
                path: text.to_string(),
                ..Self::default()
            };
        };
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => String::new(),
        };
        Self {
            scheme: url.scheme().to_string(),
            host,
            path: url.path().trim_end_matches('/').to_string(),
            raw_query: url.query().unwrap_or_default().to_string(),
            fragment: url.fragment().unwrap_or_default().to_string(),
            ..Self::default()
        }
    }
}

/// Pelican's conversion from v2: an entry per issuer base path; none without issuers.
fn to_v1(namespace: &NamespaceAd) -> Vec<NamespaceV1> {
    let generation = namespace.generation.first();
    let entries: Vec<NamespaceV1> = namespace
        .issuers
        .iter()
        .flat_map(|issuer| {
            issuer.base_paths.iter().map(move |base| NamespaceV1 {
                require_token: !namespace.caps.public_reads,
                path: namespace.path.clone(),
                issuer: GoUrl::parse(&issuer.issuer_url),
                max_scope_depth: generation.map_or(0, |g| g.max_scope_depth),
                strategy: generation.map(|g| g.strategy.clone()).unwrap_or_default(),
                base_path: base.clone(),
                vault_server: String::new(),
                dirlisthost: String::new(),
            })
        })
        .collect();
    if !entries.is_empty() {
        return entries;
    }
    vec![NamespaceV1 {
        require_token: false,
        path: namespace.path.clone(),
        issuer: GoUrl::default(),
        max_scope_depth: 0,
        strategy: String::new(),
        base_path: String::new(),
        vault_server: String::new(),
        dirlisthost: String::new(),
    }]
}

/// `GET /api/v1.0/director/listNamespaces`: the v1 shape, with the deprecation warning
/// Pelican's director sends (Pelican itself no longer answers with data here).
async fn list_namespaces_v1(State(state): State<Arc<AppState>>) -> Response {
    let v1: Vec<NamespaceV1> = namespaces(&state).iter().flat_map(to_v1).collect();
    let mut response = Json(v1).into_response();
    response.headers_mut().insert(
        "warning",
        HeaderValue::from_static(
            "299 - \"Deprecated API: use GET /api/v2.0/director/listNamespaces\"",
        ),
    );
    response
}

/// One Prometheus HTTP service-discovery target group.
#[derive(Debug, Serialize)]
struct TargetGroup {
    targets: Vec<String>,
    labels: BTreeMap<&'static str, String>,
}

/// Pelican's spelling of a server type in discovery labels.
fn pelican_type(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Origin => "Origin",
        ServerKind::Cache => "Cache",
        ServerKind::Director => "Director",
        ServerKind::Downtime => "Downtime",
        ServerKind::Ban => "Ban",
    }
}

/// `host:port` of a web URL (the scheme's default port when none is written).
fn scrape_target(web_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(web_url).ok()?;
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// `GET /api/v1.0/director/discoverServers`: every live origin and cache as a
/// Prometheus `http_sd_configs` target (its web URL), labelled as Pelican labels them.
async fn discover_servers(State(state): State<Arc<AppState>>) -> Json<Vec<TargetGroup>> {
    let now = state.ledger.clock().now_ms();
    let view = state.ledger.view();
    let mut ads: Vec<_> = view
        .ads()
        .filter(|a| a.ad.kind != ServerKind::Director)
        .filter(|a| a.ad.status == AdStatus::Ok && a.expires_at > now)
        .collect();
    ads.sort_by_key(|a| a.ad.key());
    let locations = state.geo.servers().load();
    let groups = ads
        .into_iter()
        .filter_map(|a| {
            let target = scrape_target(&a.ad.web_url)?;
            // Pelican writes `%.4f` of the location it uses (0 when unknown).
            let at = crate::geo::servers::location_of(&locations, &a.ad).map(|l| l.location);
            let (lat, long) = at.map_or((0.0, 0.0), |c| (c.lat, c.lon));
            let labels = BTreeMap::from([
                ("server_type", pelican_type(a.ad.kind).to_string()),
                ("server_name", a.ad.name.clone()),
                ("server_auth_url", a.ad.data_url.clone()),
                ("server_url", a.ad.data_url.clone()),
                ("server_web_url", a.ad.web_url.clone()),
                ("server_lat", format!("{lat:.4}")),
                ("server_long", format!("{long:.4}")),
            ]);
            Some(TargetGroup {
                targets: vec![target],
                labels,
            })
        })
        .collect();
    Json(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{Capabilities, TokenGeneration, TokenIssuer};

    #[test]
    fn v1_has_one_entry_per_issuer_base_path_and_go_urls() {
        let ns = NamespaceAd {
            path: "/ligo".into(),
            caps: Capabilities::default(),
            issuers: vec![TokenIssuer {
                issuer_url: "https://issuer.example:8443/ligo".into(),
                base_paths: vec!["/ligo".into(), "/ligo2".into()],
            }],
            generation: vec![TokenGeneration {
                strategy: "OAuth2".into(),
                max_scope_depth: 3,
                issuer: String::new(),
            }],
        };
        let v1 = to_v1(&ns);
        assert_eq!(v1.len(), 2);
        assert!(v1[0].require_token);
        assert_eq!(v1[1].base_path, "/ligo2");
        let json = serde_json::to_value(&v1[0]).unwrap();
        assert_eq!(json["url"]["Scheme"], "https");
        assert_eq!(json["url"]["Host"], "issuer.example:8443");
        assert_eq!(json["url"]["Path"], "/ligo");
        assert_eq!(json["maxScopeDepth"], 3);
        assert_eq!(json["strategy"], "OAuth2");
        let public = NamespaceAd {
            issuers: vec![],
            ..ns
        };
        assert_eq!(to_v1(&public)[0].path, "/ligo");
        assert!(!to_v1(&public)[0].require_token);
    }

    #[test]
    fn scrape_targets_always_carry_a_port() {
        assert_eq!(
            scrape_target("https://cache.example").as_deref(),
            Some("cache.example:443")
        );
        assert_eq!(
            scrape_target("http://o.example:8444/x").as_deref(),
            Some("o.example:8444")
        );
        assert_eq!(scrape_target(""), None);
    }
}
