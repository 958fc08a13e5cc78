//! Peers: only a signed director ad makes a URL a peer; each peer's work has one owner;
//! idle keep-alive connections never fail a request.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use skein::ad::ServerKind;
use skein::peers::Source;

use super::WAIT;
use crate::common::*;

/// The `peer` labels of a director's forward metrics.
fn peer_labels(d: &skein::director::DirectorHandle) -> Vec<String> {
    let text = d.state().metrics.render(0, 0);
    let mut labels: Vec<String> = text
        .lines()
        .filter_map(|l| l.split("peer=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_list_of_500_urls_makes_no_forward_target() {
    let fake = FakePeer::start().await; // serves a list, but no signed director ad
    let fake_url = fake.url.clone();
    // Director 0 is seeded with the fake; director 1 is alone (only the fake lists it);
    // director 2 is seeded with director 0 and never talks to the fake.
    let cluster = Cluster::start_seeded(3, 3, Tuning::default(), move |i, urls| match i {
        0 => vec![fake_url.clone()],
        2 => vec![urls[0].clone()],
        _ => vec![],
    })
    .await;
    let mut listed: Vec<String> = (1..=500).map(|p| format!("http://127.0.0.1:{p}")).collect();
    listed[250] = cluster.nodes[1].url.clone();
    fake.list(&listed);
    let bogus: Vec<String> = listed
        .iter()
        .filter(|u| **u != cluster.nodes[1].url)
        .cloned()
        .collect();
    let (d0, d2) = (cluster.handle(0), cluster.handle(2));
    let d1_url = cluster.nodes[1].url.clone();
    let mut most_candidates = 0;
    // The list is 500 long and candidates are capped at 64: it takes a few rounds.
    eventually(
        3 * WAIT,
        "director 0 verifies director 1 from the list",
        || {
            let candidates = d0.state().peers.candidates().len();
            most_candidates = most_candidates.max(candidates);
            assert!(candidates <= 64 + 1, "{candidates} candidates");
            assert!(
                !d2.state()
                    .peers
                    .candidates()
                    .iter()
                    .any(|c| bogus.contains(c)),
                "director 2 learned a URL of the fake's list"
            );
            let urls = d0.state().peers.urls();
            let found = urls.contains(&d1_url);
            async move { found }
        },
    )
    .await;
    assert!(most_candidates > 1, "the list was read");
    // Director 1 is used: an ad sent to director 0 is forwarded to it.
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    client().register(d0.url(), &ad).await.unwrap();
    eventually(WAIT, "director 1 holds the ad", || async {
        held_generation(cluster.handle(1), &origin()) == Some(1)
    })
    .await;
    let mut real = vec![cluster.nodes[1].url.clone(), cluster.nodes[2].url.clone()];
    real.sort();
    eventually(WAIT, "forwarded to directors 1 and 2 only", || async {
        peer_labels(d0) == real
    })
    .await;
    assert!(d0.state().peers.urls().iter().all(|u| real.contains(u)));
    assert!(
        d2.state()
            .peers
            .urls()
            .iter()
            .all(|u| cluster.nodes.iter().any(|n| n.url == *u)),
        "director 2 only has real peers"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_of_self_and_of_a_peer_collapse() {
    let alias = |u: &str| u.replace("127.0.0.1", "localhost");
    let cluster = Cluster::start_seeded(2, 2, Tuning::default(), move |i, urls| {
        if i == 0 {
            vec![alias(&urls[0]), alias(&urls[1]), urls[1].clone()]
        } else {
            vec![]
        }
    })
    .await;
    let d0 = cluster.handle(0);
    let me_alias = alias(d0.url());
    let peer = cluster.nodes[1].url.clone();
    // The peer's worker is spawned just after it becomes a peer: wait for it too.
    eventually(WAIT, "aliases resolved", || async {
        d0.state().peers.urls() == vec![peer.clone()]
            && d0.state().peers.is_self(&me_alias)
            && d0.state().peers.candidates().is_empty()
            && d0.state().peers.workers() >= 1
    })
    .await;
    assert_eq!(d0.state().peers.workers(), 1, "one worker for one director");
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    client().register(d0.url(), &ad).await.unwrap();
    eventually(WAIT, "director 1 holds the ad", || async {
        held_generation(cluster.handle(1), &origin()) == Some(1)
    })
    .await;
    assert_eq!(peer_labels(d0), vec![peer], "no alias and never itself");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_peer_stops_its_worker_and_its_requests() {
    let (fake, cluster) = verified_fake_peer().await;
    let d = cluster.handle(0);
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    client().register(d.url(), &ad).await.unwrap();
    eventually(WAIT, "the fake got the ad", || async {
        fake.state.forwarded.lock().unwrap().contains("origin-1")
    })
    .await;
    assert_eq!(d.state().peers.workers(), 1);
    assert!(d.state().peers.forget(&fake.url));
    eventually(WAIT, "its worker ended", || async {
        d.state().peers.workers() == 0
    })
    .await;
    let before = fake.state.requests();
    let ad = signed("origin-2", ServerKind::Origin, &["/ns"], now_ms(), 1);
    client().register(d.url(), &ad).await.unwrap();
    // Several discovery rounds (300 ms) pass: nothing reaches the forgotten URL.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(fake.state.requests(), before, "a request reached it");
    }
    assert!(d.state().peers.urls().is_empty());
    cluster.shutdown().await;
}

/// A peer from before offers answers `/forward/offer` with 404: the director then sends
/// it every ad in full, and stops offering to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_takes_no_offers_gets_every_ad_in_full() {
    // Offered soon (before the follow-up sync, which would push what the fake lacks;
    // with no delay at all ads are pushed in full, never offered).
    let (fake, cluster) = verified_fake_peer_with(Tuning {
        forward_delay: "300ms",
        ..Tuning::default()
    })
    .await;
    let d = cluster.handle(0);
    let offers = || {
        fake.state
            .unknown_paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.as_str() == "/api/v1.0/director/forward/offer")
            .count()
    };
    for (i, name) in ["origin-1", "origin-2", "cache-1"].into_iter().enumerate() {
        let kind = if name.starts_with("cache") {
            ServerKind::Cache
        } else {
            ServerKind::Origin
        };
        let ad = signed(name, kind, &["/ns"], now_ms(), 1);
        client().register(d.url(), &ad).await.unwrap();
        eventually(WAIT, "the fake got the ad in full", || async {
            fake.state.forwarded.lock().unwrap().contains(name)
        })
        .await;
        if i == 0 {
            assert!(offers() >= 1, "the first ad was offered first");
        }
    }
    assert_eq!(offers(), 1, "one 404 is enough to stop offering");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_halves_the_batch_and_drops_nothing() {
    let (fake, cluster) = verified_fake_peer().await;
    let d = cluster.handle(0);
    let now = now_ms();
    let ads = [
        signed("origin-1", ServerKind::Origin, &["/ns"], now, 1),
        signed("origin-2", ServerKind::Origin, &["/ns"], now, 1),
        signed("cache-1", ServerKind::Cache, &["/ns"], now, 1),
    ];
    let largest = ads
        .iter()
        .map(|a| serde_json::to_vec(a).unwrap().len())
        .max()
        .unwrap();
    // One ad (in a JSON array) fits; two do not.
    fake.state.max_body.store(largest + 16, Ordering::SeqCst);
    // Queue all three while the link is cut, so they leave in one batch.
    d.faults().cut(&fake.url);
    for ad in &ads {
        client().register(d.url(), ad).await.unwrap();
    }
    d.faults().heal(&fake.url);
    eventually(WAIT, "every ad reached the fake", || async {
        let got = fake.state.forwarded.lock().unwrap().clone();
        ["origin-1", "origin-2", "cache-1"]
            .iter()
            .all(|n| got.contains(*n))
    })
    .await;
    assert!(
        fake.state.too_large.load(Ordering::SeqCst) >= 1,
        "no 413 seen"
    );
    let metrics = d.state().metrics.render(0, 0);
    assert!(!metrics.contains("result=\"rejected\""), "{metrics}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_never_fail_a_request() {
    // The server closes idle connections after 2 s; announces, polls and the service's
    // ads come every 1.9 to 2.1 s, on clients that keep idle connections for 20 s.
    let tuning = Tuning {
        poll_interval: "1900ms",
        announce_interval: "2100ms",
        limits: "idle_timeout = \"2s\"",
        ..Tuning::default()
    };
    let cluster = Cluster::start(3, tuning, |i| (0..3).filter(|j| *j != i).collect()).await;
    eventually(WAIT, "every director verified the others", || async {
        cluster.running().all(|d| d.state().peers.urls().len() == 2)
    })
    .await;
    let service = client();
    let started = Instant::now();
    let mut generation = 0;
    let pauses = [1950u64, 2000, 2050, 2100];
    while started.elapsed() < Duration::from_secs(30) {
        generation += 1;
        let ad = signed(
            "origin-1",
            ServerKind::Origin,
            &["/ns"],
            now_ms(),
            generation,
        );
        for d in cluster.running() {
            service.register(d.url(), &ad).await.unwrap_or_else(|e| {
                panic!("advertisement {generation} to {} failed: {e}", d.url())
            });
        }
        for d in cluster.running() {
            let metrics = d.state().metrics.render(0, 0);
            assert!(
                !metrics.contains("result=\"error\""),
                "a forward failed:\n{metrics}"
            );
            for peer in d.state().peers.statuses() {
                let (url, error) = (peer.url, peer.last_error);
                if peer.name.is_none() {
                    continue; // not verified (yet): only verified peers are forwarded to
                }
                assert!(
                    error.is_none(),
                    "{} found {url} unreachable: {error:?}",
                    d.url()
                );
            }
        }
        let pause = pauses[generation as usize % pauses.len()];
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_outlives_the_request_timeout() {
    use std::io::{Read, Write};
    // Requests must finish within 1 s, but an idle keep-alive connection lives 60 s.
    let tuning = Tuning {
        limits: "request_timeout = \"1s\"",
        ..Tuning::default()
    };
    let cluster = Cluster::start(1, tuning, |_| vec![]).await;
    let addr = cluster.handle(0).addr();
    let answers = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answers = Vec::new();
        for _ in 0..2 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            // Idle for longer than the request timeout.
            std::thread::sleep(Duration::from_millis(1600));
        }
        answers
    })
    .await
    .unwrap();
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_director_removed_from_the_trust_file_stops_being_a_peer_until_trusted_again() {
    let cluster = Cluster::full_mesh(2).await;
    let (d0, url1) = (cluster.handle(0), cluster.nodes[1].url.clone());
    eventually(WAIT, "director 0 verified director 1", || async {
        d0.state().peers.urls() == vec![url1.clone()] && d0.state().peers.workers() == 1
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = cluster.config(0);
    config.federation.trust = dir.path().join("trust.toml");
    let write = |directors: &[&str]| {
        let mut servers: Vec<(&str, &str, &[&str])> = directors
            .iter()
            .map(|d| (*d, "director", &[][..]))
            .collect();
        servers.push(("origin-1", "origin", &["/ns"]));
        std::fs::write(&config.federation.trust, trust_toml(&servers)).unwrap();
    };

    write(&["director-0"]);
    let report = d0.reload_config(config.clone()).await.trust.unwrap();
    assert_eq!(report.dropped_peers, vec![url1.clone()]);
    assert!(
        report
            .revoked
            .iter()
            .any(|r| r.key.to_string() == "director/director-1")
    );
    // At once: no forward target, no link, its worker stopping.
    assert!(d0.state().peers.urls().is_empty());
    assert!(d0.state().peers.link(&url1).is_none());
    eventually(WAIT, "its worker ended", || async {
        d0.state().peers.workers() == 0
    })
    .await;
    // It is probed again (a configured URL) and refused, and stays out.
    eventually(WAIT, "a probe of director 1 was refused", || async {
        d0.state().peers.statuses().iter().any(|s| {
            s.url == url1
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("not verified yet") && !e.contains("(0 "))
        })
    })
    .await;
    assert!(d0.state().peers.urls().is_empty());
    let forwards = d0.state().metrics.forwards_total();
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    client().register(d0.url(), &ad).await.unwrap();
    assert_eq!(d0.state().replicator.backlog(), 0, "queued for nobody");
    // Director 1 still trusts director 0 and pulls the ad by digest sync; by then a
    // forward from director 0 would long have been tried.
    eventually(WAIT, "director 1 pulled the ad", || async {
        held_generation(cluster.handle(1), &origin()) == Some(1)
    })
    .await;
    assert_eq!(
        d0.state().metrics.forwards_total(),
        forwards,
        "no forward to director 1"
    );

    write(&["director-0", "director-1"]);
    let report = d0.reload_config(config).await.trust.unwrap();
    assert!(report.dropped_peers.is_empty());
    eventually(WAIT, "director 1 is a peer again", || async {
        d0.state().peers.urls() == vec![url1.clone()] && d0.state().peers.workers() == 1
    })
    .await;
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 2);
    client().register(d0.url(), &ad).await.unwrap();
    eventually(WAIT, "director 0 forwarded again", || async {
        d0.state().metrics.forwards_total() > forwards
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_director_stopped_before_verifying_anyone_still_withdraws_from_configured_ones() {
    // The fake serves no director ad, so it is never verified: a configured candidate.
    let fake = FakePeer::start().await;
    let seed = fake.url.clone();
    let mut cluster =
        Cluster::start_seeded(1, 2, Tuning::default(), move |_, _| vec![seed.clone()]).await;
    assert!(cluster.handle(0).state().peers.urls().is_empty());
    assert_eq!(
        cluster.handle(0).state().peers.candidates(),
        vec![fake.url.clone()]
    );
    assert!(fake.state.forwarded.lock().unwrap().is_empty());
    cluster.stop(0).await;
    assert!(
        fake.state.forwarded.lock().unwrap().contains("director-0"),
        "the withdrawal reached the configured director"
    );
}

/// One director that has learned of, and verified, a fake peer signing as director-1.
async fn verified_fake_peer() -> (FakePeer, Cluster) {
    verified_fake_peer_with(Tuning::default()).await
}

async fn verified_fake_peer_with(tuning: Tuning) -> (FakePeer, Cluster) {
    let fake = FakePeer::start().await;
    fake.sign_as("director-1");
    let cluster = Cluster::start_seeded(1, 2, tuning, |_, _| vec![]).await;
    let d = cluster.handle(0);
    d.state().peers.add(&fake.url, Source::Learned);
    eventually(WAIT, "the fake is verified", || async {
        d.state().peers.urls() == vec![fake.url.clone()]
    })
    .await;
    (fake, cluster)
}

fn origin() -> skein::ad::AdKey {
    skein::ad::AdKey {
        kind: ServerKind::Origin,
        name: "origin-1".into(),
    }
}

/// Figures, not assertions: CPU and memory of one director seeded with a fake peer that
/// lists 500 dead URLs, against the same director whose fake lists none. Run with
/// `cargo nextest run --test cluster -E 'test(cost_of_a_fake_list)' --run-ignored only
/// --no-capture` (under `flock /tmp/bench.lock`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; takes a minute"]
async fn cost_of_a_fake_list() {
    for urls in [0usize, 500] {
        let fake = FakePeer::start().await;
        let listed: Vec<String> = (1..=urls)
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        fake.list(&listed);
        let fake_url = fake.url.clone();
        let tuning = Tuning {
            poll_interval: "1s",
            ..Tuning::default()
        };
        let cluster = Cluster::start_seeded(1, 1, tuning, move |_, _| vec![fake_url.clone()]).await;
        let (cpu0, _) = process_figures();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let (cpu1, rss) = process_figures();
        let d = cluster.handle(0);
        println!(
            "fake list of {urls} URLs: {:.3} cores over {:?}, process RSS {rss} kB, \
             candidates {}, peers {}, forward attempts {}",
            (cpu1 - cpu0) / started.elapsed().as_secs_f64(),
            started.elapsed(),
            d.state().peers.candidates().len(),
            d.state().peers.urls().len(),
            d.state().metrics.forwards_total(),
        );
        cluster.shutdown().await;
    }
}

/// (CPU seconds used by this process, resident set in kB), from /proc/self.
fn process_figures() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}
