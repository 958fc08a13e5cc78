//! `skein locate` and `skein get`: the client side, failing over across directors and
//! then across the servers a director ranks.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use skein::client::{Client, ClientError, Located};
use skein::discovery::discover_directors;
use skein::paths::{encode_path, parse_object_path};

use super::{CaBundle, TokenArg};

/// A connect attempt to a dead director costs at most this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn client(ca: &CaBundle) -> anyhow::Result<Client> {
    Ok(Client::new(
        Duration::from_secs(30).max(CONNECT_TIMEOUT),
        ca.path.as_deref(),
    )?)
}

/// Every director reachable from the given federation URLs, seeds first, then those
/// discovered now, then those remembered from earlier runs (so that a client can still
/// fail over when the director it was pointed at is the one that is down).
async fn directors(client: &Client, federation: &[String]) -> Vec<String> {
    let mut all: Vec<String> = federation
        .iter()
        .map(|f| f.trim_end_matches('/').to_string())
        .collect();
    let mut remembered = super::memory::load();
    for f in federation {
        let found = discover_directors(client, Some(f), &[]).await;
        for d in &found {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        if found.len() > 1 {
            remembered.insert(f.trim_end_matches('/').to_string(), found);
        }
        for d in remembered
            .get(f.trim_end_matches('/'))
            .into_iter()
            .flatten()
        {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
    }
    super::memory::save(&remembered);
    all
}

/// Asks each director in turn until one answers.
async fn locate_any(
    client: &Client,
    federation: &[String],
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(String, Located)> {
    let mut last: Option<ClientError> = None;
    for director in directors(client, federation).await {
        match client
            .locate_as(method.clone(), &director, path, token)
            .await
        {
            Ok(located) => return Ok((director, located)),
            Err(error) => {
                tracing::info!(%director, %error, "director failed; trying the next");
                last = Some(error);
            }
        }
    }
    match last {
        Some(error) => Err(error.into()),
        None => bail!("no director found"),
    }
}

fn object_path(path: &str, origin: bool) -> anyhow::Result<String> {
    let clean = parse_object_path(path).with_context(|| format!("bad object path {path:?}"))?;
    let encoded = encode_path(&clean);
    Ok(if origin {
        format!("/api/v1.0/director/origin{encoded}")
    } else {
        encoded
    })
}

/// Prints where PATH goes and the ranked list.
pub async fn locate(
    federation: &[String],
    origin: bool,
    put: bool,
    path: &str,
    ca: &CaBundle,
    token: &TokenArg,
) -> anyhow::Result<()> {
    let client = client(ca)?;
    let token = token.find()?;
    let method = if put { Method::PUT } else { Method::GET };
    let (director, located) = locate_any(
        &client,
        federation,
        method,
        &object_path(path, origin || put)?,
        token.as_deref(),
    )
    .await?;
    println!("director: {director}");
    println!("redirect: {}", located.location.as_deref().unwrap_or("-"));
    if let Some(ns) = located.namespace {
        println!("namespace: {ns}");
    }
    for (i, url) in located.links.iter().enumerate() {
        println!("{:>2}. {url}", i + 1);
    }
    Ok(())
}

/// Downloads PATH to `output` (or stdout).
pub async fn get(
    federation: &[String],
    output: Option<&Path>,
    path: &str,
    ca: &CaBundle,
    token: &TokenArg,
) -> anyhow::Result<()> {
    let client = client(ca)?;
    let token = token.find()?;
    let (_, located) = locate_any(
        &client,
        federation,
        Method::GET,
        &object_path(path, false)?,
        token.as_deref(),
    )
    .await?;
    if located
        .namespace
        .as_deref()
        .is_some_and(|ns| ns.contains("require-token=true"))
        && token.is_none()
    {
        tracing::warn!(
            "the namespace requires a token and none was found (--token FILE, BEARER_TOKEN, BEARER_TOKEN_FILE)"
        );
    }
    let mut candidates = located.links.clone();
    if let Some(location) = located.location {
        if !candidates.contains(&location) {
            candidates.insert(0, location);
        }
    }
    let mut last = None;
    for url in &candidates {
        match download(&client, url, output, token.as_deref()).await {
            Ok(bytes) => {
                tracing::info!(%url, bytes, "downloaded");
                return Ok(());
            }
            Err(error) => {
                tracing::info!(%url, error = %format!("{error:#}"), "server failed; trying the next");
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the director listed no server")))
}

async fn download(
    client: &Client,
    url: &str,
    output: Option<&Path>,
    token: Option<&str>,
) -> anyhow::Result<u64> {
    let mut request = client.http().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_default();
        bail!("{url}: HTTP {status} {detail}");
    }
    let total = response.content_length();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total.unwrap_or(0));
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    // Write to a temporary file first so a failed transfer leaves no partial output.
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path.with_extension("part"))
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut stream = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        sink.write_all(&chunk)?;
        written += chunk.len() as u64;
        bar.set_position(written);
    }
    sink.flush()?;
    drop(sink);
    bar.finish_and_clear();
    if let Some(total) = total {
        if written != total {
            bail!("{url}: got {written} of {total} bytes");
        }
    }
    if let Some(path) = output {
        std::fs::rename(path.with_extension("part"), path)?;
    }
    Ok(written)
}
