//! Benchmark driver for `scripts/bench.sh` (built only with `--features bench`).
//!
//! Each subcommand measures one system-level figure and prints one JSON line on stdout;
//! `serve` instead runs a loaded director for an external load generator (wrk).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use skein::ad::StoredAd;
use skein::ad::{AdKey, ServerKind, SignedAd};
use skein::config::DirectorConfig;
use skein::director::{Director, DirectorHandle, Options};
use skein::fixtures::{FederationServer, federation, federation_ad, federation_trust, key_for};
use skein::store::Store;
use skein::trust::Trust;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod scale;

/// The same allocator as the `skein` binary, so figures match what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Skein system benchmarks (see scripts/bench.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one director loaded with a synthetic federation until stdin closes.
    Serve {
        #[arg(long, default_value_t = 1000)]
        servers: usize,
        #[arg(long, default_value_t = 10000)]
        namespaces: usize,
        /// Writes the namespace prefixes here, one a line (for the wrk script).
        #[arg(long)]
        paths: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// Geographic routing: a GeoIP database, every server located, `adaptive`, and
        /// loopback trusted for `X-Forwarded-For`.
        #[arg(long)]
        geo: bool,
    },
    /// CPU per object request through the director's HTTP service, in process (no
    /// sockets, no HTTP parsing): the federation of `serve --geo`, random object paths
    /// and client networks.
    Handler {
        #[arg(long, default_value_t = 1000)]
        servers: usize,
        #[arg(long, default_value_t = 10_000)]
        namespaces: usize,
        #[arg(long, default_value_t = 400_000)]
        requests: usize,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Convergence latency and forwards per ad version for a cluster on loopback.
    Convergence {
        #[arg(long, default_value_t = 5)]
        directors: usize,
        #[arg(long, default_value_t = 200)]
        ads: usize,
        #[arg(long)]
        data_dir: PathBuf,
        /// Writes every latency sample (ms) here, one a line.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// Writes a store holding `ads` ads (for `restart`).
    MakeStore {
        #[arg(long, default_value_t = 100_000)]
        ads: usize,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Time to ready (and RSS) of a director over an existing store, or a raw sled scan.
    Restart {
        #[arg(long)]
        data_dir: PathBuf,
        /// `director` or `raw`.
        #[arg(long, default_value = "director")]
        mode: String,
        /// How many servers `make-store` wrote (the director's trust admits them; an ad
        /// its trust does not admit is dropped at start).
        #[arg(long, default_value_t = 100_000)]
        ads: usize,
    },
    /// Time for an empty director to refill a peer's whole view (catch-up), e.g. after its
    /// store was moved aside. Health probes are off unless `--probes` (the synthetic
    /// servers do not exist; probing 100,000 of them is not catch-up's cost).
    Refill {
        #[arg(long, default_value_t = 100_000)]
        ads: usize,
        #[arg(long)]
        data_dir: PathBuf,
        /// Leave health probes on in both directors.
        #[arg(long)]
        probes: bool,
    },
    /// CPU per director of a full mesh of real `skein serve` processes while every server
    /// re-advertises to every director once an interval.
    Scale {
        #[arg(long, default_value_t = 10)]
        directors: usize,
        #[arg(long, default_value_t = 10_000)]
        servers: usize,
        /// Re-advertise period.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Whole intervals measured (after one interval of first registrations).
        #[arg(long, default_value_t = 1)]
        intervals: u32,
        /// The `skein` binary (default: beside this one).
        #[arg(long)]
        skein: Option<PathBuf>,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Signed-ad ingest rate of one director.
    Ingest {
        #[arg(long, default_value_t = 20_000)]
        ads: usize,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// `http` (POST forward batches) or `accept` (in-process Replicator::accept).
        #[arg(long, default_value = "http")]
        via: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            servers,
            namespaces,
            paths,
            data_dir,
            geo,
        } => runtime.block_on(serve(servers, namespaces, &paths, &data_dir, geo)),
        Command::Handler {
            servers,
            namespaces,
            requests,
            data_dir,
        } => runtime.block_on(handler(servers, namespaces, requests, &data_dir)),
        Command::Convergence {
            directors,
            ads,
            data_dir,
            samples,
        } => convergence(&runtime, directors, ads, &data_dir, samples.as_deref()),
        Command::MakeStore { ads, data_dir } => make_store(ads, &data_dir),
        Command::Restart {
            data_dir,
            mode,
            ads,
        } => runtime.block_on(restart(&data_dir, &mode, ads)),
        Command::Scale {
            directors,
            servers,
            interval,
            intervals,
            skein,
            data_dir,
        } => {
            let skein = skein.unwrap_or_else(scale::sibling_skein);
            runtime.block_on(scale::run(scale::Scale {
                skein: &skein,
                directors,
                servers,
                interval,
                intervals,
                work: &data_dir,
            }))
        }
        Command::Refill {
            ads,
            data_dir,
            probes,
        } => runtime.block_on(refill(ads, &data_dir, probes)),
        Command::Ingest {
            ads,
            clients,
            batch,
            via,
            data_dir,
        } => runtime.block_on(ingest(ads, clients, batch, &via, &data_dir)),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user + system) this process has used, in ms: on a shared machine it is a
/// steadier figure than wall time.
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks * 10.0)
        })
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn director_config(
    name: &str,
    url: &str,
    data_dir: &Path,
    peers: &[String],
    extra: &str,
) -> Result<DirectorConfig> {
    let peers: Vec<String> = peers.iter().map(|p| format!("{p:?}")).collect();
    // `forward_delay = "0s"`: an accepted ad is pushed to the peers at once, the path
    // the convergence figure measures (with the shipped 2 s delay, convergence is the
    // delay by design; see docs/replication.md). The other in-process modes forward
    // nothing while they measure (refill's pulled ads go to no peer but their source).
    let text = format!(
        "name = {name:?}\nlisten = \"127.0.0.1:0\"\nadvertise_url = {url:?}\ndata_dir = {:?}\n\
         [identity]\nkey = \"unused\"\n[federation]\ntrust = \"unused\"\ndirectors = [{}]\n\
         [peers]\npoll_interval = \"1h\"\nannounce_interval = \"1h\"\nforward_delay = \"0s\"\n\
         [limits]\nmax_body = \"64MiB\"\nmax_concurrent = 100000\n{extra}",
        data_dir.display().to_string(),
        peers.join(", ")
    );
    DirectorConfig::from_toml(&text).context("bench director config")
}

