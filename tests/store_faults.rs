//! A director's store damaged while it was stopped, and its clock set back across a
//! restart: real directors in one process, polling until a deadline.

mod common;

use std::time::Duration;

use common::tmpfs::{Tmpfs, fill};
use common::*;
use skein::ad::{AdKey, AdStatus, ServerKind};
use skein::clock::ManualClock;
use skein::ledger::StoreState;

const WAIT: Duration = Duration::from_secs(30);

const SERVERS: [(&str, ServerKind); 3] = [
    ("origin-1", ServerKind::Origin),
    ("origin-2", ServerKind::Origin),
    ("cache-1", ServerKind::Cache),
];

fn key(name: &str, kind: ServerKind) -> AdKey {
    AdKey {
        kind,
        name: name.into(),
    }
}

/// Registers every fixture server with director `at`, one ad (one commit) each.
async fn register_all(cluster: &Cluster, at: usize) {
    let started = now_ms();
    for (name, kind) in SERVERS {
        let ad = signed(name, kind, &["/ns"], started, 1);
        let answer = client()
            .register(cluster.handle(at).url(), &ad)
            .await
            .unwrap();
        assert_eq!(answer.status, "accepted");
    }
}

fn servers_held(d: &skein::director::DirectorHandle) -> usize {
    SERVERS
        .iter()
        .filter(|(name, kind)| held_generation(d, &key(name, *kind)).is_some())
        .count()
}

/// `GET /ready`: status code and JSON.
async fn ready(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{url}/ready")).await.unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn truncate_db_to_half(dir: &std::path::Path) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("db"))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
}

/// Restarts (stopped) director `i`: the damage it found at start, the damaged log kept.
async fn restart_finding_damage(cluster: &mut Cluster, i: usize) -> skein::store::Damage {
    cluster.restart(i).await;
    let found = cluster
        .handle(i)
        .state()
        .ledger
        .recovery()
        .damage()
        .cloned();
    let damage = found.expect("damage found at start");
    println!(
        "found: {}; {} ads survived; moved to {}",
        damage.what,
        damage.survivors,
        damage.moved_to.display()
    );
    assert!(damage.moved_to.join("db").exists(), "the damaged log kept");
    damage
}

