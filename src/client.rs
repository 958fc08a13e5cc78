//! The typed HTTP client used by services, the CLI, peers and tests.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::ad::{AdKey, SignedAd, page};
use crate::wire::{
    AdListing, DigestAnswer, DigestEntry, DirectorInfo, ErrorBody, FederationDiscovery,
    FetchRequest, ForwardResult, OfferAnswer, RegisterResponse,
};

/// The header a director sets when forwarding, naming itself.
pub const FORWARDED_BY: &str = "x-skein-forwarded-by";

/// How long an idle pooled connection is kept. A director's `limits.idle_timeout`
/// (60 s by default) is longer, so a Skein client drops an idle connection before the
/// server closes it; a request that still meets a connection closing under it is
/// retried once on a fresh one (see [`is_stale_connection`]).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, timed out, or the body did not arrive.
    #[error("{url}: {message}")]
    Transport {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error.
    #[error("{url}: {status}: {detail}")]
    Status {
        /// The URL asked.
        url: String,
        /// Status code.
        status: u16,
        /// The server's explanation.
        detail: String,
    },
    /// The link to this URL is cut by fault injection (tests).
    #[error("{0}: link cut (fault injection)")]
    Cut(String),
    /// The CA bundle could not be read.
    #[error("CA bundle {path}: {message}")]
    CaBundle {
        /// Bundle path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status, if the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True if the server answered and refused the request itself (a 4xx other than
    /// timeout or rate limiting): repeating the same request cannot succeed.
    pub fn is_definitive_refusal(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// Outgoing links to cut, for partition tests.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    cut: Arc<RwLock<HashSet<String>>>,
}

impl Faults {
    /// Makes every request to URLs starting with `base` fail.
    pub fn cut(&self, base: &str) {
        self.cut
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.trim_end_matches('/').to_string());
    }

    /// Restores the link to `base`.
    pub fn heal(&self, base: &str) {
        self.cut
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(base.trim_end_matches('/'));
    }

    fn is_cut(&self, url: &str) -> bool {
        let cut = self.cut.read().unwrap_or_else(|e| e.into_inner());
        !cut.is_empty()
            && cut.iter().any(|base| {
                url.strip_prefix(base.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

/// A client for directors and discovery servers.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    faults: Faults,
}

/// How a director answered a redirect request.
#[derive(Debug, Clone)]
pub struct Located {
    /// HTTP status (307 normally).
    pub status: u16,
    /// The `Location` header.
    pub location: Option<String>,
    /// URLs from the `Link` header, in priority order.
    pub links: Vec<String>,
    /// The `X-Pelican-Namespace` header.
    pub namespace: Option<String>,
}

impl Client {
    /// A client with `timeout` per request and an optional extra CA bundle (PEM).
    pub fn new(timeout: Duration, ca_bundle: Option<&Path>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(crate::names::Resolver))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("skein/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let mut roots = Vec::new();
        if let Some(path) = ca_bundle {
            roots.extend(pem_bundle(path)?);
        }
        roots.extend(env_roots(
            std::env::var_os("SSL_CERT_FILE").as_deref(),
            std::env::var_os("SSL_CERT_DIR").as_deref(),
        )?);
        for cert in roots {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| ClientError::Transport {
            url: String::new(),
            message: e.to_string(),
        })?;
        Ok(Self {
            http,
            faults: Faults::default(),
        })
    }

    /// The same client with a fault-injection handle (tests).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The underlying reqwest client (downloads).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn check(&self, url: &str) -> Result<(), ClientError> {
        if self.faults.is_cut(url) {
            Err(ClientError::Cut(url.to_string()))
        } else {
            Ok(())
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.send_for_bytes(url, request).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport {
            url: url.to_string(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// Sends `request` and returns a successful answer's `Content-Type` and body (an
    /// error status becomes [`ClientError::Status`]).
    async fn send_for_bytes(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(Option<reqwest::header::HeaderValue>, axum::body::Bytes), ClientError> {
        self.check(url)?;
        let transport = |e: reqwest::Error| ClientError::Transport {
            url: url.to_string(),
            message: error_chain(&e),
        };
        let response = send_retrying_stale(request).await.map_err(transport)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .cloned();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| format!("{}: {}", b.error, b.detail))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(ClientError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                detail,
            });
        }
        Ok((content_type, bytes))
    }

    /// `?explain` for `path` (already encoded) at `director`: why a client goes where it
    /// goes (see `docs/interface.md`), as the director's JSON.
    pub async fn explain(
        &self,
        method: reqwest::Method,
        director: &str,
        path: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{}?explain", director.trim_end_matches('/'), path);
        self.send(&url, self.http.request(method, &url)).await
    }

    /// `GET url` and parses the JSON answer (an error status becomes [`ClientError::Status`]).
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, ClientError> {
        self.send(url, self.http.get(url)).await
    }

    /// Fetches a federation discovery document from `base` (a director or metadata server).
    pub async fn discovery(&self, base: &str) -> Result<FederationDiscovery, ClientError> {
        let url = format!(
            "{}/.well-known/pelican-configuration",
            base.trim_end_matches('/')
        );
        self.send(&url, self.http.get(&url)).await
    }

    /// The directors `director` knows.
    pub async fn directors(&self, director: &str) -> Result<Vec<DirectorInfo>, ClientError> {
        let url = format!(
            "{}/api/v1.0/director/directors",
            director.trim_end_matches('/')
        );
        self.send(&url, self.http.get(&url)).await
    }

    /// The director ad `director` signed for itself (how a candidate is verified).
    pub async fn director_self(&self, director: &str) -> Result<SignedAd, ClientError> {
        let url = format!("{}/api/v1.0/director/self", director.trim_end_matches('/'));
        self.send(&url, self.http.get(&url)).await
    }

    /// The live ads `director` holds.
    pub async fn ads(&self, director: &str) -> Result<Vec<AdListing>, ClientError> {
        const PAGE: usize = 5_000;
        let base = format!("{}/api/v1.0/director/ads", director.trim_end_matches('/'));
        let mut all: Vec<AdListing> = Vec::new();
        loop {
            let mut url = format!("{base}?limit={PAGE}");
            if let Some(last) = all.last() {
                let cursor = last.signed.ad.key().to_string();
                url.push_str("&after=");
                url.extend(percent_encoding::utf8_percent_encode(
                    &cursor,
                    percent_encoding::NON_ALPHANUMERIC,
                ));
            }
            let page: Vec<AdListing> = self.send(&url, self.http.get(&url)).await?;
            let done = page.len() < PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Registers a service's ad with `director`.
    pub async fn register(
        &self,
        director: &str,
        ad: &SignedAd,
    ) -> Result<RegisterResponse, ClientError> {
        let endpoint = match ad.ad.kind {
            crate::ad::ServerKind::Cache => "registerCache",
            crate::ad::ServerKind::Origin => "registerOrigin",
            crate::ad::ServerKind::Director => "forward",
            crate::ad::ServerKind::Downtime | crate::ad::ServerKind::Ban => "records",
        };
        let url = format!(
            "{}/api/v1.0/director/{endpoint}",
            director.trim_end_matches('/')
        );
        self.send(&url, self.http.post(&url).json(ad)).await
    }

    /// POSTs a Pelican ad with its advertise token, as a Pelican server does; returns
    /// `accepted` for a 2xx (Pelican answers `{"status":"success"}`).
    pub async fn register_pelican(
        &self,
        director: &str,
        kind: crate::ad::ServerKind,
        ad: &crate::pelican::wire::OriginAdvertise,
        token: &str,
    ) -> Result<String, ClientError> {
        let endpoint = match kind {
            crate::ad::ServerKind::Cache => "registerCache",
            _ => "registerOrigin",
        };
        let url = format!(
            "{}/api/v1.0/director/{endpoint}",
            director.trim_end_matches('/')
        );
        let request = self.http.post(&url).bearer_auth(token).json(ad);
        let _: serde_json::Value = self.send(&url, request).await?;
        Ok("accepted".to_string())
    }

    /// Forwards an ad to a peer director, naming the sender.
    pub async fn forward(
        &self,
        peer: &str,
        ad: &SignedAd,
        from: &str,
    ) -> Result<RegisterResponse, ClientError> {
        let url = format!("{}/api/v1.0/director/forward", peer.trim_end_matches('/'));
        self.send(
            &url,
            self.http.post(&url).header(FORWARDED_BY, from).json(ad),
        )
        .await
    }

    /// Forwards a batch of ads to a peer; one result per ad, in order.
    pub async fn forward_batch(
        &self,
        peer: &str,
        ads: &[SignedAd],
        from: &str,
    ) -> Result<Vec<ForwardResult>, ClientError> {
        let url = format!("{}/api/v1.0/director/forward", peer.trim_end_matches('/'));
        self.send(
            &url,
            self.http.post(&url).header(FORWARDED_BY, from).json(ads),
        )
        .await
    }

    /// Forwards an already encoded JSON array of signed ads to a peer.
    pub async fn forward_encoded(
        &self,
        peer: &str,
        body: Vec<u8>,
        from: &str,
    ) -> Result<Vec<ForwardResult>, ClientError> {
        let url = format!("{}/api/v1.0/director/forward", peer.trim_end_matches('/'));
        let request = self
            .http
            .post(&url)
            .header(FORWARDED_BY, from)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(&url, request).await
    }

    /// Offers a peer the versions of ads this director would forward; the answer names
    /// (by index) the ones the peer lacks, which are then forwarded in full.
    pub async fn offer(
        &self,
        peer: &str,
        entries: &[DigestEntry],
        from: &str,
    ) -> Result<OfferAnswer, ClientError> {
        let url = format!(
            "{}/api/v1.0/director/forward/offer",
            peer.trim_end_matches('/')
        );
        self.send(
            &url,
            self.http
                .post(&url)
                .header(FORWARDED_BY, from)
                .json(entries),
        )
        .await
    }

    /// A peer's digest: which version of each ad it holds.
    pub async fn digest(&self, peer: &str) -> Result<Vec<DigestEntry>, ClientError> {
        let url = format!("{}/api/v1.0/director/digest", peer.trim_end_matches('/'));
        self.send(&url, self.http.get(&url)).await
    }

    /// Asks a peer for its bucketed digest summary (a director from before bucketed
    /// digests answers its full list instead).
    pub async fn digest_summary(&self, peer: &str) -> Result<DigestAnswer, ClientError> {
        let url = format!(
            "{}/api/v1.0/director/digest?buckets={}",
            peer.trim_end_matches('/'),
            crate::replication::digest::BUCKETS
        );
        self.send(&url, self.http.get(&url)).await
    }

    /// The digest entries a peer holds in `buckets`.
    pub async fn digest_buckets(
        &self,
        peer: &str,
        buckets: &[usize],
    ) -> Result<Vec<DigestEntry>, ClientError> {
        let only: Vec<String> = buckets.iter().map(usize::to_string).collect();
        let url = format!(
            "{}/api/v1.0/director/digest?buckets={}&only={}",
            peer.trim_end_matches('/'),
            crate::replication::digest::BUCKETS,
            only.join(",")
        );
        self.send(&url, self.http.get(&url)).await
    }

    /// Fetches the signed ads for `keys` from a peer: as a binary page when the peer
    /// answers with one ([`page::MEDIA_TYPE`]), else as JSON.
    pub async fn fetch(&self, peer: &str, keys: Vec<AdKey>) -> Result<Vec<SignedAd>, ClientError> {
        let url = format!("{}/api/v1.0/director/ads/fetch", peer.trim_end_matches('/'));
        let asked = keys.len();
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, page::ACCEPT)
            .json(&FetchRequest { keys });
        let (content_type, bytes) = self.send_for_bytes(&url, request).await?;
        let unexpected = |message: String| ClientError::Transport {
            url: url.clone(),
            message: format!("unexpected answer: {message}"),
        };
        if content_type.is_some_and(|t| t.as_bytes() == page::MEDIA_TYPE.as_bytes()) {
            return page::decode(&bytes, asked).map_err(|e| unexpected(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| unexpected(e.to_string()))
    }

    /// True if the director at `base` answers `/ready` with 200.
    pub async fn ready(&self, base: &str) -> Result<bool, ClientError> {
        let url = format!("{}/ready", base.trim_end_matches('/'));
        self.check(&url)?;
        let response = send_retrying_stale(self.http.get(&url))
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: error_chain(&e),
            })?;
        Ok(response.status() == StatusCode::OK)
    }

    /// Asks `director` where a GET of `path` goes (does not follow the redirect).
    pub async fn locate(&self, director: &str, path: &str) -> Result<Located, ClientError> {
        self.locate_with(reqwest::Method::GET, director, path).await
    }

    /// Asks `director` where `method` on `path` goes (does not follow the redirect).
    pub async fn locate_with(
        &self,
        method: reqwest::Method,
        director: &str,
        path: &str,
    ) -> Result<Located, ClientError> {
        self.locate_as(method, director, path, None).await
    }

    /// [`Client::locate_with`], sending `token` as `Authorization: Bearer` (as Pelican's
    /// client does for namespaces that need one).
    pub async fn locate_as(
        &self,
        method: reqwest::Method,
        director: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<Located, ClientError> {
        let url = format!("{}{}", director.trim_end_matches('/'), path);
        self.check(&url)?;
        let mut request = self.http.request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = send_retrying_stale(request)
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: error_chain(&e),
            })?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let location = header("location");
        let namespace = header("x-pelican-namespace");
        let links = header("link")
            .map(|l| parse_link_urls(&l))
            .unwrap_or_default();
        if status == StatusCode::TEMPORARY_REDIRECT || status == StatusCode::OK {
            return Ok(Located {
                status: status.as_u16(),
                location,
                links,
                namespace,
            });
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let detail = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| format!("{}: {}", b.error, b.detail))
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        Err(ClientError::Status {
            url,
            status: status.as_u16(),
            detail,
        })
    }
}

/// Sends `request`; if it fails because the (pooled, idle) connection it went out on
/// was being closed by the server, sends it once more, which takes a fresh connection.
/// Every request Skein sends may be repeated: reads are reads, and an ad posted twice
/// is answered `duplicate` the second time (the total order makes ingest idempotent).
pub async fn send_retrying_stale(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let again = request.try_clone();
    match request.send().await {
        Err(error) if is_stale_connection(&error) => match again {
            Some(again) => {
                tracing::debug!(error = %error_chain(&error), "connection closed under a request; retrying once");
                again.send().await
            }
            None => Err(error),
        },
        result => result,
    }
}

/// True if `error` says the connection closed or reset before an answer came, the
/// signature of a request sent on a keep-alive connection the server was closing.
/// A refused connection or a timeout is not: nothing was closed under the request.
pub fn is_stale_connection(error: &reqwest::Error) -> bool {
    if error.is_timeout() || error.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled())
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Every certificate of a PEM file; an error if there is none.
fn pem_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let err = |message: String| ClientError::CaBundle {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

/// Roots named the way OpenSSL, Go's and Python's Pelican clients read them, trusted
/// besides the built-in ones: `SSL_CERT_FILE` (a PEM bundle; unreadable is an error, as
/// the user asked for it) and `SSL_CERT_DIR` (`:`-separated directories whose PEM files
/// are read; other files, such as hash links to non-certificates, are skipped).
fn env_roots(
    file: Option<&std::ffi::OsStr>,
    dirs: Option<&std::ffi::OsStr>,
) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let mut roots = Vec::new();
    if let Some(file) = file.filter(|f| !f.is_empty()) {
        roots.extend(pem_bundle(Path::new(file))?);
    }
    for dir in dirs.into_iter().flat_map(std::env::split_paths) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            tracing::debug!(dir = %dir.display(), "SSL_CERT_DIR entry is not a readable directory");
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().is_file() {
                roots.extend(pem_bundle(&entry.path()).unwrap_or_default());
            }
        }
    }
    Ok(roots)
}

/// The URLs of a `Link` header, ordered by `pri` (as Pelican's client reads them).
pub fn parse_link_urls(header: &str) -> Vec<String> {
    let mut entries: Vec<(u32, String)> = header
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let url = parts
                .next()?
                .strip_prefix('<')?
                .strip_suffix('>')?
                .to_string();
            let pri = parts
                .find_map(|p| p.strip_prefix("pri="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(u32::MAX);
            Some((pri, url))
        })
        .collect();
    entries.sort_by_key(|(pri, _)| *pri);
    entries.into_iter().map(|(_, url)| url).collect()
}

/// A reqwest error with its causes, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer from before binary pages answers JSON whatever `Accept` says; a fetch
    /// reads that too.
    #[tokio::test]
    async fn a_fetch_reads_a_json_answer_from_a_peer_without_binary_pages() {
        use crate::ad::ServerKind;
        let ad = crate::fixtures::ad("origin-1", ServerKind::Origin, &["/ns"], 1_000, 2)
            .sign(&crate::fixtures::key_for("origin-1"));
        let answer = vec![ad.clone()];
        let app = axum::Router::new().route(
            "/api/v1.0/director/ads/fetch",
            axum::routing::post(move || async move { axum::Json(answer) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(Duration::from_secs(5), None).unwrap();
        let fetched = client.fetch(&url, vec![ad.ad.key()]).await.unwrap();
        assert_eq!(fetched, vec![ad]);
        server.abort();
    }

    #[test]
    fn link_header_is_read_in_priority_order() {
        let header = r#"<http://b/x>; rel="duplicate"; pri=2; depth=1, <http://a/x>; rel="duplicate"; pri=1; depth=1"#;
        assert_eq!(parse_link_urls(header), vec!["http://a/x", "http://b/x"]);
    }

    #[test]
    fn ssl_cert_file_and_dir_add_roots() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let pem = cert.cert.pem();
        std::fs::write(dir.path().join("one.pem"), &pem).unwrap();
        std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
        let file = dir.path().join("one.pem");
        assert_eq!(env_roots(Some(file.as_os_str()), None).unwrap().len(), 1);
        let dirs = std::env::join_paths([dir.path(), Path::new("/nonexistent")]).unwrap();
        assert_eq!(env_roots(None, Some(&dirs)).unwrap().len(), 1);
        let missing = dir.path().join("missing.pem");
        let err = env_roots(Some(missing.as_os_str()), None).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        assert!(env_roots(None, None).unwrap().is_empty());
    }

    #[test]
    fn faults_cut_by_prefix() {
        let faults = Faults::default();
        faults.cut("http://127.0.0.1:9/");
        assert!(faults.is_cut("http://127.0.0.1:9/api"));
        assert!(!faults.is_cut("http://127.0.0.1:90/api"));
        faults.heal("http://127.0.0.1:9");
        assert!(!faults.is_cut("http://127.0.0.1:9/api"));
    }
}
