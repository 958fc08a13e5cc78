//! `skein cache`: serves objects from `cache_dir`, filling misses from origins found
//! through the directors, and advertises itself.
//!
//! Object `/<namespace>/<rest>` is stored at `<cache_dir>/<namespace>/<rest>`. A miss
//! asks the directors (`/api/v1.0/director/origin/...`, failing over) for origins,
//! downloads into a uniquely named temp file, checks the length, renames it into place
//! and serves it from disk. Concurrent misses for one object wait for the first
//! download instead of fetching again. A hit never touches the network, so the cache
//! keeps serving what it holds when origins or directors are gone. Every response
//! carries `X-Cache: HIT` or `MISS`; directory listings are passed through uncached.
//! `PROPFIND` (WebDAV stat/listing, which Pelican clients send to caches for `exists`
//! and `info`) is answered from disk for a cached object and relayed to the origin
//! otherwise. Caches take no writes (405).
//!
//! Namespaces without `public_reads` are never stored: the cache cannot check tokens
//! itself, so every `GET`/`HEAD`/`PROPFIND` there is relayed to the origin with the
//! client's bearer token (and `Range`), and the origin's answer, 401/403 included, is
//! streamed back (`X-Cache: MISS`). Without a token the cache answers 401 itself.
//! Objects are treated as immutable (as in Pelican): a cached copy is never revalidated;
//! delete it from `cache_dir` to refetch. A request with `Cache-Control: only-if-cached`
//! is answered from disk or `504`, never fetched (directors ask so for `?prefercached`).
//! `GET /api/v1.0/health` answers 503 while `cache_dir` is not writable, so directors
//! route elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::fetch::{self, Fetched};
use super::files::{self, FileError};
use super::origin::LISTING_HEADER;
use super::webdav;
use super::{ServerError, ServerHandle, launch, namespace_of};
use crate::client::Client;
use crate::config::{NamespaceConfig, ServiceConfig};
use crate::http::ApiError;
use crate::paths::parse_object_path;
use crate::scitokens::{TokenError, bearer};

/// A running cache.
pub type CacheHandle = ServerHandle;

/// The response header saying whether the object came from disk.
pub const X_CACHE: &str = "x-cache";

/// Per-request timeout towards directors.
const DIRECTOR_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-download timeout towards origins.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

type Inflight = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

struct Cache {
    root: PathBuf,
    namespaces: Vec<NamespaceConfig>,
    federation: Option<String>,
    directors: Vec<String>,
    control: Client,
    download: Client,
    inflight: Inflight,
}

impl Cache {
    /// The origin URLs for `path`, best first, from the directors.
    async fn origins(&self, path: &str) -> Result<Vec<String>, fetch::FetchError> {
        fetch::origin_urls(
            &self.control,
            self.federation.as_deref(),
            &self.directors,
            path,
        )
        .await
    }
}

/// Serves and advertises on an already bound listener until `cancel` (or
/// [`ServerHandle::shutdown`]).
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<CacheHandle, ServerError> {
    let dir = config
        .cache_dir
        .clone()
        .ok_or_else(|| ServerError::Config("cache_dir: missing".into()))?;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ServerError::io(format!("cache_dir {}", dir.display())))?;
    let root = tokio::fs::canonicalize(&dir)
        .await
        .map_err(ServerError::io(format!("cache_dir {}", dir.display())))?;
    let ca = config.ca_bundle.as_deref();
    let state = Arc::new(Cache {
        root,
        namespaces: config.namespaces.clone(),
        federation: config.federation.clone(),
        directors: config.directors.clone(),
        control: Client::new(DIRECTOR_TIMEOUT, ca)?,
        download: Client::new(DOWNLOAD_TIMEOUT, ca)?,
        inflight: Mutex::default(),
    });
    let app = Router::new()
        .route(super::HEALTH_PATH, axum::routing::get(health))
        .fallback(handle)
        .with_state(state);
    launch(config, app, listener, cancel).await
}

/// Healthy while a file can be written to and removed from `cache_dir`.
async fn health(State(cache): State<Arc<Cache>>) -> Response {
    let probe = cache
        .root
        .join(format!(".skein-health-{}", uuid::Uuid::new_v4()));
    let written = async {
        tokio::fs::write(&probe, b"ok").await?;
        tokio::fs::remove_file(&probe).await
    }
    .await
    .map_err(|e| format!("cache_dir {} not writable: {e}", cache.root.display()));
    super::health_answer(written)
}

/// `Cache-Control: only-if-cached` (RFC 9111): answer from storage or 504, never fetch.
/// Directors send it to ask whether the cache holds an object.
fn only_if_cached(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
}

/// Binds `listen` and serves until `cancel`.
pub async fn run(config: ServiceConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    Ok(super::run_with(config, cancel, start).await?)
}

async fn handle(State(cache): State<Arc<Cache>>, request: Request) -> Response {
    match serve(&cache, request).await {
        Ok(response) => response,
        Err(error) => super::error_response(error),
    }
}

fn x_cache(hit: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        X_CACHE,
        HeaderValue::from_static(if hit { "HIT" } else { "MISS" }),
    );
    headers
}

