//! `skein origin`: serves the `export` directory under its namespaces and advertises itself.
//!
//! Every namespace maps onto the same directory: object `/<namespace>/<rest>` is the
//! file `<export>/<rest>` (so `/test/a.txt` is `<export>/a.txt`). With several
//! namespaces, each sees the whole export; give each origin one namespace to keep
//! them apart.
//!
//! - `GET`/`HEAD` a file: its bytes, with `Content-Length` and single-range support.
//! - `GET` a directory: a JSON array of `{name, size, is_dir}` if the namespace allows
//!   listings (`X-Skein-Listing: true`), else 403.
//! - `PROPFIND` (WebDAV, what Pelican clients list with): `207 Multi-Status` for a
//!   file or a directory and its children, if the namespace allows listings.
//! - `PUT`/`DELETE` when the namespace has `writes = true` (temp file + rename; 201
//!   created, 204 replaced or deleted), else 405. Uploads over `max_upload` get 413.
//!
//! Access is checked as a Pelican origin checks it ([`crate::scitokens`]): reads of a
//! namespace without `public_reads`, and every write, need a bearer token from one of
//! the namespace's issuers with a `storage.read` (reads), `storage.create` (new
//! objects) or `storage.modify` (overwrites, deletes) scope covering the path; 401 JSON
//! without a valid token, 403 when its scopes fall short. An origin whose namespace
//! needs tokens but names no issuer does not start.
//!
//! - `GET /api/v1.0/health`: 200 while the export can be listed, else 503 (directors
//!   probe it and route elsewhere meanwhile).
//!
//! Paths go through [`crate::paths::parse_object_path`]; symlinks leading outside the
//! export are refused. Every error is JSON `{error, detail}`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::files::{self, FileError};
use super::webdav;
use super::{ServerError, ServerHandle, launch, namespace_of};
use crate::config::{NamespaceConfig, ServiceConfig};
use crate::http::ApiError;
use crate::paths::parse_object_path;
use crate::scitokens::{Action, Authorizer, bearer};

/// A running origin.
pub type OriginHandle = ServerHandle;

/// Header marking a response as a directory listing (caches pass it through uncached).
pub const LISTING_HEADER: &str = "x-skein-listing";

struct Origin {
    root: PathBuf,
    namespaces: Vec<NamespaceConfig>,
    authz: Authorizer,
    max_upload: u64,
}

/// Serves and advertises on an already bound listener until `cancel` (or
/// [`ServerHandle::shutdown`]).
pub async fn start(
    config: ServiceConfig,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<OriginHandle, ServerError> {
    let export = config
        .export
        .clone()
        .ok_or_else(|| ServerError::Config("export: missing (the directory to serve)".into()))?;
    let root = tokio::fs::canonicalize(&export)
        .await
        .map_err(ServerError::io(format!("export {}", export.display())))?;
    if !root.is_dir() {
        return Err(ServerError::Config(format!(
            "export: {} is not a directory",
            export.display()
        )));
    }
    if let Some(ns) = config
        .namespaces
        .iter()
        .find(|ns| ns.needs_tokens() && ns.all_issuers().next().is_none())
    {
        return Err(ServerError::Config(format!(
            "namespace {}: writes and non-public reads need tokens, but it names no `issuer` (set issuer and jwks or jwks_url, or public_reads = true and writes = false)",
            ns.path
        )));
    }
    let state = Arc::new(Origin {
        root,
        namespaces: config.namespaces.clone(),
        authz: Authorizer::new(&config)?,
        max_upload: config.max_upload,
    });
    let app = Router::new()
        .route(super::HEALTH_PATH, axum::routing::get(health))
        .fallback(handle)
        .with_state(state);
    launch(config, app, listener, cancel).await
}

/// Healthy while the export directory can be listed.
async fn health(State(origin): State<Arc<Origin>>) -> Response {
    let readable = match tokio::fs::read_dir(&origin.root).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("export {} unreadable: {e}", origin.root.display())),
    };
    super::health_answer(readable)
}