async fn start(
    name: &str,
    listener: TcpListener,
    data_dir: &Path,
    peers: &[String],
    trust: Trust,
) -> Result<DirectorHandle> {
    start_with_extra(name, listener, data_dir, peers, trust, "").await
}

async fn start_with_extra(
    name: &str,
    listener: TcpListener,
    data_dir: &Path,
    peers: &[String],
    trust: Trust,
    extra: &str,
) -> Result<DirectorHandle> {
    let url = format!("http://{}", listener.local_addr()?);
    let config = director_config(name, &url, data_dir, peers, extra)?;
    let options = Options {
        trust: Some(trust),
        key: Some(key_for(name)),
        ..Options::default()
    };
    Ok(Director::start_with(config, options, listener, CancellationToken::new()).await?)
}

/// Accepts `ads` into `handle` from `clients` concurrent in-process callers.
async fn accept_all(handle: &DirectorHandle, ads: Vec<SignedAd>, clients: usize) -> Result<usize> {
    let replicator = handle.state().replicator.clone();
    let chunk = ads.len().div_ceil(clients.max(1)).max(1);
    let mut tasks = Vec::new();
    let mut ads = ads;
    while !ads.is_empty() {
        let mine: Vec<SignedAd> = ads.drain(..chunk.min(ads.len())).collect();
        let replicator = replicator.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            for group in mine.chunks(256) {
                let results = futures::future::join_all(
                    group.iter().map(|ad| replicator.accept(ad.clone(), None)),
                )
                .await;
                accepted += results
                    .iter()
                    .filter(|r| matches!(r, Ok(skein::ledger::IngestOutcome::Accepted(_))))
                    .count();
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await?;
    }
    Ok(accepted)
}

async fn serve(
    servers: usize,
    namespaces: usize,
    paths: &Path,
    data_dir: &Path,
    geo: bool,
) -> Result<()> {
    let (handle, accepted) = bench_director(servers, namespaces, data_dir, geo).await?;
    let mut out = std::fs::File::create(paths)?;
    for i in 0..namespaces {
        writeln!(out, "{}", skein::fixtures::namespace_path(i))?;
    }
    println!(
        "{}",
        json!({"ready": handle.url(), "ads": accepted, "rss_mib": rss_mib()})
    );
    std::io::stdout().flush()?;
    // Run until stdin closes (the script holds it open).
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for _ in stdin.lock().lines() {}
    })
    .await?;
    println!("{}", json!({"rss_mib_after": rss_mib()}));
    handle.shutdown().await;
    Ok(())
}

