//! The compose federation driven through `scripts/federation.sh` and the docker CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use skein::advertiser::Advertiser;
use skein::config::ServiceConfig;

use super::tmpfs::Tmpfs;

/// The compose network (docker-compose.yml, `networks.default.name`).
pub const NETWORK: &str = "skein-net";

/// One director container.
#[derive(Debug, Clone)]
pub struct Director {
    /// Compose service name, e.g. `director-a`.
    pub name: String,
    /// Container name, e.g. `skein-director-a`.
    pub container: String,
    /// Its published port on the host, e.g. `http://127.0.0.1:8441`.
    pub url: String,
}

/// A running federation; taken down (volumes too) on drop unless `FAULT_KEEP=1`.
pub struct Federation {
    root: PathBuf,
    /// The three directors.
    pub directors: Vec<Director>,
    /// Signed-ad makers for the load servers `load-1..N` (keys from the keys volume).
    pub advertisers: Vec<Arc<Advertiser>>,
    /// director-c's data directory: a small host tmpfs the disk-full scenario fills
    /// (`None` if it could not be mounted; the reason is in `disk_c_skipped`).
    pub disk_c: Option<Tmpfs>,
    /// Why `disk_c` is `None`.
    pub disk_c_skipped: Option<String>,
    _keys: tempfile::TempDir,
}

/// Where director-c's small disk is mounted on the host.
const DISK_C: &str = "/tmp/skein-fault-disk-c";

/// True if `docker info` succeeds.
pub fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A finished command's stdout, or its stderr as the error.
fn stdout_of(what: &dyn std::fmt::Debug, out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "{what:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a command, failing with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    stdout_of(cmd, out)
}

/// Runs `docker ARGS` (blocking; fine for short commands).
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("docker").args(args))
}

impl Federation {
    /// Takes down any previous federation, starts a fresh one (image already built)
    /// with `load_servers` extra trusted caches, and waits until it is healthy.
    pub fn up(load_servers: usize) -> anyhow::Result<Self> {
        let root = repo_root();
        let script = root.join("scripts/federation.sh");
        run(Command::new(&script).arg("down"))?;
        // uid 10001 is the image's user; 64 MiB is plenty for the test's ads.
        let (disk_c, disk_c_skipped) =
            match Tmpfs::mount(Path::new(DISK_C), "size=64m,uid=10001,gid=10001,mode=0755") {
                Ok(disk) => (Some(disk), None),
                Err(why) => (None, Some(why)),
            };
        let services: Vec<String> = std::env::var("FAULT_SERVICES")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut up = Command::new(&script);
        up.arg("up")
            .args(&services)
            .env("FEDERATION_SKIP_BUILD", "1")
            .env("FAULT_LOAD_SERVERS", load_servers.to_string());
        if disk_c.is_some() {
            up.env("FAULT_DISK_C", DISK_C);
        }
        run(&mut up)?;
        let directors = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, d)| Director {
                name: format!("director-{d}"),
                container: format!("skein-director-{d}"),
                url: format!("http://127.0.0.1:{}", 8441 + i),
            })
            .collect::<Vec<_>>();
        let keys = tempfile::tempdir()?;
        let urls: Vec<String> = directors.iter().map(|d| d.url.clone()).collect();
        let mut advertisers = Vec::new();
        for i in 1..=load_servers {
            let name = format!("load-{i}");
            let key = keys.path().join(format!("{name}.key"));
            docker(&[
                "cp",
                &format!("skein-keys:/keys/{name}.key"),
                &key.to_string_lossy(),
            ])?;
            advertisers.push(Arc::new(Advertiser::new(load_config(
                &name, i, &key, &urls,
            )?)?));
        }
        Ok(Self {
            root,
            directors,
            advertisers,
            disk_c,
            disk_c_skipped,
            _keys: keys,
        })
    }

    /// Recreates `service`'s container (its volume kept) with `env` added to the compose
    /// environment, and waits until the federation is healthy again.
    pub async fn recreate(&self, service: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new(self.root.join("scripts/federation.sh"));
        cmd.args(["recreate", service]).envs(env.iter().copied());
        if self.disk_c.is_some() {
            cmd.env("FAULT_DISK_C", DISK_C);
        }
        let out = cmd
            .output()
            .await
            .context("cannot run federation.sh recreate")?;
        stdout_of(&format!("federation.sh recreate {service}"), out).map(|_| ())
    }

    /// Director-c's data on a tmpfs of this host, or `None` after printing why
    /// `scenario`, which needs it, is skipped.
    pub fn disk_c_for(&self, scenario: &str) -> Option<&Tmpfs> {
        if self.disk_c.is_none() {
            println!(
                "[{scenario}] SKIPPED: director-c's data is not on a tmpfs of this host ({})",
                self.disk_c_skipped.as_deref().unwrap_or("unknown")
            );
        }
        self.disk_c.as_ref()
    }

    /// Director URLs (published ports).
    pub fn urls(&self) -> Vec<String> {
        self.directors.iter().map(|d| d.url.clone()).collect()
    }
}

fn load_config(
    name: &str,
    i: usize,
    key: &Path,
    directors: &[String],
) -> anyhow::Result<ServiceConfig> {
    let list: Vec<String> = directors.iter().map(|d| format!("{d:?}")).collect();
    let text = format!(
        "name = {name:?}\nkind = \"cache\"\n\
         data_url = \"http://172.29.213.{}:9101\"\nkey = {:?}\n\
         directors = [{}]\nlifetime = \"15m\"\n\
         [[namespace]]\npath = \"/load\"\npublic_reads = true\n",
        200 + i,
        key.to_string_lossy(),
        list.join(", ")
    );
    Ok(ServiceConfig::from_toml(&text)?)
}

impl Drop for Federation {
    fn drop(&mut self) {
        if std::env::var("FAULT_KEEP").as_deref() == Ok("1") {
            println!("FAULT_KEEP=1: leaving the federation up");
            // director-c's disk stays mounted with it.
            std::mem::forget(self.disk_c.take());
            return;
        }
        let _ = Command::new(self.root.join("scripts/federation.sh"))
            .arg("down")
            .output();
    }
}

/// Async `docker ARGS`.
pub async fn docker_async(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .with_context(|| format!("cannot run docker {args:?}"))?;
    stdout_of(&args, out)
}

/// Polls `docker inspect` until the container reports `healthy`.
pub async fn wait_healthy(container: &str, limit: Duration) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        let state = docker_async(&["inspect", "-f", "{{.State.Health.Status}}", container]).await?;
        if state == "healthy" {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("{container} not healthy after {limit:?} (last: {state})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
