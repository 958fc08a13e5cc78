//! The `skein` binary as a user runs it: keygen, serve, advertise, locate, healthcheck,
//! `kill -9` and restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::eventually;

const SKEIN: &str = env!("CARGO_BIN_EXE_skein");

fn skein(dir: &Path, args: &[&str]) -> Output {
    Command::new(SKEIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        // The client remembers directors under the cache dir: keep it out of $HOME.
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .output()
        .expect("run skein")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Federation {
    dir: tempfile::TempDir,
    port: u16,
}

impl Federation {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut trust = String::new();
        for (name, kind, namespaces) in [
            ("director-a", "director", "[]"),
            ("origin-1", "origin", "[\"/test\"]"),
            ("cache-1", "cache", "[\"/test\"]"),
        ] {
            let out = skein(
                dir.path(),
                &["keygen", "--out", &format!("keys/{name}.key")],
            );
            assert!(
                out.status.success(),
                "keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let public = String::from_utf8(out.stdout).unwrap();
            trust.push_str(&format!(
                "[[server]]\nname = \"{name}\"\nkind = \"{kind}\"\npublic_key = \"{}\"\nnamespaces = {namespaces}\n\n",
                public.trim()
            ));
        }
        std::fs::write(dir.path().join("trust.toml"), trust).unwrap();
        // No server answers at the services' data URLs: health probes would find them
        // down and reorder the redirects these tests compare, at a moment that is a race.
        std::fs::write(
            dir.path().join("director.toml"),
            format!(
                "name = \"director-a\"\nlisten = \"127.0.0.1:{port}\"\nadvertise_url = \"http://127.0.0.1:{port}\"\n\
                 data_dir = \"data\"\n[identity]\nkey = \"keys/director-a.key\"\n[federation]\ntrust = \"trust.toml\"\n\
                 [health]\nenabled = false\n"
            ),
        )
        .unwrap();
        for (name, kind, data_port) in [("origin-1", "origin", 19001), ("cache-1", "cache", 19101)]
        {
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!(
                    "name = \"{name}\"\nkind = \"{kind}\"\ndata_url = \"http://127.0.0.1:{data_port}\"\n\
                     key = \"keys/{name}.key\"\nfederation = \"http://127.0.0.1:{port}\"\ninterval = \"1s\"\n\
                     [[namespace]]\npath = \"/test\"\npublic_reads = true\n"
                ),
            )
            .unwrap();
        }
        Federation { dir, port }
    }

    fn serve(&self) -> Child {
        Command::new(SKEIN)
            .args(["serve", "--config", "director.toml"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start director")
    }

    /// Sends origin-1's and cache-1's ads once.
    fn advertise_all(&self) {
        for service in ["origin-1.toml", "cache-1.toml"] {
            let out = skein(&self.path(), &["advertise", "--config", service, "--once"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    async fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        let url = self.url();
        eventually(Duration::from_secs(20), "director ready", || {
            let url = url.clone();
            async move { common::client().ready(&url).await.unwrap_or(false) }
        })
        .await;
        started.elapsed()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertise_locate_kill_and_restart() {
    let fed = Federation::new();
    let dir = fed.path();
    let mut director = fed.serve();
    fed.wait_ready().await;

    let dry = skein(
        &dir,
        &["advertise", "--config", "origin-1.toml", "--dry-run"],
    );
    assert!(dry.status.success());
    let ad: serde_json::Value = serde_json::from_str(&stdout(&dry)).unwrap();
    assert_eq!(ad["name"], "origin-1");
    assert!(ad["signature"].is_string());

    for service in ["origin-1.toml", "cache-1.toml"] {
        let out = skein(&dir, &["advertise", "--config", service, "--once"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains(": accepted"), "{}", stdout(&out));
    }

    let dead = format!("http://127.0.0.1:{}", free_port());
    let located = skein(
        &dir,
        &[
            "locate",
            "--federation",
            &dead,
            "--federation",
            &fed.url(),
            "/test/file.txt",
        ],
    );
    assert!(
        located.status.success(),
        "{}",
        String::from_utf8_lossy(&located.stderr)
    );
    let text = stdout(&located);
    assert!(
        text.contains("redirect: http://127.0.0.1:19101/test/file.txt"),
        "{text}"
    );
    assert!(
        text.contains("2. http://127.0.0.1:19001/test/file.txt"),
        "{text}"
    );

    // Why: the explanation names the client, the sort and every candidate.
    let explained = skein(
        &dir,
        &[
            "locate",
            "--explain",
            "--federation",
            &fed.url(),
            "/test/file.txt",
        ],
    );
    assert!(
        explained.status.success(),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&explained)).unwrap();
    assert_eq!(json["client"]["address_from"], "socket");
    assert_eq!(json["client"]["located_by"], "not_public");
    assert_eq!(json["sort"], "affinity");
    assert_eq!(json["order"], serde_json::json!(["cache-1", "origin-1"]));

    let ads = skein(&dir, &["ads", "--from", &fed.url()]);
    assert!(stdout(&ads).contains("origin-1") && stdout(&ads).contains("cache-1"));
    assert!(skein(&dir, &["healthcheck", &fed.url()]).status.success());
    assert!(!skein(&dir, &["healthcheck", &dead]).status.success());

    // kill -9, restart: the same redirects at once, before anyone re-advertises.
    director.kill().unwrap();
    director.wait().unwrap();
    let mut director = fed.serve();
    let ready_in = fed.wait_ready().await;
    println!("restart to ready (process start to /ready): {ready_in:?}");
    let again = skein(
        &dir,
        &["locate", "--federation", &fed.url(), "/test/file.txt"],
    );
    assert_eq!(
        stdout(&again).lines().nth(1),
        text.lines().nth(1),
        "same redirect after kill -9"
    );

    // Nothing reachable: advertise --once fails with a clear message.
    std::fs::write(
        dir.join("lonely.toml"),
        format!(
            "name = \"origin-1\"\nkind = \"origin\"\ndata_url = \"http://127.0.0.1:19001\"\nkey = \"keys/origin-1.key\"\ndirectors = [\"{dead}\"]\n"
        ),
    )
    .unwrap();
    let lonely = skein(&dir, &["advertise", "--config", "lonely.toml", "--once"]);
    assert!(!lonely.status.success());
    assert!(String::from_utf8_lossy(&lonely.stderr).contains("no director accepted"));

    director.kill().unwrap();
    director.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_withdraws_at_once() {
    let fed = Federation::new();
    let dir = fed.path();
    let mut director = fed.serve();
    fed.wait_ready().await;
    assert!(
        skein(&dir, &["advertise", "--config", "origin-1.toml", "--once"])
            .status
            .success()
    );
    let mut cache = Command::new(SKEIN)
        .args(["advertise", "--config", "cache-1.toml"])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let client = common::client();
    let url = fed.url();
    eventually(Duration::from_secs(20), "cache routed", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .locate(&url, "/test/a")
                .await
                .is_ok_and(|l| l.location.as_deref() == Some("http://127.0.0.1:19101/test/a"))
        }
    })
    .await;
    // SIGTERM: the advertiser sends a final `shutting down` ad.
    let status = Command::new("kill")
        .args(["-TERM", &cache.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(cache.wait().unwrap().success());
    let located = client.locate(&url, "/test/a").await.unwrap();
    assert_eq!(
        located.location.as_deref(),
        Some("http://127.0.0.1:19001/test/a"),
        "no traffic to the stopped cache"
    );
    director.kill().unwrap();
    director.wait().unwrap();
}

/// Kills a child process when dropped (the test may fail half-way).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_command_line_open_a_protected_origin() {
    let fed = Federation::new();
    let dir = fed.path();
    // An EC issuer key: PEM, mode 0600, public JWKS on stdout.
    let out = skein(
        &dir,
        &["keygen", "--kind", "ec", "--out", "keys/issuer.pem"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("keys/issuer.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(dir.join("issuer-jwks.json"), stdout(&out)).unwrap();

    let data_port = free_port();
    std::fs::create_dir_all(dir.join("export")).unwrap();
    std::fs::write(dir.join("export/hello.txt"), "protected hello").unwrap();
    std::fs::write(
        dir.join("origin-1.toml"),
        format!(
            "name = \"origin-1\"\nkind = \"origin\"\ndata_url = \"http://127.0.0.1:{data_port}\"\n\
             listen = \"127.0.0.1:{data_port}\"\nexport = \"export\"\n\
             key = \"keys/origin-1.key\"\nfederation = \"{}\"\ninterval = \"1s\"\n\
             [[namespace]]\npath = \"/test\"\nissuer = \"https://issuer.test\"\njwks = \"issuer-jwks.json\"\n",
            fed.url()
        ),
    )
    .unwrap();
    let _director = Reaper(fed.serve());
    fed.wait_ready().await;
    let _origin = Reaper(
        Command::new(SKEIN)
            .args(["origin", "--config", "origin-1.toml"])
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let client = common::client();
    let url = fed.url();
    eventually(Duration::from_secs(20), "origin routed", || {
        let (client, url) = (client.clone(), url.clone());
        async move { client.locate(&url, "/test/hello.txt").await.is_ok() }
    })
    .await;

    let key = skein::eckey::load(&dir.join("keys/issuer.pem")).unwrap();
    let token = skein::fixtures::access_token(
        &key,
        "https://issuer.test",
        "storage.read:/",
        "https://wlcg.cern.ch/jwt/v1/any",
        -60,
        300,
    )
    .unwrap();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();

    let get = |extra: &[&str], env: Option<(&str, &str)>| {
        let mut command = Command::new(SKEIN);
        command
            .args([
                "get",
                "--federation",
                &url,
                "/test/hello.txt",
                "-o",
                "out.txt",
            ])
            .args(extra)
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .env("XDG_CACHE_HOME", dir.join(".cache"))
            .env("XDG_RUNTIME_DIR", dir.join("no-runtime-dir"))
            .env_remove("BEARER_TOKEN")
            .env_remove("BEARER_TOKEN_FILE");
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let _ = std::fs::remove_file(dir.join("out.txt"));
        command.output().unwrap()
    };
    let anonymous = get(&[], None);
    assert!(
        !anonymous.status.success(),
        "anonymous read of a protected namespace"
    );
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    for (extra, env) in [
        (&["--token", "token"][..], None),
        (&[][..], Some(("BEARER_TOKEN", token.as_str()))),
        (&[][..], Some(("BEARER_TOKEN_FILE", "token"))),
    ] {
        let out = get(extra, env);
        assert!(
            out.status.success(),
            "{extra:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            "protected hello"
        );
    }
    let located = skein(
        &dir,
        &[
            "locate",
            "--token",
            "token",
            "--federation",
            &url,
            "/test/hello.txt",
        ],
    );
    assert!(
        stdout(&located).contains("require-token=true"),
        "{}",
        stdout(&located)
    );

    // The same key advertises Pelican-style: --dry-run prints the OriginAdvertise body.
    std::fs::write(
        dir.join("pelican.toml"),
        format!(
            "name = \"origin-1\"\nkind = \"origin\"\nprotocol = \"pelican\"\ndata_url = \"http://127.0.0.1:{data_port}\"\n\
             key = \"keys/issuer.pem\"\ndirectors = [\"{url}\"]\n[[namespace]]\npath = \"/test\"\npublic_reads = true\n"
        ),
    )
    .unwrap();
    let dry = skein(
        &dir,
        &["advertise", "--config", "pelican.toml", "--dry-run"],
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let body: serde_json::Value = serde_json::from_str(&stdout(&dry)).unwrap();
    assert_eq!(body["name"], "origin-1");
    assert_eq!(body["generationID"], 1);
    assert!(
        body["instanceID"].is_string() && body["startTime"].is_i64() && body["expiry"].is_string()
    );
    assert_eq!(body["namespaces"][0]["path"], "/test");
}

#[test]
fn bad_config_names_every_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"x\"\nlisten = \"nope\"\nsurprise = 1\n",
    )
    .unwrap();
    let out = skein(dir.path(), &["serve", "--config", "bad.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "listen:",
        "surprise: unknown key",
        "advertise_url: missing",
        "identity.key: missing",
    ] {
        assert!(err.contains(key), "{key} not in {err}");
    }
}

#[test]
fn check_validates_configs_and_the_files_they_name() {
    let fed = Federation::new();
    let dir = fed.path();
    for config in ["director.toml", "origin-1.toml", "cache-1.toml"] {
        let out = skein(&dir, &["check", "--config", config]);
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains("a valid"), "{}", stdout(&out));
    }
    // Break several things at once: every one is reported, and the exit code says so.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("keys/director-a.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let trust = std::fs::read_to_string(dir.join("trust.toml")).unwrap();
    std::fs::write(
        dir.join("trust.toml"),
        trust.replace("name = \"director-a\"", "name = \"director-z\""),
    )
    .unwrap();
    let out = skein(&dir, &["check", "--config", "director.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "identity.key: key file keys/director-a.key is readable by other users",
        "no [[server]] named \"director-a\"",
        "2 problems",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
    std::fs::write(dir.join("broken.toml"), "name = \"x\"\n[ads\n").unwrap();
    let out = skein(&dir, &["check", "--config", "broken.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("TOML parse error").count(), 1, "{err}");
    let out = Command::new(SKEIN)
        .args(["check", "--config", "origin-1.toml"])
        .current_dir(&dir)
        .env("SKEIN_INTERVL", "5s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("from the environment variable SKEIN_INTERVL"),
        "{err}"
    );
}

/// `(name, status)` of every ad a director lists.
async fn listed(url: &str) -> Vec<(String, skein::ad::AdStatus)> {
    let mut ads: Vec<_> = common::client()
        .ads(url)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.signed.ad.name, a.signed.ad.status))
        .collect();
    ads.sort_by(|a, b| a.0.cmp(&b.0));
    ads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_trust_file_and_never_stops_the_director() {
    use skein::ad::AdStatus::Ok as Serving;
    let fed = Federation::new();
    let dir = fed.path();
    let log = dir.join("director.log");
    let mut director = Command::new(SKEIN)
        .args(["serve", "--config", "director.toml"])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .env("SKEIN_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    fed.wait_ready().await;
    fed.advertise_all();
    let pid = director.id().to_string();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    };
    // A storm (logrotate gone wrong): the director stays up and withdraws nothing.
    for _ in 0..100 {
        assert!(hup());
    }
    assert!(skein(&dir, &["healthcheck", &fed.url()]).status.success());
    assert!(director.try_wait().unwrap().is_none(), "still running");
    let everyone = vec![
        ("cache-1".to_string(), Serving),
        ("director-a".to_string(), Serving),
        ("origin-1".to_string(), Serving),
    ];
    assert_eq!(listed(&fed.url()).await, everyone);

    // cache-1 leaves the federation: the next SIGHUP drops it.
    let trust = std::fs::read_to_string(dir.join("trust.toml")).unwrap();
    let kept: Vec<&str> = trust
        .split("\n\n")
        .filter(|entry| !entry.contains("\"cache-1\""))
        .collect();
    std::fs::write(dir.join("trust.toml"), kept.join("\n\n")).unwrap();
    assert!(hup());
    let url = fed.url();
    eventually(Duration::from_secs(20), "cache-1 revoked", || {
        let url = url.clone();
        async move { listed(&url).await.len() == 2 }
    })
    .await;
    assert_eq!(listed(&fed.url()).await, everyone[1..]);
    assert!(director.try_wait().unwrap().is_none(), "still running");

    // A live setting: the access log, switched on by editing the config and a SIGHUP.
    let mut config = std::fs::read_to_string(dir.join("director.toml")).unwrap();
    config.push_str("[log]\naccess = true\n");
    std::fs::write(dir.join("director.toml"), config).unwrap();
    assert!(hup());
    let client = common::client();
    let log_path = log.clone();
    eventually(Duration::from_secs(20), "an access line", || {
        let (client, url, log_path) = (client.clone(), url.clone(), log_path.clone());
        async move {
            let _ = client.locate(&url, "/test/a").await;
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("\"class\":\"redirect\"")
        }
    })
    .await;

    // SIGTERM still stops it gracefully.
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    assert!(director.wait().unwrap().success());

    // `log.format = "json"`: every line is one JSON object; the revocation is one of them.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["server"] == "cache/cache-1" && l["level"] == "WARN"),
        "{text}"
    );
    assert!(lines.iter().any(|l| l["message"] == "trust file reloaded"));
    assert!(lines.iter().any(|l| l["target"] == "skein::access"
        && l["status"] == 307
        && l["method"] == "GET"
        && l["duration_us"].is_u64()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_put_servers_in_downtime_and_ban_them_from_the_cli() {
    let fed = Federation::new();
    let dir = fed.path();
    // An operator key, listed as an admin.
    let out = skein(&dir, &["keygen", "--out", "keys/ops.key"]);
    let public = String::from_utf8(out.stdout).unwrap();
    let mut trust = std::fs::read_to_string(dir.join("trust.toml")).unwrap();
    trust.push_str(&format!(
        "[[server]]\nname = \"ops\"\nkind = \"admin\"\npublic_key = \"{}\"\n",
        public.trim()
    ));
    std::fs::write(dir.join("trust.toml"), trust).unwrap();
    let mut director = fed.serve();
    fed.wait_ready().await;
    fed.advertise_all();
    let url = fed.url();
    let first_hop = |dir: &Path| {
        let out = skein(dir, &["locate", "--federation", &url, "/test/f"]);
        stdout(&out)
            .lines()
            .find(|l| l.starts_with("redirect:"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(first_hop(&dir).contains(":19101/"), "{}", first_hop(&dir));

    let admin = ["--key", "keys/ops.key", "--federation", url.as_str()];
    let run = |args: &[&str]| {
        let out = skein(&dir, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    run(&[
        &["downtime", "add"],
        &admin[..],
        &["cache-1", "--end", "1h", "--reason", "disk swap"],
    ]
    .concat());
    assert!(first_hop(&dir).contains(":19001/"), "{}", first_hop(&dir));
    let listed = run(&["downtime", "list", "--federation", &url]);
    assert!(
        listed.contains("cache-1") && listed.contains("active") && listed.contains("disk swap"),
        "{listed}"
    );
    run(&[&["downtime", "remove"], &admin[..], &["cache-1"]].concat());
    assert!(first_hop(&dir).contains(":19101/"));

    run(&[&["ban"], &admin[..], &["cache-1"]].concat());
    assert!(first_hop(&dir).contains(":19001/"));
    run(&[&["unban"], &admin[..], &["cache-1"]].concat());
    assert!(first_hop(&dir).contains(":19101/"));

    // A server's key is no admin key: refused with a clear message.
    let out = skein(
        &dir,
        &[
            "ban",
            "--key",
            "keys/cache-1.key",
            "--federation",
            &url,
            "origin-1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    director.kill().unwrap();
    director.wait().unwrap();
}

/// Names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// A store that sled loops over when it is read again (the log cut after a full disk of
/// `tests/fixtures`): the director moves it aside and serves, and the thread left reading
/// it does not outlive the start: the process starts itself again, keeping its pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_stuck_in_a_damaged_store_does_not_outlive_the_start() {
    let fed = Federation::new();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-cut-after-full-disk");
    let data = fed.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for file in std::fs::read_dir(&fixture).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), data.join(file.file_name())).unwrap();
    }
    let mut director = Reaper(fed.serve());
    let pid = director.0.id();
    let ready_url = format!("{}/ready", fed.url());
    // The stuck read's deadline (about 10 s), then the start in the new process.
    eventually(
        Duration::from_secs(60),
        "serving (degraded: no peer to refill from), with no thread left reading the store",
        || {
            let ready_url = ready_url.clone();
            async move {
                let status = match reqwest::get(&ready_url).await {
                    Ok(response) => response.json::<serde_json::Value>().await.ok(),
                    Err(_) => None,
                };
                status.is_some_and(|s| s["status"] == "degraded")
                    && !thread_names(pid).iter().any(|name| name == "store-read")
            }
        },
    )
    .await;
    assert!(director.0.try_wait().unwrap().is_none(), "the same process");
    let aside: Vec<String> = std::fs::read_dir(fed.path())
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with("data.corrupt-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the damaged store moved aside once: {aside:?}"
    );
}