async fn serve(cache: &Cache, request: Request) -> Result<Response, ApiError> {
    let method = request.method().clone();
    if method.as_str() == webdav::PROPFIND {
        return propfind(cache, request).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "read_only",
            format!("a cache does not accept {method}; write to an origin"),
        ));
    }
    let path = parse_object_path(request.uri().path())?;
    let Some(ns) = namespace_of(&cache.namespaces, &path) else {
        return Err(ApiError::not_found(format!(
            "this cache serves no namespace containing {path}"
        )));
    };
    let rel = files::relative(&path)?;
    let headers = request.headers();
    if !ns.public_reads {
        return pass_through(cache, &path, &method, headers, request.uri().query()).await;
    }
    if let Some(response) = hit(cache, &rel, &method, headers, true).await? {
        return Ok(response);
    }
    if only_if_cached(headers) {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "not_cached",
            format!("this cache does not hold {path}"),
        ));
    }
    let slot = {
        let mut inflight = cache.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.entry(path.clone()).or_default().clone()
    };
    let result = async {
        let _turn = slot.lock().await;
        // Another request may have filled it while this one waited.
        if let Some(response) = hit(cache, &rel, &method, headers, true).await? {
            return Ok(response);
        }
        miss(cache, &path, &rel, &method, headers).await
    }
    .await;
    {
        let mut inflight = cache.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // The map and this request hold the last two references: nobody else waits.
        if Arc::strong_count(&slot) <= 2 {
            inflight.remove(&path);
        }
    }
    result
}

/// The object from disk, if the cache holds it as a file.
async fn hit(
    cache: &Cache,
    rel: &Path,
    method: &Method,
    headers: &HeaderMap,
    is_hit: bool,
) -> Result<Option<Response>, ApiError> {
    match files::existing(&cache.root, rel).await {
        Ok((real, meta)) if meta.is_file() => Ok(Some(
            files::serve_file(&real, meta.len(), method, headers, x_cache(is_hit)).await,
        )),
        Ok(_) | Err(FileError::NotFound) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

async fn miss(
    cache: &Cache,
    path: &str,
    rel: &Path,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let urls = cache.origins(path).await?;
    match fetch::download(&cache.download, &urls, &cache.root, rel).await? {
        Fetched::Stored => hit(cache, rel, method, headers, false)
            .await?
            .ok_or_else(|| ApiError::from(FileError::NotFound)),
        Fetched::Listing(bytes) => {
            let mut extra = x_cache(false);
            extra.insert(LISTING_HEADER, HeaderValue::from_static("true"));
            extra.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok((StatusCode::OK, extra, bytes).into_response())
        }
    }
}

/// The `Authorization` header to send upstream: the client's token, which must exist.
fn upstream_token(request: &Request, path: &str) -> Result<HeaderValue, ApiError> {
    upstream_token_of(request.headers(), request.uri().query(), path)
}

fn upstream_token_of(
    headers: &HeaderMap,
    query: Option<&str>,
    path: &str,
) -> Result<HeaderValue, ApiError> {
    let token =
        bearer(headers, query).ok_or_else(|| TokenError::Missing(format!("reading {path}")))?;
    HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| ApiError::from(TokenError::Invalid("not a header value".into())))
}

/// A read in a namespace that needs tokens: relayed to the origin with the token.
async fn pass_through(
    cache: &Cache,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let mut forward = HeaderMap::new();
    forward.insert(
        header::AUTHORIZATION,
        upstream_token_of(headers, query, path)?,
    );
    if let Some(range) = headers.get(header::RANGE) {
        forward.insert(header::RANGE, range.clone());
    }
    let urls = cache.origins(path).await?;
    let mut response = fetch::relay(&cache.download, &urls, method, &forward).await?;
    response.headers_mut().extend(x_cache(false));
    Ok(response)
}

/// `PROPFIND`: a cached object is described from disk; anything else (directories,
/// objects not held) is asked of the origin and its `207` relayed uncached.
async fn propfind(cache: &Cache, request: Request) -> Result<Response, ApiError> {
    let path = parse_object_path(request.uri().path())?;
    let Some(ns) = namespace_of(&cache.namespaces, &path) else {
        return Err(ApiError::not_found(format!(
            "this cache serves no namespace containing {path}"
        )));
    };
    let rel = files::relative(&path)?;
    let authorization = if ns.public_reads {
        None
    } else {
        Some(upstream_token(&request, &path)?)
    };
    match files::existing(&cache.root, &rel).await {
        Ok((real, meta)) if meta.is_file() && authorization.is_none() => {
            let mut response =
                webdav::propfind(&cache.root, &real, &meta, &path, request.headers()).await?;
            response.headers_mut().extend(x_cache(true));
            return Ok(response);
        }
        Ok(_) | Err(FileError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    let urls = cache.origins(&path).await?;
    let depth = request.headers().get("depth").cloned();
    let (status, content_type, body) =
        fetch::propfind(&cache.control, &urls, depth, authorization).await?;
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response.headers_mut().extend(x_cache(false));
    Ok(response)
}
