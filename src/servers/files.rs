//! Files under one root directory: confinement (no symlink escapes), serving with
//! `Range`, JSON listings, and atomic writes (temp file + fsync + rename).

use std::fs::Metadata;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::http::ApiError;

/// Temp files in flight start with this; listings hide them.
pub const TEMP_PREFIX: &str = ".skein-tmp-";

const CHUNK: usize = 64 * 1024;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing at this path.
    #[error("no such object")]
    NotFound,
    /// The path resolves (through a symlink) outside the root.
    #[error("the path leads outside the served directory")]
    Escapes,
    /// A directory where an object was expected.
    #[error("a directory is in the way")]
    IsDirectory,
    /// A name reserved for temp files.
    #[error("names starting with {TEMP_PREFIX} are reserved")]
    Reserved,
    /// The `Range` asks for bytes past the end.
    #[error("range not satisfiable (object is {0} bytes)")]
    BadRange(u64),
    /// The upstream body was shorter or longer than announced.
    #[error("expected {expected} bytes, received {received}")]
    Truncated {
        /// Announced length.
        expected: u64,
        /// Received length.
        received: u64,
    },
    /// The body is longer than the server accepts.
    #[error("the body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// The request or upstream body failed mid-way.
    #[error("body: {0}")]
    Body(String),
    /// Disk I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<FileError> for ApiError {
    fn from(error: FileError) -> Self {
        match error {
            FileError::NotFound => ApiError::not_found("no such object"),
            FileError::Escapes => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden_path", error.to_string())
            }
            FileError::IsDirectory => {
                ApiError::new(StatusCode::CONFLICT, "is_directory", error.to_string())
            }
            FileError::Reserved => ApiError::bad_request("reserved_name", error.to_string()),
            FileError::BadRange(_) => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                error.to_string(),
            ),
            FileError::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                error.to_string(),
            ),
            FileError::Body(_) | FileError::Truncated { .. } => {
                ApiError::bad_request("bad_body", error.to_string())
            }
            FileError::Io(cause) => internal(cause),
        }
    }
}

/// A 500 whose cause is logged, not shown.
pub fn internal(cause: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %cause, "internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server could not complete the request",
    )
}

/// `rest` (`/a/b`, already clean) as a relative path (`a/b`), refusing names that
/// could collide with a download or upload in flight.
pub fn relative(rest: &str) -> Result<PathBuf, FileError> {
    if rest
        .split('/')
        .any(|segment| segment.starts_with(TEMP_PREFIX))
    {
        return Err(FileError::Reserved);
    }
    Ok(PathBuf::from(rest.trim_start_matches('/')))
}

/// The canonical path and metadata of `root/rel` if it exists and stays inside
/// `root` (which must be canonical) after following symlinks.
pub async fn existing(root: &Path, rel: &Path) -> Result<(PathBuf, Metadata), FileError> {
    let real = match tokio::fs::canonicalize(root.join(rel)).await {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FileError::NotFound),
        Err(e) if e.raw_os_error() == Some(20) => return Err(FileError::NotFound), // ENOTDIR
        Err(e) => return Err(e.into()),
    };
    if !real.starts_with(root) {
        return Err(FileError::Escapes);
    }
    let meta = tokio::fs::metadata(&real).await?;
    Ok((real, meta))
}

/// One entry of a directory listing.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// File or directory name.
    pub name: String,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// True for a directory.
    pub is_dir: bool,
    /// Last modification (for WebDAV listings; not in the JSON listing).
    #[serde(skip)]
    pub modified: Option<std::time::SystemTime>,
}

/// The sorted entries of `dir` (inside the canonical `root`), hiding temp files,
/// dangling symlinks and symlinks leading out of `root` (which are not served either).
pub async fn list(root: &Path, dir: &Path) -> Result<Vec<Entry>, FileError> {
    let mut entries = Vec::new();
    let mut read = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = read.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        match tokio::fs::canonicalize(entry.path()).await {
            Ok(target) if target.starts_with(root) => {}
            _ => continue,
        }
        let Ok(meta) = tokio::fs::metadata(entry.path()).await else {
            continue;
        };
        entries.push(Entry {
            name,
            size: if meta.is_dir() { 0 } else { meta.len() },
            is_dir: meta.is_dir(),
            modified: meta.modified().ok(),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// A single `bytes=` range, resolved against `len`: `Ok(None)` means serve everything
/// (no header, or one this server does not handle, such as several ranges).
fn parse_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, FileError> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let Ok(suffix) = end.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 || len == 0 {
            return Err(FileError::BadRange(len));
        }
        (len.saturating_sub(suffix), len - 1)
    } else {
        let Ok(start) = start.parse::<u64>() else {
            return Ok(None);
        };
        let end = if end.is_empty() {
            len.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(end) => end.min(len.saturating_sub(1)),
                Err(_) => return Ok(None),
            }
        };
        if start >= len || end < start {
            return Err(FileError::BadRange(len));
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Answers GET or HEAD for a regular file, honouring a single `Range`.
pub async fn serve_file(
    path: &Path,
    len: u64,
    method: &Method,
    request: &HeaderMap,
    mut extra: HeaderMap,
) -> Response {
    let range = match parse_range(request, len) {
        Ok(range) => range,
        Err(error) => {
            let mut response = ApiError::from(error).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    let (status, start, count) = match range {
        Some((start, end)) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                extra.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, len),
    };
    extra.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    extra.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    extra.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if method == Method::HEAD {
        return (status, extra, Body::empty()).into_response();
    }
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ApiError::from(FileError::NotFound).into_response();
        }
        Err(e) => return internal(e).into_response(),
    };
    if start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(start)).await {
            return internal(e).into_response();
        }
    }
    let stream = futures::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(left as usize)];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    (status, extra, Body::from_stream(stream)).into_response()
}