/// The director of `serve` (with `geo`: a GeoIP database, every server located,
/// `adaptive`), with every ad of its federation accepted; and how many.
async fn bench_director(
    servers: usize,
    namespaces: usize,
    data_dir: &Path,
    geo: bool,
) -> Result<(DirectorHandle, usize)> {
    let fed = federation(servers, namespaces);
    let trust = federation_trust(&fed, &["bench-director".to_string()]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let extra = if geo {
        std::fs::create_dir_all(data_dir)?;
        let db = data_dir.join("bench-geoip.mmdb");
        std::fs::write(&db, skein::fixtures::bench_geoip_db())?;
        skein::fixtures::bench_routing_toml(&fed, &db)
    } else {
        String::new()
    };
    let handle = start_with_extra("bench-director", listener, data_dir, &[], trust, &extra).await?;
    let now = now_ms();
    let ads: Vec<SignedAd> = fed.iter().map(|s| federation_ad(s, now, 1)).collect();
    let accepted = accept_all(&handle, ads, 4).await?;
    if accepted != fed.len() {
        bail!("only {accepted} of {} ads accepted", fed.len());
    }
    Ok((handle, accepted))
}

async fn handler(
    servers: usize,
    namespaces: usize,
    requests: usize,
    data_dir: &Path,
) -> Result<()> {
    use tower::Service;
    let (handle, _) = bench_director(servers, namespaces, data_dir, true).await?;
    let limits = skein::http::HttpLimits {
        max_body: 1 << 20,
        request_timeout: Duration::from_secs(30),
        budgets: skein::http::BudgetLimits {
            redirect: 1024,
            ingest: 256,
            bulk: 32,
            ingest_per_client: 64,
        },
    };
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse()?;
    let mut app = skein::http::router(handle.state().clone(), limits).for_peer(peer);
    // The requests are made first: their making is not the handler's time.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let made: Vec<axum::http::Request<axum::body::Body>> = (0..requests)
        .map(|_| {
            let ns = skein::fixtures::namespace_path(next() as usize % namespaces);
            let client = skein::fixtures::bench_client(next() as usize);
            axum::http::Request::get(format!("{ns}/run{}/file.dat", next() % 100))
                .header("x-forwarded-for", client.to_string())
                .body(axum::body::Body::empty())
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let (mut at_once, mut redirected, mut spent) = (0usize, 0usize, Duration::ZERO);
    for request in made {
        let began = Instant::now();
        let mut future = std::pin::pin!(app.call(request));
        let response = match futures::poll!(future.as_mut()) {
            std::task::Poll::Ready(answer) => {
                at_once += 1;
                answer
            }
            std::task::Poll::Pending => future.await,
        };
        spent += began.elapsed();
        let response = response.map_err(|never| match never {})?;
        if response.status() == axum::http::StatusCode::TEMPORARY_REDIRECT {
            redirected += 1;
        }
    }
    handle.shutdown().await;
    if redirected != requests {
        bail!("{redirected} of {requests} requests were redirected");
    }
    println!(
        "{}",
        json!({
            "bench": "handler",
            "requests": requests,
            "answered_at_once": at_once,
            "ns_per_request": spent.as_nanos() as f64 / requests as f64,
        })
    );
    Ok(())
}

fn convergence(
    runtime: &tokio::runtime::Runtime,
    n: usize,
    ads: usize,
    data_dir: &Path,
    samples: Option<&Path>,
) -> Result<()> {
    let origins: Vec<FederationServer> = (0..8)
        .map(|i| {
            (
                format!("conv-origin-{i}"),
                ServerKind::Origin,
                vec![format!("/conv/{i}")],
            )
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("director-{i}")).collect();
    let handles = runtime.block_on(async {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| format!("http://{a}")))
            .collect::<std::io::Result<_>>()?;
        let mut handles = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let peers: Vec<String> = urls.iter().filter(|u| **u != urls[i]).cloned().collect();
            let trust = federation_trust(&origins, &names);
            handles.push(
                start(
                    &names[i],
                    listener,
                    &data_dir.join(&names[i]),
                    &peers,
                    trust,
                )
                .await?,
            );
        }
        anyhow::Ok(handles)
    })?;
    // Settle: every director holds every director's ad and no forward is pending.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let settled = handles
            .iter()
            .all(|h| h.state().ledger.view().len() >= n && h.state().replicator.backlog() == 0);
        if settled {
            break;
        }
        if Instant::now() > deadline {
            bail!("cluster of {n} did not settle");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let forwards = |hs: &[DirectorHandle]| -> u64 {
        hs.iter().map(|h| h.state().metrics.forwards_total()).sum()
    };
    let before = forwards(&handles);
    let started = now_ms();
    let mut latencies = Vec::with_capacity(ads);
    for k in 0..ads {
        let origin = &origins[k % origins.len()];
        let signed = federation_ad(origin, started, (k / origins.len()) as u64 + 1);
        let key: AdKey = signed.ad.key();
        let version = signed.ad.version();
        let replicator = handles[0].state().replicator.clone();
        let t0 = Instant::now();
        runtime.block_on(replicator.accept(signed, None))?;
        let deadline = t0 + Duration::from_secs(10);
        loop {
            let everywhere = handles
                .iter()
                .all(|h| h.state().ledger.version_of(&key) >= Some(version));
            if everywhere {
                break;
            }
            if Instant::now() > deadline {
                bail!("ad {k} did not converge within 10 s");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Let the duplicate forwards drain so ads do not overlap.
        while handles.iter().any(|h| h.state().replicator.backlog() > 0) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    // Wait for the last forwards to be counted.
    let mut last = forwards(&handles);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = forwards(&handles);
        if now == last {
            break;
        }
        last = now;
    }
    if let Some(path) = samples {
        let mut out = std::fs::File::create(path)?;
        for l in &latencies {
            writeln!(out, "{l:.3}")?;
        }
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        json!({
            "bench": "convergence",
            "directors": n,
            "ads": ads,
            "p50_ms": percentile(&sorted, 50.0),
            "p99_ms": percentile(&sorted, 99.0),
            "max_ms": sorted.last().copied().unwrap_or(0.0),
            "forwards_per_ad": (last - before) as f64 / ads as f64,
        })
    );
    runtime.block_on(async {
        for h in handles {
            h.crash().await;
        }
    });
    Ok(())
}

/// The `i`-th of many small ads for the restart and ingest benches.
fn many_server(i: usize) -> FederationServer {
    (
        format!("many-{i}"),
        if i % 2 == 0 {
            ServerKind::Origin
        } else {
            ServerKind::Cache
        },
        vec![format!("/many/{}/{i}", i / 1000)],
    )
}

fn make_store(ads: usize, data_dir: &Path) -> Result<()> {
    let store = Store::open(data_dir)?;
    let now = now_ms();
    let t0 = Instant::now();
    for i in 0..ads {
        let signed = federation_ad(&many_server(i), now, 1);
        store.put_ad(&StoredAd::new(signed, now, 15 * 60 * 1000))?;
    }
    store.flush_blocking()?;
    println!(
        "{}",
        json!({"bench": "make_store", "ads": ads, "secs": t0.elapsed().as_secs_f64()})
    );
    Ok(())
}

async fn restart(data_dir: &Path, mode: &str, ads: usize) -> Result<()> {
    // The director's trust admits the servers `make-store` wrote (built before the clock
    // starts: a real director reads its trust file, not 100,000 key derivations).
    let name = "restart-director";
    let trust = (mode == "director").then(|| {
        let servers: Vec<FederationServer> = (0..ads).map(many_server).collect();
        federation_trust(&servers, &[name.to_string()])
    });
    let t0 = Instant::now();
    match mode {
        "raw" => {
            let db = sled::Config::new()
                .path(data_dir)
                .cache_capacity(64 << 20)
                .open()?;
            let tree = db.open_tree("ads")?;
            let mut count = 0usize;
            let mut bytes = 0usize;
            for entry in tree.iter() {
                let (_, value) = entry?;
                count += 1;
                bytes += value.len();
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            println!(
                "{}",
                json!({"bench": "restart", "mode": "raw", "ads": count, "bytes": bytes, "ms": ms, "cpu_ms": cpu_ms(), "rss_mib": rss_mib()})
            );
        }
        "director" => {
            let trust = trust.unwrap_or_default();
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let handle = start(name, listener, data_dir, &[], trust).await?;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let ads = handle.state().ledger.view().len();
            println!(
                "{}",
                json!({"bench": "restart", "mode": "director", "ads": ads, "ms": ms, "cpu_ms": cpu_ms(),
                       "started_in_ms": handle.started_in().as_secs_f64() * 1000.0, "rss_mib": rss_mib()})
            );
            handle.crash().await;
        }
        "phases" => {
            let store = Store::open(data_dir)?;
            let opened = t0.elapsed().as_secs_f64() * 1000.0;
            let loaded = store.load_ads()?;
            let decoded = t0.elapsed().as_secs_f64() * 1000.0;
            let count = loaded.ads.len();
            let view = skein::routing::View::from_ads(loaded.ads);
            let built = t0.elapsed().as_secs_f64() * 1000.0;
            println!(
                "{}",
                json!({"bench": "restart", "mode": "phases", "ads": count, "open_ms": opened,
                       "load_ms": decoded - opened, "view_ms": built - decoded, "rss_mib": rss_mib()})
            );
            let t1 = Instant::now();
            drop(view);
            eprintln!("drop view: {:.1} ms", t1.elapsed().as_secs_f64() * 1000.0);
        }
        other => bail!("unknown mode {other:?} (director, raw or phases)"),
    }
    Ok(())
}

async fn refill(ads: usize, data_dir: &Path, probes: bool) -> Result<()> {
    let full_dir = data_dir.join("full");
    let empty_dir = data_dir.join("empty");
    make_store(ads, &full_dir)?;
    let servers: Vec<FederationServer> = (0..ads).map(many_server).collect();
    let names = ["refill-full".to_string(), "refill-empty".to_string()];
    let trust = federation_trust(&servers, &names);
    let extra = if probes {
        ""
    } else {
        "[health]\nenabled = false\n"
    };
    let full = start_with_extra(
        &names[0],
        TcpListener::bind("127.0.0.1:0").await?,
        &full_dir,
        &[],
        trust.clone(),
        extra,
    )
    .await?;
    let held = full.state().ledger.view().len();
    let t0 = Instant::now();
    let cpu0 = cpu_ms();
    let empty = start_with_extra(
        &names[1],
        TcpListener::bind("127.0.0.1:0").await?,
        &empty_dir,
        &[full.url().to_string()],
        trust,
        extra,
    )
    .await?;
    let started_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Both directors' own ads are in the view too.
    let target = held + 1;
    // When the first pulled page lands: the digest exchange and the first fetch.
    let mut first_page_ms = None;
    loop {
        let len = empty.state().ledger.view().len();
        if len >= target {
            break;
        }
        if first_page_ms.is_none() && len > 2 {
            first_page_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!(
                "refill stalled at {} of {target} ads",
                empty.state().ledger.view().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "refill", "ads": held, "secs": secs, "ads_per_sec": held as f64 / secs,
               "started_ms": started_ms, "first_page_ms": first_page_ms, "probes": probes,
               "cpu_ms": cpu_ms() - cpu0,
               "rss_mib": rss_mib()})
    );
    empty.crash().await;
    full.crash().await;
    Ok(())
}

async fn ingest(
    ads: usize,
    clients: usize,
    batch: usize,
    via: &str,
    data_dir: &Path,
) -> Result<()> {
    let servers: Vec<FederationServer> = (0..ads).map(many_server).collect();
    let name = "ingest-director".to_string();
    let trust = federation_trust(&servers, std::slice::from_ref(&name));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let handle = start(&name, listener, data_dir, &[], trust).await?;
    let now = now_ms();
    let signed: Vec<SignedAd> = servers.iter().map(|s| federation_ad(s, now, 1)).collect();
    let t0 = Instant::now();
    let cpu0 = cpu_ms();
    let accepted = match via {
        "accept" => accept_all(&handle, signed, clients).await?,
        "http" => {
            let url = format!("{}/api/v1.0/director/forward", handle.url());
            let http = reqwest::Client::new();
            let bodies: Vec<Vec<u8>> = signed
                .chunks(batch.max(1))
                .map(serde_json::to_vec)
                .collect::<Result<_, _>>()?;
            let bodies = Arc::new(std::sync::Mutex::new(bodies));
            let mut tasks = Vec::new();
            for _ in 0..clients.max(1) {
                let http = http.clone();
                let url = url.clone();
                let bodies = bodies.clone();
                tasks.push(tokio::spawn(async move {
                    let mut accepted = 0usize;
                    loop {
                        let body = bodies.lock().map(|mut b| b.pop()).ok().flatten();
                        let Some(body) = body else { break };
                        let response = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await?
                            .error_for_status()?;
                        let results: Vec<serde_json::Value> = response.json().await?;
                        accepted += results.iter().filter(|r| r["status"] == "accepted").count();
                    }
                    anyhow::Ok(accepted)
                }));
            }
            let mut accepted = 0;
            for task in tasks {
                accepted += task.await??;
            }
            accepted
        }
        other => bail!("unknown --via {other:?} (http or accept)"),
    };
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "ingest", "via": via, "ads": ads, "accepted": accepted, "clients": clients,
               "batch": batch, "secs": secs, "ads_per_sec": accepted as f64 / secs,
               "cpu_ms_per_1000_ads": (cpu_ms() - cpu0) / accepted.max(1) as f64 * 1000.0, "rss_mib": rss_mib()})
    );
    handle.crash().await;
    Ok(())
}
