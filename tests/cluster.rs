//! Cluster tests: several real directors in one process, polling until a deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use skein::ad::{AdKey, ServerKind};
use skein::clock::ManualClock;

const WAIT: Duration = Duration::from_secs(30);

fn origin_key() -> AdKey {
    AdKey {
        kind: ServerKind::Origin,
        name: "origin-1".into(),
    }
}

/// Registers a fixture server's ad with director `at`, as the server would.
async fn send(
    cluster: &Cluster,
    at: usize,
    name: &str,
    kind: ServerKind,
    started: u64,
    generation: u64,
) -> String {
    let ad = signed(name, kind, &["/ns"], started, generation);
    client()
        .register(cluster.handle(at).url(), &ad)
        .await
        .unwrap()
        .status
}

/// Sends origin-1's ad (this generation) to director 0 and waits until all hold it.
async fn send_everywhere(cluster: &Cluster, started: u64, generation: u64) {
    send(
        cluster,
        0,
        "origin-1",
        ServerKind::Origin,
        started,
        generation,
    )
    .await;
    eventually(WAIT, "every director holds the ad", || async {
        all_hold(cluster, &origin_key(), generation).await
    })
    .await;
}

async fn all_hold(cluster: &Cluster, key: &AdKey, generation: u64) -> bool {
    cluster
        .running()
        .all(|d| held_generation(d, key) == Some(generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_partial_knowledge_converges_to_everyone_knowing_everyone() {
    // 0 knows 1, 1 knows 2, 2 knows nobody, 3 knows 2.
    let cluster = Cluster::start(4, Tuning::default(), |i| match i {
        0 => vec![1],
        1 => vec![2],
        3 => vec![2],
        _ => vec![],
    })
    .await;
    eventually(WAIT, "every director knows the 3 others", || async {
        cluster.running().all(|d| d.state().peers.urls().len() == 3)
    })
    .await;
    for d in cluster.running() {
        assert!(
            !d.state().peers.urls().contains(&d.url().to_string()),
            "never lists itself as a peer"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_sent_to_one_director_is_served_by_all() {
    let cluster = Cluster::full_mesh(3).await;
    let started = now_ms();
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], started, 1);
    let status = client()
        .register(cluster.handle(0).url(), &ad)
        .await
        .unwrap();
    assert_eq!(status.status, "accepted");
    let sent = Instant::now();
    eventually(WAIT, "all directors route /ns to origin-1", || async {
        cluster
            .running()
            .all(|d| routes_to(d, "/ns/file").as_deref() == Some("origin-1"))
    })
    .await;
    println!("convergence (3 directors): {:?}", sent.elapsed());
    cluster.shutdown().await;
}

/// Waits until no director forwards anything for a while (counters stable, queues empty).
async fn forwarding_idle(cluster: &Cluster, what: &str) {
    let mut last = u64::MAX;
    eventually(WAIT, what, || {
        let now = cluster.forwards_total();
        let idle = now == last && cluster.backlog() == 0;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            idle
        }
    })
    .await;
}

/// A full mesh of `n` directors whose director ads have spread and whose start-up
/// forwarding and catch-up are done (so counters can be compared from here).
async fn settled_mesh(n: usize) -> Cluster {
    settled_mesh_with(n, Tuning::default()).await
}

/// [`settled_mesh`] with `tuning`.
async fn settled_mesh_with(n: usize, tuning: Tuning) -> Cluster {
    let cluster = Cluster::start(n, tuning, move |i| (0..n).filter(|j| *j != i).collect()).await;
    eventually(WAIT, "mesh settled (director ads spread)", || async {
        cluster
            .running()
            .all(|d| d.state().peers.urls().len() == n - 1)
            && cluster.backlog() == 0
    })
    .await;
    forwarding_idle(&cluster, "forward counters idle").await;
    cluster
}

/// Sends `versions` successive versions of one ad to director 0 and checks that every
/// director ends with the last, that forwarding stops, and how many forwards it took.
async fn forwarding_is_bounded(n: usize, versions: u64) {
    let cluster = settled_mesh(n).await;
    let before = cluster.forwards_total();
    let started = now_ms();
    for generation in 1..=versions {
        send(
            &cluster,
            0,
            "origin-1",
            ServerKind::Origin,
            started,
            generation,
        )
        .await;
    }
    eventually(WAIT, "every director holds the last version", || async {
        all_hold(&cluster, &origin_key(), versions).await
    })
    .await;
    forwarding_idle(&cluster, "forwarding stopped").await;
    let forwards = cluster.forwards_total() - before;
    let per_version = forwards as f64 / versions as f64;
    println!(
        "{n} directors: {forwards} forwards for {versions} versions ({per_version:.1} per version)"
    );
    // Each director forwards a version at most once to each other director.
    assert!(
        forwards <= versions * (n as u64) * (n as u64 - 1),
        "{forwards} forwards for {versions} versions on {n} directors"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_stops_with_3_directors() {
    forwarding_is_bounded(3, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_stops_with_5_directors() {
    forwarding_is_bounded(5, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_stops_with_7_directors() {
    forwarding_is_bounded(7, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_director_listing_itself_sends_itself_nothing() {
    // Director 0 is configured with its own URL as well as director 1's.
    let cluster = Cluster::start(2, Tuning::default(), |i| {
        if i == 0 { vec![0, 1] } else { vec![0] }
    })
    .await;
    let me = cluster.handle(0);
    let peer = vec![cluster.nodes[1].url.clone()];
    eventually(WAIT, "director 1 verified", || async {
        me.state().peers.urls() == peer
    })
    .await;
    assert!(me.state().peers.is_self(me.url()));
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    client().register(me.url(), &ad).await.unwrap();
    eventually(WAIT, "director 1 has the ad", || async {
        held_generation(cluster.handle(1), &origin_key()) == Some(1)
    })
    .await;
    let metrics = me.state().metrics.render(0, 0);
    assert!(
        !metrics.contains(&format!("peer=\"{}\"", me.url())),
        "forwarded to itself:\n{metrics}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_director_leaves_the_others_serving_and_forwarding() {
    let mut cluster = Cluster::full_mesh(3).await;
    let started = now_ms();
    send_everywhere(&cluster, started, 1).await;
    cluster.crash(0).await;
    send(&cluster, 1, "origin-1", ServerKind::Origin, started, 2).await;
    eventually(WAIT, "survivors hold v2", || async {
        all_hold(&cluster, &origin_key(), 2).await
    })
    .await;
    for d in cluster.running() {
        assert_eq!(routes_to(d, "/ns/x").as_deref(), Some("origin-1"));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_director_serves_its_store_at_once_then_catches_up() {
    let mut cluster = Cluster::full_mesh(3).await;
    let started = now_ms();
    let c = client();
    send_everywhere(&cluster, started, 1).await;
    cluster.crash(0).await;
    // While 0 is down the origin moves on, and a cache appears.
    send(&cluster, 1, "origin-1", ServerKind::Origin, started, 2).await;
    send(&cluster, 2, "cache-1", ServerKind::Cache, started, 1).await;
    // Restart 0 cut off from its peers: it must serve its own stored view immediately.
    cluster.cut(0, 1);
    cluster.cut(0, 2);
    cluster.restart(0).await;
    let restarted = cluster.handle(0);
    assert_eq!(
        held_generation(restarted, &origin_key()),
        Some(1),
        "view loaded from the store"
    );
    assert_eq!(routes_to(restarted, "/ns/x").as_deref(), Some("origin-1"));
    let located = c.locate(restarted.url(), "/ns/x").await.unwrap();
    assert_eq!(located.status, 307);
    // Heal: it catches up without anyone re-advertising.
    cluster.heal(0, 1);
    cluster.heal(0, 2);
    let healed = Instant::now();
    eventually(WAIT, "restarted director caught up", || async {
        let d = cluster.handle(0);
        held_generation(d, &origin_key()) == Some(2)
            && routes_to(d, "/ns/x").as_deref() == Some("cache-1")
    })
    .await;
    println!("catch-up after heal: {:?}", healed.elapsed());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_heals_to_convergence() {
    let cluster = Cluster::full_mesh(3).await;
    let started = now_ms();
    // Isolate director 2 completely.
    cluster.cut(2, 0);
    cluster.cut(2, 1);
    let c = client();
    for generation in 1..=3 {
        c.register(
            cluster.handle(0).url(),
            &signed(
                "origin-1",
                ServerKind::Origin,
                &["/ns"],
                started,
                generation,
            ),
        )
        .await
        .unwrap();
    }
    eventually(WAIT, "director 1 holds v3", || async {
        held_generation(cluster.handle(1), &origin_key()) == Some(3)
    })
    .await;
    assert_eq!(
        held_generation(cluster.handle(2), &origin_key()),
        None,
        "partitioned"
    );
    cluster.heal(2, 0);
    cluster.heal(2, 1);
    let healed = Instant::now();
    eventually(WAIT, "partitioned director converged", || async {
        all_hold(&cluster, &origin_key(), 3).await
    })
    .await;
    println!("convergence after heal: {:?}", healed.elapsed());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ad_disappears_everywhere() {
    let clock = ManualClock::new(now_ms());
    let tuning = Tuning {
        clock: Some(clock.clone()),
        ..Tuning::default()
    };
    let cluster = Cluster::start(3, tuning, |i| (0..3).filter(|j| *j != i).collect()).await;
    let started = clock.now();
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], started, 1);
    let expires_at = ad.ad.expires_at;
    client()
        .register(cluster.handle(0).url(), &ad)
        .await
        .unwrap();
    eventually(WAIT, "all hold the ad", || async {
        all_hold(&cluster, &origin_key(), 1).await
    })
    .await;
    clock.set(expires_at);
    eventually(WAIT, "the ad is gone everywhere", || async {
        cluster
            .running()
            .all(|d| held_generation(d, &origin_key()).is_none() && routes_to(d, "/ns/x").is_none())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_a_pair_keeps_itself_and_its_view() {
    // Pelican #3449: with one of two directors down, the survivor must still list itself,
    // services must still reach it, and its view must not empty.
    let mut cluster = Cluster::full_mesh(2).await;
    let started = now_ms();
    let c = client();
    send_everywhere(&cluster, started, 1).await;
    let dead = cluster.nodes[1].url.clone();
    let survivor = cluster.nodes[0].url.clone();
    cluster.crash(1).await;
    // Wait until the survivor has noticed that its peer is gone.
    eventually(WAIT, "survivor marks the peer unreachable", || async {
        let list = c.directors(&survivor).await.unwrap();
        list.iter().any(|d| d.advertise_url == dead && !d.reachable)
    })
    .await;
    let listed = c.directors(&survivor).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|d| d.advertise_url == survivor && d.is_self),
        "counts itself"
    );
    // A service whose seed is the dead director still finds the survivor.
    let found =
        skein::discovery::discover_directors(&c, Some(&dead), std::slice::from_ref(&survivor))
            .await;
    assert!(found.contains(&survivor), "{found:?}");
    let status = c
        .register(
            &survivor,
            &signed("origin-1", ServerKind::Origin, &["/ns"], started, 2),
        )
        .await
        .unwrap();
    assert_eq!(status.status, "accepted");
    assert_eq!(
        routes_to(cluster.handle(0), "/ns/x").as_deref(),
        Some("origin-1")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_older_copy_never_overwrites_a_newer_ad() {
    let cluster = Cluster::full_mesh(2).await;
    let started = now_ms();
    let c = client();
    let newer = signed("origin-1", ServerKind::Origin, &["/ns"], started, 5);
    let older = signed("origin-1", ServerKind::Origin, &["/ns"], started, 4);
    assert_eq!(
        c.register(cluster.handle(0).url(), &newer)
            .await
            .unwrap()
            .status,
        "accepted"
    );
    let from = cluster.handle(1).url().to_string();
    assert_eq!(
        c.forward(cluster.handle(0).url(), &older, &from)
            .await
            .unwrap()
            .status,
        "stale"
    );
    let restarted_earlier = signed("origin-1", ServerKind::Origin, &["/ns"], started - 1, 99);
    assert_eq!(
        c.forward(cluster.handle(0).url(), &restarted_earlier, &from)
            .await
            .unwrap()
            .status,
        "stale"
    );
    assert_eq!(held_generation(cluster.handle(0), &origin_key()), Some(5));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_newer_even_when_the_clock_went_back() {
    let clock = ManualClock::new(now_ms());
    let tuning = Tuning {
        clock: Some(clock.clone()),
        ..Tuning::default()
    };
    let mut cluster = Cluster::start(2, tuning, |i| vec![1 - i]).await;
    let key = AdKey {
        kind: ServerKind::Director,
        name: director_name(0),
    };
    let first_life = cluster.handle(0).state().identity.instance();
    eventually(WAIT, "peer holds director 0's ad", || async {
        cluster.handle(1).state().ledger.version_of(&key).is_some()
    })
    .await;
    cluster.crash(0).await;
    // Two minutes back: within the peers' skew allowance and the ad lifetime.
    clock.set(first_life.started_at - 120_000);
    cluster.restart(0).await;
    let second_life = cluster.handle(0).state().identity.instance();
    assert!(
        second_life.started_at > first_life.started_at,
        "{second_life:?} after {first_life:?}"
    );
    eventually(WAIT, "peer holds the second life's ad", || async {
        cluster
            .handle(1)
            .state()
            .ledger
            .version_of(&key)
            .is_some_and(|v| v.uuid == second_life.uuid)
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_director_delays_no_other_when_a_service_advertises() {
    use skein::advertiser::Advertiser;
    use skein::config::ServiceConfig;

    let cluster = Cluster::full_mesh(1).await;
    // A "director" that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("origin-1.key");
    write_key(&key_path, "origin-1");
    let config = ServiceConfig::from_toml(&format!(
        "name = \"origin-1\"\nkind = \"origin\"\ndata_url = \"http://origin-1.example:8443\"\nkey = {key_path:?}\n\
         directors = [\"{hung_url}\", \"{}\"]\n[[namespace]]\npath = \"/ns\"\npublic_reads = true\n",
        cluster.handle(0).url()
    ))
    .unwrap();
    let advertiser = Advertiser::new(config).unwrap();
    let sending =
        tokio::spawn(async move { advertiser.advertise_once(skein::ad::AdStatus::Ok).await });
    eventually(
        Duration::from_secs(3),
        "the live director got the ad",
        || async { held_generation(cluster.handle(0), &origin_key()).is_some() },
    )
    .await;
    assert!(
        !sending.is_finished(),
        "still waiting for the hung director"
    );
    let deliveries = sending.await.unwrap();
    let held: Vec<bool> = deliveries.iter().map(|d| d.held()).collect();
    assert_eq!(held.iter().filter(|h| **h).count(), 1, "{deliveries:?}");
    drop(hung);
    cluster.shutdown().await;
}

fn write_key(path: &std::path::Path, name: &str) {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let seed = skein::fixtures::key_for(name).to_bytes();
    std::fs::write(
        path,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directors_find_each_other_through_the_discovery_document_alone() {
    // No static lists: every director's discovery URL is director 0, which serves the
    // federation document like any Skein director.
    let tuning = Tuning {
        discovery_from: Some(0),
        ..Tuning::default()
    };
    let cluster = Cluster::start(3, tuning, |_| vec![]).await;
    eventually(WAIT, "every director knows the 2 others", || async {
        cluster.running().all(|d| d.state().peers.urls().len() == 2)
    })
    .await;
    let doc = client().discovery(cluster.handle(1).url()).await.unwrap();
    assert_eq!(doc.director_endpoint, cluster.handle(1).url());
    assert_eq!(doc.director_advertise_endpoints.len(), 3, "{doc:?}");
    cluster.shutdown().await;
}

#[path = "cluster/forwarding.rs"]
mod forwarding;
#[path = "cluster/peers.rs"]
mod peers;
