//! Finding directors, three ways: the federation discovery document, asking known
//! directors for their lists, and the (discouraged) static list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::seq::SliceRandom;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::peers::{Source, normalize};
use crate::replication::Replicator;

/// Every director reachable from the seeds: the discovery document's
/// `director_endpoint` and `director_advertise_endpoints`, the static list, and the
/// lists of every director that answers. Seeds are kept even if they do not answer;
/// a director's list never removes anything.
pub async fn discover_directors(
    client: &Client,
    federation: Option<&str>,
    directors: &[String],
) -> Vec<String> {
    let mut known: BTreeSet<String> = directors.iter().map(|d| normalize(d)).collect();
    if let Some(url) = federation {
        match client.discovery(url).await {
            Ok(doc) => {
                known.extend(
                    std::iter::once(doc.director_endpoint)
                        .chain(doc.director_advertise_endpoints)
                        .filter(|u| !u.is_empty())
                        .map(|u| normalize(&u)),
                );
            }
            Err(error) => {
                tracing::warn!(federation = %url, %error, "discovery document unavailable; trying the URL as a director");
                known.insert(normalize(url));
            }
        }
    }
    let asked: Vec<String> = known.iter().cloned().collect();
    let lists = join_all(asked.iter().map(|d| client.directors(d))).await;
    for (director, list) in asked.iter().zip(lists) {
        match list {
            Ok(list) => known.extend(
                list.into_iter()
                    .map(|d| normalize(&d.advertise_url))
                    .filter(|u| !u.is_empty()),
            ),
            Err(error) => {
                tracing::debug!(director = %director, %error, "director did not list its peers")
            }
        }
    }
    known.into_iter().collect()
}

/// The director's discovery worker: every `poll_interval`, reads the discovery
/// document and asks known directors for their lists. Every URL found is only a
/// candidate for the peer set, which verifies, keeps, syncs and forgets peers.
pub async fn run(
    replicator: Arc<Replicator>,
    discovery_url: Option<String>,
    poll_interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = discover_once(&replicator, discovery_url.as_deref()) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(poll_interval) => {}
        }
    }
}

/// One round of discovery.
pub async fn discover_once(replicator: &Arc<Replicator>, discovery_url: Option<&str>) {
    let peers = replicator.peers();
    let client = replicator.client();
    if let Some(url) = discovery_url {
        match client.discovery(url).await {
            Ok(doc) => {
                for endpoint in
                    std::iter::once(&doc.director_endpoint).chain(&doc.director_advertise_endpoints)
                {
                    peers.add(endpoint, Source::Discovery);
                }
            }
            Err(error) => tracing::warn!(discovery = %url, %error, "federation discovery failed"),
        }
    }
    let asked = peers.list_sources();
    let lists = join_all(asked.iter().map(|p| client.directors(p))).await;
    for (peer, list) in asked.iter().zip(lists) {
        match list {
            Ok(mut list) => {
                if peers.mark_ok(peer) {
                    peers.request_sync(peer);
                }
                // Candidates are capped: a list longer than the cap is taken in a
                // random order, so every URL in it gets its turn over the rounds.
                list.shuffle(&mut rand::thread_rng());
                for director in list {
                    peers.add(&director.advertise_url, Source::Learned);
                }
            }
            Err(error) => peers.mark_failed(peer, &error.to_string()),
        }
    }
}
