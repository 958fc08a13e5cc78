//! The network side of the probes: `HEAD` a server's probe path, `HEAD` an object.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, HeaderValue};

use super::health::{Outcome, ProbeResult};
use super::schedule::Prober;
use crate::ad::ServerKind;
use crate::routing::signals::Presence;

/// Probes and presence checks over HTTP (one connection pool for both).
#[derive(Debug, Clone)]
pub struct HttpProber {
    http: reqwest::Client,
}

impl HttpProber {
    /// A prober using `http` (which carries the director's CA bundle).
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// Whether the server at `url` (an object URL) holds it. Origins: 2xx present, 404 or
    /// 410 absent. Caches are asked with `Cache-Control: only-if-cached` (RFC 9111: answer
    /// from storage or 504, never fetch): 2xx with `X-Cache: HIT` or a non-zero `Age`
    /// present, 504/404 or a 2xx that is neither absent. Anything else (403, 5xx, timeout)
    /// is unknown.
    pub async fn presence(
        &self,
        url: &str,
        kind: ServerKind,
        token: Option<&str>,
        timeout: Duration,
    ) -> Presence {
        let mut request = self.http.head(url).timeout(timeout);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if kind == ServerKind::Cache {
            request = request.header(CACHE_CONTROL, HeaderValue::from_static("only-if-cached"));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%url, error = %error, "presence check failed");
                return Presence::Unknown;
            }
        };
        let status = response.status();
        let held_locally = || {
            let headers = response.headers();
            let hit = headers
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("hit"));
            let aged = headers
                .get("age")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|age| age > 0);
            hit || aged
        };
        match (kind, status) {
            (_, StatusCode::NOT_FOUND | StatusCode::GONE) => Presence::Absent,
            (ServerKind::Cache, StatusCode::GATEWAY_TIMEOUT) => Presence::Absent,
            (ServerKind::Cache, s) if s.is_success() => {
                if held_locally() {
                    Presence::Present
                } else {
                    Presence::Absent
                }
            }
            (_, s) if s.is_success() => Presence::Present,
            _ => Presence::Unknown,
        }
    }
}

impl Prober for HttpProber {
    fn probe(&self, url: String) -> BoxFuture<'static, Outcome> {
        let http = self.http.clone();
        async move {
            let started = std::time::Instant::now();
            match http.head(&url).send().await {
                Ok(response) if response.status().is_server_error() => Outcome::failed(
                    ProbeResult::Status,
                    format!("answered {}", response.status()),
                ),
                Ok(_) => Outcome::ok(started.elapsed().as_secs_f64() * 1000.0),
                Err(error) if error.is_timeout() => {
                    Outcome::failed(ProbeResult::Timeout, crate::client::error_chain(&error))
                }
                Err(error) => {
                    Outcome::failed(ProbeResult::Unreachable, crate::client::error_chain(&error))
                }
            }
        }
        .boxed()
    }
}