/// Creates the parent directories of `root/rel` without ever following a symlink
/// out of `root`; returns the (canonical) parent.
async fn make_parent(root: &Path, rel: &Path) -> Result<PathBuf, FileError> {
    let target = root.join(rel);
    let parent = target.parent().ok_or(FileError::IsDirectory)?;
    // The deepest ancestor that exists must be inside the root before anything is made.
    let mut probe = parent.to_path_buf();
    loop {
        match tokio::fs::canonicalize(&probe).await {
            Ok(real) if real.starts_with(root) => break,
            Ok(_) => return Err(FileError::Escapes),
            Err(_) if probe != root => {
                if !probe.pop() {
                    return Err(FileError::Escapes);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    tokio::fs::create_dir_all(parent).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(20) {
            FileError::IsDirectory
        } else {
            FileError::Io(e)
        }
    })?;
    let real = tokio::fs::canonicalize(parent).await?;
    if !real.starts_with(root) {
        return Err(FileError::Escapes);
    }
    Ok(real)
}

/// Writes `body` to `root/rel` atomically: a uniquely named temp file beside it,
/// fsync, rename. Returns whether the object is new and its size. With `expected`,
/// a body of another length is refused and nothing is replaced.
pub async fn write_atomic<S, E>(
    root: &Path,
    rel: &Path,
    mut body: S,
    expected: Option<u64>,
    max: u64,
) -> Result<(bool, u64), FileError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let name = rel.file_name().ok_or(FileError::IsDirectory)?.to_owned();
    let parent = make_parent(root, rel).await?;
    let target = parent.join(name);
    let created = match tokio::fs::symlink_metadata(&target).await {
        Ok(meta) if meta.is_dir() => return Err(FileError::IsDirectory),
        Ok(_) => false,
        Err(_) => true,
    };
    let temp = parent.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FileError::Body(e.to_string()))?;
            written += chunk.len() as u64;
            if written > max {
                return Err(FileError::TooLarge(max));
            }
            file.write_all(&chunk).await?;
        }
        if let Some(expected) = expected.filter(|e| *e != written) {
            return Err(FileError::Truncated {
                expected,
                received: written,
            });
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&temp, &target).await?;
        Ok(written)
    }
    .await;
    match result {
        Ok(written) => Ok((created, written)),
        Err(error) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, len: u64) -> Result<Option<(u64, u64)>, FileError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        parse_range(&headers, len)
    }

    #[test]
    fn ranges_resolve_against_the_length() {
        assert_eq!(range("bytes=0-3", 10).unwrap(), Some((0, 3)));
        assert_eq!(range("bytes=4-", 10).unwrap(), Some((4, 9)));
        assert_eq!(range("bytes=-3", 10).unwrap(), Some((7, 9)));
        assert_eq!(range("bytes=5-100", 10).unwrap(), Some((5, 9)));
        assert_eq!(range("bytes=0-1,4-5", 10).unwrap(), None);
        assert_eq!(range("items=0-1", 10).unwrap(), None);
        assert!(matches!(
            range("bytes=10-", 10),
            Err(FileError::BadRange(10))
        ));
        assert!(matches!(
            range("bytes=5-2", 10),
            Err(FileError::BadRange(10))
        ));
    }

    #[tokio::test]
    async fn writes_are_atomic_and_confined() {
        let dir = tempfile::tempdir().unwrap();
        let root = tokio::fs::canonicalize(dir.path()).await.unwrap();
        let body = || futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from("hello"))]);
        let rel = Path::new("a/b/c.txt");
        assert_eq!(
            write_atomic(&root, rel, body(), Some(5), 5).await.unwrap(),
            (true, 5)
        );
        assert_eq!(
            write_atomic(&root, rel, body(), None, u64::MAX)
                .await
                .unwrap(),
            (false, 5)
        );
        assert!(matches!(
            write_atomic(&root, rel, body(), Some(9), u64::MAX).await,
            Err(FileError::Truncated { .. })
        ));
        assert!(matches!(
            write_atomic(&root, rel, body(), None, 4).await,
            Err(FileError::TooLarge(4))
        ));
        assert_eq!(std::fs::read(root.join(rel)).unwrap(), b"hello");
        let names: Vec<_> = list(&root, &root.join("a/b"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["c.txt"], "no temp file is left behind");

        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        assert!(matches!(
            write_atomic(&root, Path::new("link/x"), body(), None, u64::MAX).await,
            Err(FileError::Escapes)
        ));
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        assert!(matches!(
            existing(&root, Path::new("link/secret")).await,
            Err(FileError::Escapes)
        ));
    }
}
