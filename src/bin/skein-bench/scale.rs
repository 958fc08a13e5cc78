//! The cost of a cluster at scale: real `skein serve` processes on loopback, a full mesh,
//! and a synthetic federation whose every server re-advertises to every director once an
//! interval, as real services do. Prints each director's CPU share over whole intervals.
//! Health probes are off: the synthetic servers do not exist, and this measures the cost
//! of taking in and replicating ads (probes cost one HEAD per server per `health.interval`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use skein::ad::{ServerKind, encode_public_key};
use skein::fixtures::{FederationServer, federation_ad, key_for};

use super::{many_server, now_ms, percentile};

/// What to run.
pub struct Scale<'a> {
    /// The `skein` binary.
    pub skein: &'a Path,
    /// Directors in the full mesh.
    pub directors: usize,
    /// Servers, each advertising to every director once per `interval`.
    pub servers: usize,
    /// Re-advertise period.
    pub interval: Duration,
    /// Whole intervals measured, after one interval of first registrations.
    pub intervals: u32,
    /// Work directory (keys, trust, configs, stores, logs).
    pub work: &'a Path,
}

/// A director process and its address.
struct Node {
    url: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The trust file: every synthetic server with its fixture key, and every director.
fn trust_text(servers: &[FederationServer], directors: &[(String, String)]) -> String {
    let mut text = String::new();
    for (name, kind, namespaces) in servers {
        let _ = writeln!(
            text,
            "[[server]]\nname = {name:?}\nkind = {:?}\npublic_key = {:?}\nnamespaces = {namespaces:?}\n",
            kind.as_str(),
            encode_public_key(&key_for(name).verifying_key()),
        );
    }
    for (name, public_key) in directors {
        let _ = writeln!(
            text,
            "[[server]]\nname = {name:?}\nkind = \"director\"\npublic_key = {public_key:?}\n"
        );
    }
    text
}

fn start_cluster(run: &Scale<'_>, servers: &[FederationServer]) -> Result<Vec<Node>> {
    let ports: Vec<u16> = (0..run.directors)
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut directors = Vec::new();
    for i in 0..run.directors {
        let name = format!("scale-director-{i}");
        let key = skein::keys::generate(&run.work.join(format!("{name}.key")))?;
        directors.push((name, encode_public_key(&key.verifying_key())));
    }
    std::fs::write(run.work.join("trust.toml"), trust_text(servers, &directors))?;
    let mut nodes = Vec::new();
    for (i, (name, _)) in directors.iter().enumerate() {
        let peers: Vec<&String> = urls.iter().filter(|u| **u != urls[i]).collect();
        let config = format!(
            "name = {name:?}\nlisten = \"127.0.0.1:{port}\"\nadvertise_url = {url:?}\n\
             data_dir = {data:?}\n[identity]\nkey = {key:?}\n\
             [federation]\ntrust = {trust:?}\ndirectors = {peers:?}\n\
             [limits]\nmax_concurrent_ingest = 4096\nmax_ingest_per_client = 4096\n\
             [health]\nenabled = false\n",
            port = ports[i],
            url = urls[i],
            data = run.work.join(format!("{name}-data")).display().to_string(),
            key = run.work.join(format!("{name}.key")).display().to_string(),
            trust = run.work.join("trust.toml").display().to_string(),
        );
        let config_path = run.work.join(format!("{name}.toml"));
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(run.work.join(format!("{name}.log")))?;
        let child = Command::new(run.skein)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", run.skein.display()))?;
        nodes.push(Node {
            url: urls[i].clone(),
            child,
        });
    }
    Ok(nodes)
}

async fn wait_ready(http: &reqwest::Client, nodes: &[Node]) -> Result<()> {
    let started = Instant::now();
    for node in nodes {
        loop {
            let ready = http.get(format!("{}/ready", node.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{} never became ready", node.url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Every server sends its ad, a new generation each interval, to every director, spread
/// evenly over the interval; runs until `until`. Counts sends and failures.
async fn advertise(
    http: reqwest::Client,
    servers: Arc<Vec<FederationServer>>,
    urls: Arc<Vec<String>>,
    interval: Duration,
    until: Instant,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    let started_at = now_ms();
    let spacing = interval / servers.len().max(1) as u32;
    let mut tick = tokio::time::interval(spacing);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let server = &servers[i % servers.len()];
        let generation = (i / servers.len()) as u64 + 1;
        i += 1;
        let body = match serde_json::to_vec(&federation_ad(server, started_at, generation)) {
            Ok(body) => body,
            Err(_) => continue,
        };
        let endpoint = if server.1 == ServerKind::Cache {
            "registerCache"
        } else {
            "registerOrigin"
        };
        for url in urls.iter() {
            let request = http
                .post(format!("{url}/api/v1.0/director/{endpoint}"))
                .header("content-type", "application/json")
                .body(body.clone());
            let (sent, failed) = (sent.clone(), failed.clone());
            tokio::spawn(async move {
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

/// Runs the scenario and prints one JSON line.
pub async fn run(run: Scale<'_>) -> Result<()> {
    std::fs::create_dir_all(run.work)?;
    let servers: Arc<Vec<FederationServer>> = Arc::new((0..run.servers).map(many_server).collect());
    let nodes = start_cluster(&run, &servers)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_ready(&http, &nodes).await?;
    let urls: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.url.clone()).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = run.interval * (run.intervals + 1);
    let until = Instant::now() + total;
    let load = tokio::spawn(advertise(
        http.clone(),
        servers.clone(),
        urls,
        run.interval,
        until,
        sent.clone(),
        failed.clone(),
    ));
    // The first interval registers every server for the first time; measure after it.
    tokio::time::sleep(run.interval).await;
    let before: Vec<f64> = nodes
        .iter()
        .map(|n| cpu_secs(n.child.id()))
        .collect::<Result<_>>()?;
    let sent_before = sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    load.await?;
    let secs = t0.elapsed().as_secs_f64();
    let mut shares: Vec<f64> = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| Ok((cpu_secs(n.child.id())? - b) / secs * 100.0))
        .collect::<Result<_>>()?;
    let held: Vec<usize> = {
        let mut held = Vec::new();
        for node in &nodes {
            let ads: Vec<serde_json::Value> = http
                .get(format!("{}/api/v1.0/director/ads?limit=10000", node.url))
                .send()
                .await?
                .json()
                .await?;
            held.push(ads.len());
        }
        held
    };
    shares.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"bench": "scale", "directors": run.directors, "servers": run.servers,
               "interval_secs": run.interval.as_secs_f64(), "measured_secs": secs,
               "cpu_pct_per_director_mean": shares.iter().sum::<f64>() / shares.len().max(1) as f64,
               "cpu_pct_per_director_p50": percentile(&shares, 50.0),
               "cpu_pct_per_director_max": shares.last().copied().unwrap_or(0.0),
               "ads_sent_measured": sent.load(Ordering::Relaxed) - sent_before,
               "sends_failed": failed.load(Ordering::Relaxed),
               "ads_held_min": held.iter().min(), "ads_held_max": held.iter().max()})
    );
    drop(nodes);
    Ok(())
}

/// `PathBuf` of the `skein` binary beside this one (the default for `--skein`).
pub fn sibling_skein() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("skein")))
        .unwrap_or_else(|| PathBuf::from("skein"))
}
