//! `skein downtime add|list|remove`, `skein ban`, `skein unban`: federation records
//! signed with an operator (admin) key and sent to a director, which replicates them.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;

use skein::ad::{Record, ServerKind};
use skein::client::Client;
use skein::clock::{Clock, SystemClock, UnixMillis};
use skein::keys;

use super::CaBundle;

/// Who signs: the admin key and its name in the trust file.
pub struct Signer<'a> {
    /// The admin private key.
    pub key: &'a Path,
    /// Its trust-file name (default: the key file's stem).
    pub name: Option<&'a str>,
}

/// What to record.
pub struct Change<'a> {
    /// Downtime or ban.
    pub kind: ServerKind,
    /// The server concerned.
    pub server: &'a str,
    /// In force (add, ban) or lifted (remove, unban).
    pub active: bool,
    /// Window, Unix ms (downtime add only).
    pub window: Option<(UnixMillis, UnixMillis)>,
    /// Why.
    pub reason: &'a str,
}

/// Parses `now`, an RFC 3339 time, or a duration from now (`2h`).
pub fn parse_time(text: &str, now: UnixMillis) -> anyhow::Result<UnixMillis> {
    if text == "now" {
        return Ok(now);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now.saturating_add(d.as_millis() as u64));
    }
    let at = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("{text:?} is not \"now\", a duration like 2h, or a time like 2026-11-27T18:00:00Z")
    })?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64)
}

fn show_time(ms: UnixMillis) -> String {
    if ms == UnixMillis::MAX {
        return "until lifted".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Signs `change` and sends it to the first director (of `federation`) that takes it.
pub async fn send(
    signer: &Signer<'_>,
    federation: &[String],
    change: Change<'_>,
    ca: &CaBundle,
) -> anyhow::Result<()> {
    let key = keys::load(signer.key)?;
    let name = match signer.name {
        Some(name) => name.to_string(),
        None => signer
            .key
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("--signer is needed: the key file has no name")?,
    };
    let now = SystemClock.now_ms();
    let (start, end) = change.window.unwrap_or((0, UnixMillis::MAX));
    if end <= start {
        anyhow::bail!(
            "the downtime ends ({}) before it starts ({})",
            show_time(end),
            show_time(start)
        );
    }
    // A downtime leaves the directors when it ends; a ban, and any lifting, stays (so
    // that a replay of what it replaced is refused as stale).
    let expires_at = if change.active { end } else { UnixMillis::MAX };
    let record = Record {
        signer: name,
        active: change.active,
        start,
        end,
        reason: change.reason.to_string(),
    };
    let signed = record
        .into_ad(change.kind, change.server, now, expires_at)
        .sign(&key);
    let client = Client::new(Duration::from_secs(5), ca.path.as_deref())?;
    let mut errors = Vec::new();
    for director in federation {
        match client.register(director, &signed).await {
            Ok(response) => {
                println!("{director}: {}", response.status);
                return Ok(());
            }
            Err(error) if error.is_definitive_refusal() => {
                anyhow::bail!("{director} refused the record: {error}")
            }
            Err(error) => errors.push(format!("{director}: {error}")),
        }
    }
    anyhow::bail!("no director took the record:\n  {}", errors.join("\n  "))
}

/// Prints the downtime (and ban) records a director holds.
pub async fn list(federation: &[String], ca: &CaBundle) -> anyhow::Result<()> {
    let client = Client::new(Duration::from_secs(5), ca.path.as_deref())?;
    let mut last = None;
    for director in federation {
        match client.ads(director).await {
            Ok(listing) => {
                println!(
                    "{:<9} {:<20} {:<8} {:<22} {:<22} {:<12} REASON",
                    "KIND", "SERVER", "STATE", "FROM", "UNTIL", "SIGNER"
                );
                for entry in listing {
                    let ad = &entry.signed.ad;
                    let Some(record) = ad.record.as_ref().filter(|_| ad.kind.is_record()) else {
                        continue;
                    };
                    println!(
                        "{:<9} {:<20} {:<8} {:<22} {:<22} {:<12} {}",
                        ad.kind.as_str(),
                        ad.name,
                        if record.active { "active" } else { "lifted" },
                        show_time(record.start),
                        show_time(record.end),
                        record.signer,
                        record.reason
                    );
                }
                return Ok(());
            }
            Err(error) => last = Some(format!("{director}: {error}")),
        }
    }
    anyhow::bail!("no director answered: {}", last.unwrap_or_default())
}