/// Stops director `i`, truncates its db to half, restarts it: the damage it found.
async fn damage_and_restart(cluster: &mut Cluster, i: usize) -> skein::store::Damage {
    cluster.stop(i).await;
    truncate_db_to_half(&cluster.nodes[i].data_dir);
    restart_finding_damage(cluster, i).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refilled_from_a_peer_before_ready() {
    let mut cluster = Cluster::full_mesh(2).await;
    register_all(&cluster, 0).await;
    eventually(WAIT, "the peer holds every ad", || async {
        servers_held(cluster.handle(1)) == SERVERS.len()
    })
    .await;
    damage_and_restart(&mut cluster, 0).await;
    let d0 = cluster.handle(0);
    eventually(WAIT, "refilled from the peer, and ready", || async {
        d0.state().ledger.recovery().state() == StoreState::Sound
            && servers_held(d0) == SERVERS.len()
            && ready(d0.url()).await.0 == 200
    })
    .await;
    assert!(
        get_text(&format!("{}/metrics", d0.url()))
            .await
            .contains("skein_store_degraded 0")
    );
    // Refilled, the store forgets its damage: a restart finds it sound.
    eventually(WAIT, "the record of the damage cleared", || async {
        d0.state().ledger.store().damage().is_none()
    })
    .await;
    cluster.stop(0).await;
    cluster.restart(0).await;
    let d0 = cluster.handle(0);
    assert_eq!(d0.state().ledger.recovery().damage(), None);
    assert_eq!(d0.state().ledger.recovery().state(), StoreState::Sound);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_with_no_peer_serves_what_survived_and_says_degraded() {
    let mut cluster = Cluster::start(1, Tuning::default(), |_| vec![]).await;
    register_all(&cluster, 0).await;
    let damage = damage_and_restart(&mut cluster, 0).await;
    let d0 = cluster.handle(0);
    assert_eq!(d0.state().ledger.recovery().state(), StoreState::Degraded);
    let held = servers_held(d0);
    println!(
        "found: {}; serving {held}/{} servers that survived",
        damage.what,
        SERVERS.len()
    );
    assert!(held <= damage.survivors);
    let (code, body) = ready(d0.url()).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("damaged"),
        "{body}"
    );
    let metrics = get_text(&format!("{}/metrics", d0.url())).await;
    assert!(metrics.contains("skein_store_degraded 1"), "{metrics}");
    let page = get_text(&format!("{}/", d0.url())).await;
    assert!(page.contains("degraded"));
    // It still takes ads, and serves them.
    register_all(&cluster, 0).await;
    assert_eq!(servers_held(cluster.handle(0)), SERVERS.len());
    assert!(routes_to(cluster.handle(0), "/ns/x").is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_director_restarted_with_its_clock_an_hour_behind_is_harmless() {
    let mut cluster = Cluster::start(2, Tuning::default(), |i| vec![1 - i]).await;
    let own = key(&director_name(0), ServerKind::Director);
    eventually(WAIT, "the peer holds director 0's ad", || async {
        cluster.handle(1).state().ledger.version_of(&own).is_some()
    })
    .await;
    // Director 0 forwards its withdrawal only to peers it has verified.
    eventually(WAIT, "director 0 verified its peer", || async {
        !cluster.handle(0).state().peers.urls().is_empty()
    })
    .await;
    cluster.stop(0).await;
    eventually(WAIT, "the peer holds the withdrawal", || async {
        cluster
            .handle(1)
            .state()
            .ledger
            .view()
            .get(&own)
            .is_some_and(|a| a.ad.status == AdStatus::ShuttingDown)
    })
    .await;
    cluster.nodes[0].clock = Some(ManualClock::new(now_ms() - 3_600_000));
    cluster.restart(0).await;
    let life = cluster.handle(0).state().identity.instance();
    let serving = |d: usize| {
        let held = cluster.handle(d).state().ledger.view().get(&own).cloned();
        held.is_some_and(|a| a.ad.instance_id == life && a.ad.status == AdStatus::Ok)
    };
    assert!(serving(0), "director 0 refused its own ad");
    eventually(
        WAIT,
        "the peer replaced the withdrawal with the new life's ad",
        || async { serving(1) },
    )
    .await;
    // A correctly clocked server's ad is accepted by the director whose clock is behind.
    let ad = signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    let answer = client().register(cluster.handle(0).url(), &ad).await;
    assert_eq!(answer.unwrap().status, "accepted");
    cluster.shutdown().await;
}

/// Copies the files and directories under `from` into `to` (which exists).
/// A director alone, its store damaged: degraded, also across a restart, until every ad
/// the lost store held has expired or been sent again (`ads.max_lifetime` after the
/// damage); then ready, and a restart finds the store sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_damaged_director_is_ready_once_max_lifetime_has_passed() {
    let tuning = Tuning {
        ads: "max_lifetime = \"8s\"",
        ..Tuning::default()
    };
    let mut cluster = Cluster::start(1, tuning, |_| vec![]).await;
    register_all(&cluster, 0).await;
    let damage = damage_and_restart(&mut cluster, 0).await;
    assert_eq!(ready(cluster.handle(0).url()).await.0, 503);
    cluster.stop(0).await;
    cluster.restart(0).await;
    let d0 = cluster.handle(0);
    assert_eq!(d0.state().ledger.recovery().damage(), Some(&damage));
    assert_eq!(d0.state().ledger.recovery().state(), StoreState::Degraded);
    eventually(WAIT, "ready once max_lifetime has passed", || async {
        ready(d0.url()).await.0 == 200 && d0.state().ledger.store().damage().is_none()
    })
    .await;
    cluster.stop(0).await;
    cluster.restart(0).await;
    let d0 = cluster.handle(0);
    assert_eq!(d0.state().ledger.recovery().damage(), None);
    assert_eq!(ready(d0.url()).await.0, 200);
    cluster.shutdown().await;
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A store as the compose fault test left director-c's: sled's log after a full disk and
/// a restart, cut to half of what was written. sled opens it, then fails a read with
/// `Corruption` where the open did not classify the error (the schema read), so every
/// start failed the same way and Docker restarted it for ever. It must be moved aside,
/// and the director refilled from its peer and ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_after_a_full_disk_is_moved_aside_and_refilled() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store-cut-after-full-disk");
    let mut cluster = Cluster::full_mesh(2).await;
    register_all(&cluster, 0).await;
    eventually(WAIT, "the peer holds every ad", || async {
        servers_held(cluster.handle(1)) == SERVERS.len()
    })
    .await;
    cluster.stop(1).await;
    let data = cluster.nodes[1].data_dir.clone();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    copy_tree(&fixture, &data);
    restart_finding_damage(&mut cluster, 1).await;
    let d1 = cluster.handle(1);
    eventually(WAIT, "refilled from the peer, and ready", || async {
        d1.state().ledger.recovery().state() == StoreState::Sound
            && servers_held(d1) == SERVERS.len()
            && ready(d1.url()).await.0 == 200
    })
    .await;
    cluster.shutdown().await;
}

/// The data directory is itself a mount point, as a container's volume is
/// (`docker-compose.yml` mounts one on `/var/lib/skein`): the damaged store cannot be
/// renamed beside it, so its files move into `corrupt-<ms>/` inside it, and the director
/// starts on what survived instead of failing to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_on_its_own_mount_point_moves_aside_inside_it() {
    let mut cluster = Cluster::start(1, Tuning::default(), |_| vec![]).await;
    register_all(&cluster, 0).await;
    cluster.stop(0).await;
    let data = cluster.nodes[0].data_dir.clone();
    let saved = tempfile::tempdir().unwrap();
    copy_tree(&data, saved.path());
    let Some(mount) = small_disk(&data, "size=64m") else {
        return;
    };
    copy_tree(saved.path(), mount.path());
    truncate_db_to_half(&data);
    let damage = restart_finding_damage(&mut cluster, 0).await;
    let d0 = cluster.handle(0);
    assert_eq!(damage.moved_to.parent(), Some(data.as_path()));
    assert_eq!(d0.state().ledger.recovery().state(), StoreState::Degraded);
    assert!(servers_held(d0) <= damage.survivors);
    // The fresh store takes ads, and a restart opens it: the damaged files inside the
    // directory are not taken for the store. No peer has refilled it, so the restart
    // still knows of the first damage (recorded in the fresh store), and no more.
    register_all(&cluster, 0).await;
    cluster.stop(0).await;
    cluster.restart(0).await;
    let d0 = cluster.handle(0);
    assert_eq!(d0.state().ledger.recovery().damage(), Some(&damage));
    assert_eq!(d0.state().ledger.recovery().state(), StoreState::Degraded);
    assert_eq!(servers_held(d0), SERVERS.len());
    // Damage found at open (no manifest) takes the same way out; the first damaged files
    // stay where they went, and every ad of the intact log is kept.
    cluster.stop(0).await;
    std::fs::remove_file(data.join("skein-manifest.json")).unwrap();
    cluster.restart(0).await;
    let d0 = cluster.handle(0);
    let second = d0.state().ledger.recovery().damage().cloned();
    let second = second.expect("a missing manifest is damage");
    assert_eq!(second.moved_to.parent(), Some(data.as_path()));
    assert_ne!(second.moved_to, damage.moved_to);
    assert!(damage.moved_to.join("db").exists());
    assert_eq!(servers_held(d0), SERVERS.len());
    cluster.shutdown().await;
    drop(mount);
}

/// A tmpfs on `dir`, or `None` (after printing why the test is skipped).
fn small_disk(dir: &std::path::Path, options: &str) -> Option<Tmpfs> {
    Tmpfs::mount(dir, options)
        .map_err(|why| {
            println!(
                "SKIPPED: cannot mount a tmpfs on {} ({why}); run as root",
                dir.display()
            )
        })
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_fails_loudly_on_a_full_disk_and_recovers_when_space_returns() {
    let mut cluster = Cluster::start(1, Tuning::default(), |_| vec![]).await;
    cluster.stop(0).await;
    let data = cluster.nodes[0].data_dir.clone();
    let _ = std::fs::remove_dir_all(&data);
    let Some(_mount) = small_disk(&data, "size=8m") else {
        return;
    };
    cluster.restart(0).await;
    let url = cluster.handle(0).url().to_string();
    assert_eq!(ready(&url).await.0, 200);
    let filler = fill(&data);
    let started = now_ms();
    // The manifest is rewritten in place and sled preallocates its log, so the first
    // commits on a full disk may still fit (and are then truly durable); large ads use
    // up sled's room until a commit needs a block the disk no longer has.
    let paths: Vec<String> = (0..400)
        .map(|i| format!("/ns/a-long-namespace-name-to-fill-the-log-quickly/{i:04}"))
        .collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut generation = 0;
    let refused = loop {
        generation += 1;
        assert!(generation < 2_000, "no registration refused on a full disk");
        let ad = signed("origin-1", ServerKind::Origin, &paths, started, generation);
        if let Err(refused) = client().register(&url, &ad).await {
            break refused;
        }
    };
    assert!(
        refused.to_string().contains("500") || refused.to_string().contains("503"),
        "refused for the disk, not the ad: {refused}"
    );
    let (code, body) = ready(&url).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "write_failing", "{body}");
    let metrics = get_text(&format!("{url}/metrics")).await;
    assert!(metrics.contains("skein_store_write_failing 1"), "{metrics}");
    // Still full: still refused, never acknowledged.
    let ad2 = signed("origin-2", ServerKind::Origin, &["/ns"], started, 1);
    assert!(client().register(&url, &ad2).await.is_err());

    std::fs::remove_file(filler).unwrap();
    eventually(
        WAIT,
        "ready again once space returns, without any new ad",
        || async { ready(&url).await.0 == 200 },
    )
    .await;
    let metrics = get_text(&format!("{url}/metrics")).await;
    assert!(metrics.contains("skein_store_write_failing 0"), "{metrics}");
    let ad3 = signed("cache-1", ServerKind::Cache, &["/ns"], started, 1);
    assert_eq!(
        client().register(&url, &ad3).await.unwrap().status,
        "accepted"
    );
    // What was refused during the outage was kept pending and is now durable too:
    // a restart holds all three.
    cluster.stop(0).await;
    cluster.restart(0).await;
    assert_eq!(servers_held(cluster.handle(0)), SERVERS.len());
    assert!(
        cluster
            .handle(0)
            .state()
            .ledger
            .recovery()
            .damage()
            .is_none()
    );
    cluster.shutdown().await;
}

/// sled's I/O error is sticky for the life of its handle: the store must reopen sled to
/// recover. Here the manifest's write succeeds (it reuses a reserved page) and sled's own
/// flush hits the full disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_sled_failed_on_a_full_disk_reopens_it_and_recovers() {
    use skein::ad::StoredAd;
    use skein::store::{MANIFEST_FILE, Store};
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let Some(_mount) = small_disk(&data, "size=4m") else {
        return;
    };
    let store = Store::open(&data).unwrap();
    let ad = |name: &str| {
        StoredAd::new(
            signed(name, ServerKind::Origin, &["/ns"], now_ms(), 1),
            now_ms(),
            600_000,
        )
    };
    store.put_ad(&ad("origin-1")).unwrap();
    store.flush().await.unwrap();
    // Room for the manifest's next temporary file, and none for sled.
    std::fs::write(
        data.join(format!("{MANIFEST_FILE}.tmp")),
        vec![0u8; 16 << 10],
    )
    .unwrap();
    let filler = fill(&data);
    // sled preallocates its segments: write until it needs a new one.
    let mut written = 1;
    let failure = loop {
        for _ in 0..50 {
            written += 1;
            store.put_ad(&ad(&format!("origin-{written}"))).unwrap();
        }
        if let Err(e) = store.flush().await {
            break e.to_string();
        }
        assert!(written < 20_000, "no commit failed on a full disk");
    };
    println!("after {written} ads: {failure}");
    assert!(store.write_failing().is_some());
    std::fs::remove_file(filler).unwrap();
    store.flush_pending().await.unwrap();
    assert_eq!(store.write_failing(), None);
    store.put_ad(&ad("cache-1")).unwrap();
    store.flush_blocking().unwrap();
    drop(store);
    let (store, damage) = Store::open_or_recover(&data, 1).unwrap();
    assert_eq!(damage, None);
    assert_eq!(store.load_ads().unwrap().ads.len(), written + 1);
}
