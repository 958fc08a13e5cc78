//! One object from a ranked list of servers: on failover, resume from the byte already
//! written (the same object, checked by ETag or size), so no byte is written twice.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, RANGE};
use serde::Serialize;

use skein::client::{Client, error_chain};

/// Where the bytes go.
pub enum Output {
    /// Standard output: what is written cannot be taken back.
    Stdout(std::io::Stdout),
    /// A file, written as `<name>.part` and renamed when complete.
    File {
        /// The `.part` file.
        file: std::io::BufWriter<File>,
        /// Its path.
        part: PathBuf,
        /// The final path.
        path: PathBuf,
    },
}

impl Output {
    /// Standard output.
    pub fn stdout() -> Self {
        Self::Stdout(std::io::stdout())
    }

    /// `path`, through `path.part`.
    pub fn file(path: &Path) -> anyhow::Result<Self> {
        let part = path.with_extension("part");
        let file =
            File::create(&part).with_context(|| format!("cannot write {}", part.display()))?;
        Ok(Self::File {
            file: std::io::BufWriter::new(file),
            part,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stdout(out) => out.write_all(bytes),
            Self::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Starts over from byte 0, if this output can.
    fn rewind(&mut self) -> std::io::Result<bool> {
        match self {
            Self::Stdout(_) => Ok(false),
            Self::File { file, .. } => {
                file.flush()?;
                file.get_mut().set_len(0)?;
                file.get_mut().rewind()?;
                Ok(true)
            }
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Self::Stdout(mut out) => Ok(out.flush()?),
            Self::File {
                mut file,
                part,
                path,
            } => {
                file.flush()?;
                drop(file);
                std::fs::rename(&part, &path).with_context(|| {
                    format!("cannot rename {} to {}", part.display(), path.display())
                })
            }
        }
    }

    fn is_stdout(&self) -> bool {
        matches!(self, Self::Stdout(_))
    }
}

/// What identifies the object being downloaded, from the first server's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ObjectId {
    size: Option<u64>,
    etag: Option<String>,
}

impl ObjectId {
    /// True if a resumed answer is the same object: the same ETag, or (where either
    /// lacks one) the same size.
    fn matches(&self, other: &ObjectId) -> bool {
        match (&self.etag, &other.etag) {
            (Some(a), Some(b)) => a == b,
            _ => self.size.is_some() && self.size == other.size,
        }
    }

    fn is_checkable(&self) -> bool {
        self.size.is_some() || self.etag.is_some()
    }
}

/// What `skein get --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The object path.
    pub path: String,
    /// The director that answered.
    pub director: String,
    /// The server the last bytes came from.
    pub server: String,
    /// Bytes written.
    pub bytes: u64,
    /// Servers tried, in order.
    pub attempts: Vec<Attempt>,
    /// The output file, or `-` for standard output.
    pub output: String,
}

/// One server tried.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// Its URL.
    pub url: String,
    /// The byte it was asked to start at.
    pub from: u64,
    /// `ok` or what went wrong.
    pub result: String,
}

/// Why one server's attempt ended.
enum Failure {
    /// Try the next server.
    Next(anyhow::Error),
    /// Stop: trying further could only corrupt the output.
    Stop(anyhow::Error),
}

/// A download in progress.
pub struct Download<'a> {
    client: &'a Client,
    path: String,
    output: Output,
    written: u64,
    id: Option<ObjectId>,
    bar: ProgressBar,
    attempts: Vec<Attempt>,
    token: Option<String>,
}

