//! A cache miss, upstream: ask the directors where the object's origin is, then
//! download it from the first origin that has it into the cache directory.

use std::path::Path;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};

use super::files::{self, FileError};
use super::origin::LISTING_HEADER;
use crate::client::{Client, ClientError};
use crate::discovery::discover_directors;
use crate::http::ApiError;
use crate::paths::encode_path;

const ORIGIN_API: &str = "/api/v1.0/director/origin";

/// Why a miss could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Directors know no origin for it, or every origin answered 404.
    #[error("{0}")]
    NotFound(String),
    /// No director or origin answered usefully.
    #[error("{0}")]
    Unavailable(String),
    /// Storing it failed.
    #[error(transparent)]
    File(#[from] FileError),
}

impl From<FetchError> for ApiError {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::NotFound(detail) => ApiError::not_found(detail),
            FetchError::Unavailable(detail) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", detail)
            }
            FetchError::File(FileError::Truncated { expected, received }) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the origin sent {received} of {expected} bytes"),
            ),
            FetchError::File(FileError::Body(detail)) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", detail)
            }
            FetchError::File(e) => e.into(),
        }
    }
}

/// What came back from an origin.
pub enum Fetched {
    /// Stored in the cache.
    Stored,
    /// A directory listing: passed through, never cached.
    Listing(Bytes),
}

/// The origin URLs for `path`, best first, from the first director that answers.
pub async fn origin_urls(
    client: &Client,
    federation: Option<&str>,
    seeds: &[String],
    path: &str,
) -> Result<Vec<String>, FetchError> {
    let directors = discover_directors(client, federation, seeds).await;
    let api_path = format!("{ORIGIN_API}{}", encode_path(path));
    let mut not_found = None;
    let mut last = String::from("no director is known");
    for director in &directors {
        match client
            .locate_with(reqwest::Method::GET, director, &api_path)
            .await
        {
            Ok(located) => {
                let mut urls: Vec<String> = located.location.into_iter().collect();
                for link in located.links {
                    if !urls.contains(&link) {
                        urls.push(link);
                    }
                }
                if !urls.is_empty() {
                    return Ok(urls);
                }
                last = format!("{director} named no origin for {path}");
            }
            Err(ClientError::Status { status, detail, .. }) if status == 404 || status == 405 => {
                not_found = Some(detail);
            }
            Err(error) => {
                tracing::debug!(%director, %error, "director unavailable; trying the next");
                last = error.to_string();
            }
        }
    }
    Err(match not_found {
        Some(detail) => FetchError::NotFound(detail),
        None => FetchError::Unavailable(last),
    })
}

/// The outcome of trying origins one after another.
struct Attempts {
    not_found: Option<String>,
    last: String,
}

impl Attempts {
    fn new() -> Self {
        Self {
            not_found: None,
            last: String::from("no origin URL"),
        }
    }

    /// Sends `request` to `url`: the response if `usable(status)`, else `None` with the
    /// failure noted (a 404 as not found, anything else as unavailable).
    async fn send(
        &mut self,
        url: &str,
        request: reqwest::RequestBuilder,
        usable: impl Fn(reqwest::StatusCode) -> bool,
    ) -> Option<reqwest::Response> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%url, error = %crate::client::error_chain(&error), "origin unavailable; trying the next");
                self.last = format!("{url}: {error}");
                return None;
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            self.not_found = Some(format!("{url}: not found"));
            return None;
        }
        if !usable(status) {
            self.last = format!("{url}: HTTP {status}");
            return None;
        }
        Some(response)
    }

    fn failed(self) -> FetchError {
        match self.not_found {
            Some(detail) => FetchError::NotFound(detail),
            None => FetchError::Unavailable(self.last),
        }
    }
}

/// Downloads from the first of `urls` that has the object into `root/rel`.
pub async fn download(
    client: &Client,
    urls: &[String],
    root: &Path,
    rel: &Path,
) -> Result<Fetched, FetchError> {
    let mut attempts = Attempts::new();
    for url in urls {
        let request = client.http().get(url);
        let Some(response) = attempts
            .send(url, request, |s| s == reqwest::StatusCode::OK)
            .await
        else {
            continue;
        };
        if response.headers().contains_key(LISTING_HEADER) {
            return match response.bytes().await {
                Ok(bytes) => Ok(Fetched::Listing(bytes)),
                Err(error) => Err(FetchError::Unavailable(format!("{url}: {error}"))),
            };
        }
        let expected = response.content_length();
        match files::write_atomic(root, rel, response.bytes_stream(), expected, u64::MAX).await {
            Ok((_, size)) => {
                tracing::info!(%url, size, "filled from origin");
                return Ok(Fetched::Stored);
            }
            Err(error @ (FileError::Body(_) | FileError::Truncated { .. })) => {
                tracing::warn!(%url, %error, "download broke off; trying the next origin");
                attempts.last = format!("{url}: {error}");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(attempts.failed())
}

/// Relays a `GET` or `HEAD` to the first of `urls` that answers with anything but a 404 or
/// a server error, sending `forward` (the client's token, `Range`) along, and streams the
/// answer back as it comes: nothing is stored. Used for namespaces that need tokens.
pub async fn relay(
    client: &Client,
    urls: &[String],
    method: &axum::http::Method,
    forward: &axum::http::HeaderMap,
) -> Result<axum::response::Response, FetchError> {
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
        .map_err(|e| FetchError::Unavailable(e.to_string()))?;
    let mut attempts = Attempts::new();
    for url in urls {
        let request = client
            .http()
            .request(method.clone(), url)
            .headers(forward.clone());
        let Some(response) = attempts.send(url, request, |s| !s.is_server_error()).await else {
            continue;
        };
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut builder = axum::response::Response::builder().status(status);
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::WWW_AUTHENTICATE,
        ] {
            if let Some(value) = response.headers().get(&name) {
                builder = builder.header(name, value.clone());
            }
        }
        let body = axum::body::Body::from_stream(response.bytes_stream());
        return builder
            .body(body)
            .map_err(|e| FetchError::Unavailable(format!("{url}: {e}")));
    }
    Err(attempts.failed())
}

/// Relays `PROPFIND` to the first of `urls` that answers it: its status (`207`, or a
/// `4xx` other than 404 such as listings refused), content type and body.
pub async fn propfind(
    client: &Client,
    urls: &[String],
    depth: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
) -> Result<(StatusCode, Option<HeaderValue>, Bytes), FetchError> {
    let method = reqwest::Method::from_bytes(super::webdav::PROPFIND.as_bytes())
        .map_err(|e| FetchError::Unavailable(e.to_string()))?;
    let mut attempts = Attempts::new();
    for url in urls {
        let mut request = client.http().request(method.clone(), url);
        if let Some(depth) = &depth {
            request = request.header("depth", depth.clone());
        }
        if let Some(authorization) = &authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let Some(response) = attempts.send(url, request, |s| !s.is_server_error()).await else {
            continue;
        };
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return match response.bytes().await {
            Ok(body) => Ok((status, content_type, body)),
            Err(error) => Err(FetchError::Unavailable(format!("{url}: {error}"))),
        };
    }
    Err(attempts.failed())
}
