//! Forwarding is the repair path: when services reach every director themselves, peers
//! offer versions and send (nearly) no full ad; an ad given to one director only still
//! reaches every director, through offers that find it lacking.

use skein::ad::{AdKey, ServerKind};
use skein::director::DirectorHandle;

use super::{WAIT, all_hold, forwarding_idle, settled_mesh_with};
use crate::common::*;

/// Full ads this director sent to peers in forward requests (any answer).
fn full_ads_sent(d: &DirectorHandle) -> u64 {
    let m = &d.state().metrics;
    ["accepted", "duplicate", "stale", "refused"]
        .iter()
        .map(|r| m.forwarded_with(r))
        .sum()
}

fn offered(cluster: &Cluster, result: &str) -> u64 {
    cluster
        .running()
        .map(|d| d.state().metrics.offered_with(result))
        .sum()
}

const SERVERS: [(&str, ServerKind); 3] = [
    ("origin-1", ServerKind::Origin),
    ("origin-2", ServerKind::Origin),
    ("cache-1", ServerKind::Cache),
];

/// Digest syncs far apart (after the start-up ones), so that what crosses between
/// directors below crosses by forwarding, not by a sync's pull.
fn forwarding_only() -> Tuning {
    Tuning {
        poll_interval: "60s",
        ..Tuning::default()
    }
}

/// Each peer worker syncs at its start and again 3 s later, then (with
/// [`forwarding_only`]) not for a minute: once those are done, what crosses between
/// directors crosses by forwarding.
async fn startup_syncs_done(cluster: &Cluster, n: usize) {
    eventually(WAIT, "start-up digest syncs done", || async {
        let syncs: u64 = cluster
            .running()
            .map(|d| d.state().metrics.syncs_total())
            .sum();
        syncs >= (2 * n * (n - 1)) as u64
    })
    .await;
}

fn key(name: &str, kind: ServerKind) -> AdKey {
    AdKey {
        kind,
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_that_reach_every_director_get_no_full_ad_forwarded() {
    let n = 4;
    // The premise of offers: a service's own copy reaches each director within the
    // forward delay. On a loaded test machine a registration (verify, then fsync) can
    // take a second or more, so this test gives it a wider margin than the default 2 s.
    let tuning = Tuning {
        forward_delay: "6s",
        ..forwarding_only()
    };
    let cluster = settled_mesh_with(n, tuning).await;
    startup_syncs_done(&cluster, n).await;
    let full_before: u64 = cluster.running().map(full_ads_sent).sum();
    let held_before = offered(&cluster, "held");
    let started = now_ms();
    let versions = 3;
    for generation in 1..=versions {
        for (name, kind) in SERVERS {
            let ad = signed(name, kind, &["/ns"], started, generation);
            // As a service does: the same ad to every director at once.
            let sends = cluster
                .running()
                .map(|d| {
                    let ad = ad.clone();
                    let url = d.url().to_string();
                    async move { client().register(&url, &ad).await.unwrap().status }
                })
                .collect::<Vec<_>>();
            for status in futures::future::join_all(sends).await {
                assert!(
                    ["accepted", "duplicate"].contains(&status.as_str()),
                    "{status}"
                );
            }
        }
    }
    for (name, kind) in SERVERS {
        eventually(WAIT, "every director holds the last version", || async {
            all_hold(&cluster, &key(name, kind), versions).await
        })
        .await;
    }
    // Every accepted version waits in the forward queues, then is offered to every peer;
    // each offer finds the peer already holding it.
    eventually(
        WAIT,
        "every director offered its ads to its peers",
        || async {
            cluster.backlog() == 0
                && offered(&cluster, "held") - held_before >= (SERVERS.len() * (n - 1)) as u64
        },
    )
    .await;
    forwarding_idle(&cluster, "forwarding stopped").await;
    let full: u64 = cluster.running().map(full_ads_sent).sum::<u64>() - full_before;
    let held = offered(&cluster, "held") - held_before;
    println!("{n} directors, services reaching all: {held} offers held, {full} full ads sent");
    assert_eq!(
        full, 0,
        "no full ad crosses when every peer holds it already"
    );
    assert_eq!(offered(&cluster, "wanted"), 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_given_to_one_director_only_reaches_every_director_through_the_repair_path() {
    let n = 3;
    let cluster = settled_mesh_with(n, forwarding_only()).await;
    startup_syncs_done(&cluster, n).await;
    // Director 0 cannot talk to director 2: the ad must go 0 -> 1 -> 2.
    cluster.cut(0, 2);
    let full_before: u64 = cluster.running().map(full_ads_sent).sum();
    let started = now_ms();
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], started, 1);
    let status = client()
        .register(cluster.handle(0).url(), &ad)
        .await
        .unwrap()
        .status;
    assert_eq!(status, "accepted");
    let origin = key("origin-1", ServerKind::Origin);
    eventually(WAIT, "every director holds the ad", || async {
        all_hold(&cluster, &origin, 1).await
    })
    .await;
    // The senders count an answer after the receiver has applied the ad: poll.
    eventually(
        WAIT,
        "director 1 and then director 2 answered offers that they lacked it, and got the full ad",
        || async {
            let full: u64 = cluster.running().map(full_ads_sent).sum::<u64>() - full_before;
            offered(&cluster, "wanted") >= 2 && full >= 2
        },
    )
    .await;
    cluster.shutdown().await;
}