impl<'a> Download<'a> {
    /// A download of `path` into `output`, with a progress bar when `progress` and stderr
    /// is a terminal.
    pub fn new(client: &'a Client, path: &str, output: Output, progress: bool) -> Self {
        use std::io::IsTerminal;
        let bar = if progress && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg}\n{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            client,
            path: path.to_string(),
            output,
            written: 0,
            id: None,
            bar,
            attempts: Vec::new(),
            token: None,
        }
    }

    /// Sends `token` as `Authorization: Bearer` to every server (protected namespaces).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Tries each server in turn until the object is complete.
    pub async fn run(mut self, candidates: &[String]) -> anyhow::Result<Report> {
        let mut last = None;
        for url in candidates {
            let from = self.written;
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| url.clone());
            self.bar.set_message(format!("{} from {host}", self.path));
            match self.attempt(url).await {
                Ok(()) => {
                    self.attempts.push(Attempt {
                        url: url.clone(),
                        from,
                        result: "ok".into(),
                    });
                    self.bar.finish_and_clear();
                    let output = match &self.output {
                        Output::Stdout(_) => "-".to_string(),
                        Output::File { path, .. } => path.display().to_string(),
                    };
                    self.output.finish()?;
                    return Ok(Report {
                        path: self.path,
                        director: String::new(),
                        server: url.clone(),
                        bytes: self.written,
                        attempts: self.attempts,
                        output,
                    });
                }
                Err(Failure::Next(error)) => {
                    tracing::info!(%url, error = %format!("{error:#}"), written = self.written, "server failed; trying the next");
                    self.attempts.push(Attempt {
                        url: url.clone(),
                        from,
                        result: format!("{error:#}"),
                    });
                    last = Some(error);
                }
                Err(Failure::Stop(error)) => {
                    self.bar.abandon();
                    return Err(self.incomplete(error));
                }
            }
        }
        self.bar.abandon();
        let error = last.unwrap_or_else(|| anyhow!("the director listed no server"));
        Err(self.incomplete(error))
    }

    /// Says how much of the object reached standard output, if any did.
    fn incomplete(&self, error: anyhow::Error) -> anyhow::Error {
        if self.output.is_stdout() && self.written > 0 {
            let of = self
                .id
                .as_ref()
                .and_then(|id| id.size)
                .map(|s| format!(" of {s}"))
                .unwrap_or_default();
            error.context(format!(
                "{}: stopped after {}{of} bytes were written to standard output: the output is incomplete (no byte was written twice)",
                self.path, self.written
            ))
        } else {
            error
        }
    }

    async fn attempt(&mut self, url: &str) -> Result<(), Failure> {
        let resume_from = self.written;
        let mut request = self.client.http().get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if resume_from > 0 {
            request = request.header(RANGE, format!("bytes={resume_from}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Next(anyhow!("{url}: {}", error_chain(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut skip = 0u64;
        match (resume_from, status) {
            (0, s) if s.is_success() => {
                let id = ObjectId {
                    size: response.content_length(),
                    etag: etag(&headers),
                };
                self.bar.set_length(id.size.unwrap_or(0));
                self.id = Some(id);
            }
            (_, StatusCode::PARTIAL_CONTENT) => self.check_resume(url, &headers)?,
            (_, StatusCode::OK) => {
                // The server ignored the Range: the same object in full; skip what is written.
                let full = ObjectId {
                    size: response.content_length(),
                    etag: etag(&headers),
                };
                self.same_object(url, &full)?;
                skip = resume_from;
            }
            (_, s) => return Err(Failure::Next(anyhow!("{url}: HTTP {s}"))),
        }
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::Next(anyhow!(
                    "{url}: the body broke off after {} bytes: {}",
                    self.written,
                    error_chain(&e)
                ))
            })?;
            let mut bytes: &[u8] = &chunk;
            if skip > 0 {
                let n = skip.min(bytes.len() as u64);
                bytes = &bytes[n as usize..];
                skip -= n;
            }
            self.output
                .write(bytes)
                .map_err(|e| Failure::Stop(anyhow!("cannot write the output: {e}")))?;
            self.written += bytes.len() as u64;
            self.bar.set_position(self.written);
        }
        match self.id.as_ref().and_then(|id| id.size) {
            Some(size) if self.written != size => Err(Failure::Next(anyhow!(
                "{url}: the body ended after {} of {size} bytes",
                self.written
            ))),
            _ => Ok(()),
        }
    }

    /// A 206 must start at the byte written next and belong to the same object.
    fn check_resume(&mut self, url: &str, headers: &HeaderMap) -> Result<(), Failure> {
        let range = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        let Some((start, total)) = range else {
            return Err(Failure::Next(anyhow!(
                "{url}: 206 without a usable Content-Range"
            )));
        };
        if start != self.written {
            return Err(Failure::Next(anyhow!(
                "{url}: resumed at byte {start}, not {}",
                self.written
            )));
        }
        let resumed = ObjectId {
            size: total,
            etag: etag(headers),
        };
        self.same_object(url, &resumed)
    }

    /// Refuses to append another object's bytes; a file output starts over instead.
    fn same_object(&mut self, url: &str, other: &ObjectId) -> Result<(), Failure> {
        let first = self.id.clone().unwrap_or_default();
        if first.is_checkable() && first.matches(other) {
            return Ok(());
        }
        let why = if first.is_checkable() {
            format!(
                "{url} serves a different version of the object (size {:?}, ETag {:?}; the first server said size {:?}, ETag {:?})",
                other.size, other.etag, first.size, first.etag
            )
        } else {
            format!(
                "{url}: cannot resume: the first server gave neither a size nor an ETag, so the rest cannot be checked to belong to the same object"
            )
        };
        match self.output.rewind() {
            Ok(true) => {
                tracing::info!(%url, "{why}; starting over");
                self.written = 0;
                self.id = None;
                Err(Failure::Next(anyhow!("{why}; starting the file over")))
            }
            Ok(false) => Err(Failure::Stop(anyhow!(why))),
            Err(e) => Err(Failure::Stop(anyhow!("cannot rewind the output: {e}"))),
        }
    }
}

fn etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("W/").to_string())
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) -> (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn an_object_is_the_same_by_etag_else_by_size() {
        let a = ObjectId {
            size: Some(5),
            etag: Some("\"x\"".into()),
        };
        let same_tag = ObjectId {
            size: None,
            etag: Some("\"x\"".into()),
        };
        let other_tag = ObjectId {
            size: Some(5),
            etag: Some("\"y\"".into()),
        };
        let size_only = ObjectId {
            size: Some(5),
            etag: None,
        };
        assert!(a.matches(&same_tag));
        assert!(!a.matches(&other_tag));
        assert!(a.matches(&size_only));
        assert!(!ObjectId::default().is_checkable());
    }
}
