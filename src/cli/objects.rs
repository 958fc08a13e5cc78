//! `skein locate` and `skein get`: the client side, failing over across directors and
//! then across the servers a director ranks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;

use skein::client::{Client, ClientError, Located};
use skein::discovery::discover_directors;
use skein::paths::{encode_path, parse_object_path};

use super::download::{Download, Output, Report};
use super::{CaBundle, TokenArg};

/// A connect attempt to a dead director costs at most this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn client(ca: &CaBundle) -> anyhow::Result<Client> {
    Ok(Client::new(
        Duration::from_secs(30).max(CONNECT_TIMEOUT),
        ca.path.as_deref(),
    )?)
}

/// The directors to try, and what to remember of them afterwards.
struct Directors {
    /// Seeds first, then those discovered now, then those remembered.
    all: Vec<String>,
    /// Per federation URL (normalised), every director it led to, now or before.
    by_federation: BTreeMap<String, Vec<String>>,
    /// Read and write the memory file.
    memory: bool,
}

/// Every director reachable from the given federation URLs, seeds first, then those
/// discovered now, then those remembered from earlier runs (so that a client can still
/// fail over when the director it was pointed at is the one that is down).
async fn directors(client: &Client, federation: &[String], memory: bool) -> Directors {
    let seeds: Vec<String> = federation
        .iter()
        .map(|f| f.trim_end_matches('/').to_string())
        .collect();
    let remembered = if memory {
        super::memory::load()
    } else {
        BTreeMap::new()
    };
    let mut all = seeds.clone();
    let mut by_federation = BTreeMap::new();
    for f in &seeds {
        let mut led_to = discover_directors(client, Some(f), &[]).await;
        for d in remembered.get(f).into_iter().flatten() {
            if !led_to.contains(d) {
                led_to.push(d.clone());
            }
        }
        for d in &led_to {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        by_federation.insert(f.clone(), led_to);
    }
    Directors {
        all,
        by_federation,
        memory,
    }
}

impl Directors {
    /// Remembers, per federation URL, the directors that answer from here (probed
    /// concurrently, each within [`CONNECT_TIMEOUT`]); names this host cannot resolve or
    /// reach (a compose network's, say) are not kept.
    async fn remember(&self, client: &Client) {
        if !self.memory {
            return;
        }
        let candidates: Vec<String> = {
            let mut all: Vec<String> = self.by_federation.values().flatten().cloned().collect();
            all.sort();
            all.dedup();
            all
        };
        let answers = futures::future::join_all(candidates.iter().map(|d| async move {
            matches!(
                tokio::time::timeout(CONNECT_TIMEOUT, client.ready(d)).await,
                Ok(Ok(_))
            )
        }))
        .await;
        let answered: Vec<&String> = candidates
            .iter()
            .zip(answers)
            .filter_map(|(d, ok)| ok.then_some(d))
            .collect();
        let mut memory = super::memory::load();
        for (federation, led_to) in &self.by_federation {
            let keep: Vec<String> = led_to
                .iter()
                .filter(|d| answered.contains(d))
                .cloned()
                .collect();
            if keep.is_empty() {
                memory.remove(federation);
            } else {
                memory.insert(federation.clone(), keep);
            }
        }
        super::memory::save(&memory);
    }
}

/// Asks each director in turn where `path` goes (with `token` for protected namespaces).
async fn locate_any(
    client: &Client,
    directors: &[String],
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(String, Located)> {
    ask_any(directors, |director| {
        let method = method.clone();
        async move { client.locate_as(method, &director, path, token).await }
    })
    .await
}

/// Runs `ask` against each director in turn until one answers. A definite answer (a 4xx
/// such as 404, 403 or 405) ends the search: another director would say the same.
async fn ask_any<T, F, Fut>(directors: &[String], ask: F) -> anyhow::Result<(String, T)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut last: Option<ClientError> = None;
    for director in directors {
        match ask(director.clone()).await {
            Ok(answer) => return Ok((director.clone(), answer)),
            Err(error) if error.is_definitive_refusal() => return Err(error.into()),
            Err(error) => {
                tracing::info!(%director, %error, "director failed; trying the next");
                last = Some(error);
            }
        }
    }
    match last {
        Some(error) if directors.len() > 1 => Err(anyhow::Error::new(error).context(format!(
            "none of the {} directors known answered; the last failure",
            directors.len()
        ))),
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

/// What `skein locate` asks.
#[derive(Debug, Clone, Copy)]
pub struct Question {
    /// An origin rather than a cache.
    pub origin: bool,
    /// Where a write goes.
    pub put: bool,
    /// The director's `?explain` JSON instead of the route.
    pub explain: bool,
}

/// Prints where PATH goes and the ranked list.
pub async fn locate(
    federation: &[String],
    question: Question,
    path: &str,
    ca: &CaBundle,
    memory: bool,
    token: &TokenArg,
) -> anyhow::Result<()> {
    let client = client(ca)?;
    let token = token.find()?;
    let Question {
        origin,
        put,
        explain,
    } = question;
    let method = if put { Method::PUT } else { Method::GET };
    let known = directors(&client, federation, memory).await;
    let asked = object_path(path, origin || put)?;
    if explain {
        let (result, ()) = tokio::join!(
            ask_any(&known.all, |director| {
                let method = method.clone();
                let (client, asked) = (&client, &asked);
                async move { client.explain(method, &director, asked).await }
            }),
            known.remember(&client)
        );
        let (_, json) = result?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let (result, ()) = tokio::join!(
        locate_any(&client, &known.all, method, &asked, token.as_deref()),
        known.remember(&client)
    );
    let (director, located) = result?;
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

/// How `skein get` reports.
#[derive(Debug, Clone, Copy)]
pub struct GetStyle {
    /// No progress bar.
    pub quiet: bool,
    /// A JSON summary at the end (stdout with `-o`, else stderr).
    pub json: bool,
    /// Read and write the client's memory of directors.
    pub memory: bool,
}

/// Downloads PATH to `output` (or stdout).
pub async fn get(
    federation: &[String],
    output: Option<&Path>,
    path: &str,
    ca: &CaBundle,
    style: GetStyle,
    token: &TokenArg,
) -> anyhow::Result<()> {
    let client = client(ca)?;
    let token = token.find()?;
    let known = directors(&client, federation, style.memory).await;
    let asked = object_path(path, false)?;
    let (result, ()) = tokio::join!(
        fetch(&client, &known.all, &asked, path, output, style, token),
        known.remember(&client)
    );
    let report = result?;
    if style.json {
        let line = serde_json::to_string(&report)?;
        if output.is_some() {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    Ok(())
}

async fn fetch(
    client: &Client,
    directors: &[String],
    asked: &str,
    path: &str,
    output: Option<&Path>,
    style: GetStyle,
    token: Option<String>,
) -> anyhow::Result<Report> {
    let (director, located) =
        locate_any(client, directors, Method::GET, asked, token.as_deref()).await?;
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
    let output = match output {
        Some(file) => Output::file(file)?,
        None => Output::stdout(),
    };
    let download =
        Download::new(client, path, output, !style.quiet && !style.json).with_token(token);
    let mut report = download.run(&candidates).await?;
    report.director = director;
    Ok(report)
}