/// Binds `listen` and serves until `cancel`.
pub async fn run(config: ServiceConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    Ok(super::run_with(config, cancel, start).await?)
}

async fn handle(State(origin): State<Arc<Origin>>, request: Request) -> Response {
    match serve(&origin, request).await {
        Ok(response) => response,
        Err(error) => super::error_response(error),
    }
}

async fn serve(origin: &Origin, request: Request) -> Result<Response, ApiError> {
    let method = request.method().clone();
    let path = parse_object_path(request.uri().path())?;
    let ns = namespace_of(&origin.namespaces, &path).ok_or_else(|| {
        ApiError::not_found(format!("this origin serves no namespace containing {path}"))
    })?;
    let rel = files::relative(&path[ns.path.len()..])?;
    let token = bearer(request.headers(), request.uri().query());
    let token = token.as_deref();
    let is_read =
        matches!(method, Method::GET | Method::HEAD) || method.as_str() == webdav::PROPFIND;
    if is_read {
        if !ns.reads && !ns.public_reads {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "no_reads",
                format!("namespace {} does not allow reads", ns.path),
            ));
        }
        if !ns.public_reads {
            origin
                .authz
                .check(&ns.path, &path, token, Action::Read)
                .await?;
        }
    }
    match method {
        Method::GET | Method::HEAD => read(origin, ns, &rel, &method, request.headers()).await,
        Method::PUT | Method::DELETE if !ns.writes => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "read_only",
            format!("namespace {} does not allow writes", ns.path),
        )),
        Method::PUT => {
            if rel.as_os_str().is_empty() {
                return Err(FileError::IsDirectory.into());
            }
            let exists = tokio::fs::symlink_metadata(origin.root.join(&rel))
                .await
                .is_ok();
            let action = if exists {
                Action::Modify
            } else {
                Action::Create
            };
            origin.authz.check(&ns.path, &path, token, action).await?;
            let expected: Option<u64> = request
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if expected.is_some_and(|n| n > origin.max_upload) {
                return Err(FileError::TooLarge(origin.max_upload).into());
            }
            let body = request.into_body().into_data_stream();
            let (created, size) =
                files::write_atomic(&origin.root, &rel, body, expected, origin.max_upload).await?;
            tracing::info!(%path, size, created, "stored");
            Ok(if created {
                StatusCode::CREATED
            } else {
                StatusCode::NO_CONTENT
            }
            .into_response())
        }
        Method::DELETE => {
            origin
                .authz
                .check(&ns.path, &path, token, Action::Modify)
                .await?;
            let (real, meta) = files::existing(&origin.root, &rel).await?;
            if meta.is_dir() {
                return Err(FileError::IsDirectory.into());
            }
            // Remove the link itself if the name is a symlink, never its target.
            let victim = if tokio::fs::symlink_metadata(origin.root.join(&rel))
                .await
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                origin.root.join(&rel)
            } else {
                real
            };
            tokio::fs::remove_file(&victim)
                .await
                .map_err(FileError::from)?;
            tracing::info!(%path, "deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ref m if m.as_str() == webdav::PROPFIND => {
            if !ns.listings {
                return Err(no_listings(ns));
            }
            let (real, meta) = files::existing(&origin.root, &rel).await?;
            Ok(webdav::propfind(&origin.root, &real, &meta, &path, request.headers()).await?)
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not supported"),
        )),
    }
}

fn no_listings(ns: &NamespaceConfig) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "no_listings",
        format!("namespace {} does not allow listings", ns.path),
    )
}

async fn read(
    origin: &Origin,
    ns: &NamespaceConfig,
    rel: &std::path::Path,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (real, meta) = files::existing(&origin.root, rel).await?;
    if meta.is_dir() {
        if !ns.listings {
            return Err(no_listings(ns));
        }
        let entries = files::list(&origin.root, &real).await?;
        let mut response = Json(entries).into_response();
        response
            .headers_mut()
            .insert(LISTING_HEADER, HeaderValue::from_static("true"));
        return Ok(response);
    }
    Ok(files::serve_file(&real, meta.len(), method, headers, HeaderMap::new()).await)
}
