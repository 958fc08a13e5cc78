//! What the fault tests check: no acknowledged ad lost, views that agree, serving at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use skein::ad::{AdKey, AdVersion};
use skein::client::Client;
use tokio::time::Instant;

use super::load::AckBook;

fn client() -> Client {
    Client::new(Duration::from_secs(2), None).expect("a plain HTTP client")
}

/// Acknowledged ads that `director` does not hold (at that version or newer), or all
/// of them if it does not answer.
async fn missing(client: &Client, director: &str, acked: &HashMap<AdKey, AdVersion>) -> usize {
    let Ok(listing) = client.ads(director).await else {
        return acked.len();
    };
    let held: HashMap<AdKey, AdVersion> = listing
        .into_iter()
        .map(|l| (l.signed.ad.key(), l.signed.ad.version()))
        .collect();
    acked
        .iter()
        .filter(|(key, version)| held.get(*key).is_none_or(|h| h < *version))
        .count()
}

/// Polls until every director holds every acknowledged version (or newer); returns
/// the time it took and the ads still missing at `limit` (0 = none lost).
pub async fn await_no_lost_acks(
    directors: &[String],
    book: &AckBook,
    limit: Duration,
) -> (Duration, usize) {
    let acked = book.lock().map(|b| b.clone()).unwrap_or_default();
    let client = client();
    let start = Instant::now();
    loop {
        let mut lost = 0;
        for d in directors {
            lost += missing(&client, d, &acked).await;
        }
        if lost == 0 || start.elapsed() > limit {
            return (start.elapsed(), lost);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn digest(client: &Client, director: &str) -> Option<BTreeMap<AdKey, AdVersion>> {
    let entries = client.digest(director).await.ok()?;
    Some(entries.into_iter().map(|e| (e.key, e.version)).collect())
}

/// Polls until every director's digest is the same; returns the time it took, or
/// `None` at `limit`.
pub async fn await_agreement(directors: &[String], limit: Duration) -> Option<Duration> {
    let client = client();
    let start = Instant::now();
    loop {
        let mut digests = Vec::new();
        for d in directors {
            digests.push(digest(&client, d).await);
        }
        if digests.iter().all(|d| d.is_some()) && digests.windows(2).all(|w| w[0] == w[1]) {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a restarted director came back.
#[derive(Debug)]
pub struct Serving {
    /// From the call until its first redirect for `path`.
    pub after: Duration,
    /// 404 answers before that (a director serving without its view).
    pub not_found: u32,
    /// Ads of the `/load` servers its view held at its first answer.
    pub load_ads: usize,
}

/// Polls `director` until it redirects `path`.
pub async fn wait_serving(director: &str, path: &str, limit: Duration) -> anyhow::Result<Serving> {
    let client = client();
    let start = Instant::now();
    let mut not_found = 0;
    loop {
        match client.locate(director, path).await {
            Ok(located) if located.location.is_some() => {
                let after = start.elapsed();
                let load_ads = client
                    .ads(director)
                    .await
                    .map(|l| {
                        l.iter()
                            .filter(|a| a.signed.ad.name.starts_with("load-"))
                            .count()
                    })
                    .unwrap_or(0);
                return Ok(Serving {
                    after,
                    not_found,
                    load_ads,
                });
            }
            Err(skein::client::ClientError::Status { status: 404, .. }) => not_found += 1,
            _ => {}
        }
        if start.elapsed() > limit {
            anyhow::bail!("{director} did not redirect {path} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
