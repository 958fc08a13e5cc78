//! `skein get` against hand-made servers: one dies mid-body, others resume (or serve
//! another version); a definite 404 ends the search; the memory of directors keeps only
//! those that answer.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

const SKEIN: &str = env!("CARGO_BIN_EXE_skein");

/// The object every server holds (some of it).
fn object() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

/// How a fake server answers one request: (path, first byte asked) -> raw response.
type Handler = dyn Fn(&str, Option<u64>) -> Vec<u8> + Send + Sync;

/// Serves `handler` on a fresh port until the test ends; returns the base URL.
fn serve(handler: Arc<Handler>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || answer(stream, &*handler));
        }
    });
    url
}

fn answer(mut stream: TcpStream, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut from = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = value.trim().trim_end_matches('-').parse().ok();
        }
    }
    let _ = stream.write_all(&handler(&path, from));
    let _ = stream.flush();
    // Dropping the stream closes it: a body shorter than its Content-Length breaks off.
}

fn head(status: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends the headers of the whole object, then half of it, then hangs up.
fn dies_mid_body() -> Arc<Handler> {
    Arc::new(|_, _| {
        let object = object();
        let half = &object[..object.len() / 2];
        head(
            "200 OK",
            &[
                format!("content-length: {}", object.len()),
                "etag: \"v1\"".into(),
            ],
            half,
        )
    })
}

/// Honours `Range` and says which version it holds.
fn resumes(etag: &'static str) -> Arc<Handler> {
    Arc::new(move |_, from| {
        let object = object();
        let tag = format!("etag: \"{etag}\"");
        match from {
            Some(start) => {
                let start = start as usize;
                head(
                    "206 Partial Content",
                    &[
                        format!("content-length: {}", object.len() - start),
                        format!(
                            "content-range: bytes {start}-{}/{}",
                            object.len() - 1,
                            object.len()
                        ),
                        tag,
                    ],
                    &object[start..],
                )
            }
            None => head(
                "200 OK",
                &[format!("content-length: {}", object.len()), tag],
                &object,
            ),
        }
    })
}

/// A director that sends /ns/obj to `servers` (in that order), answers 404 for the rest,
/// and lists `others` as fellow directors in its discovery document.
fn director(servers: Vec<String>, others: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let port: u16 = me.rsplit(':').next().unwrap().parse().unwrap();
    let me2 = me.clone();
    let handler: Arc<Handler> = Arc::new(move |path, _| {
        if path == "/.well-known/pelican-configuration" {
            let mut all = vec![me2.clone()];
            all.extend(others.iter().cloned());
            let body = serde_json::json!({
                "director_endpoint": me2,
                "director_advertise_endpoints": all,
            })
            .to_string();
            return head(
                "200 OK",
                &[format!("content-length: {}", body.len())],
                body.as_bytes(),
            );
        }
        if path.starts_with("/ns/") {
            let links: Vec<String> = servers
                .iter()
                .enumerate()
                .map(|(i, s)| format!("<{s}{path}>; rel=\"duplicate\"; pri={}; depth=1", i + 1))
                .collect();
            return head(
                "307 Temporary Redirect",
                &[
                    format!("location: {}{path}", servers[0]),
                    format!("link: {}", links.join(", ")),
                    "content-length: 0".into(),
                ],
                b"",
            );
        }
        let body = format!(
            r#"{{"error":"not_found","detail":"no server serves a namespace containing {path}"}}"#
        );
        head(
            "404 Not Found",
            &[
                format!("content-length: {}", body.len()),
                "content-type: application/json".into(),
            ],
            body.as_bytes(),
        )
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || answer(stream, &*handler));
        }
    });
    me
}

fn get(dir: &Path, args: &[&str]) -> Output {
    Command::new(SKEIN)
        .arg("get")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .output()
        .expect("run skein get")
}

#[test]
fn a_server_dying_mid_body_is_resumed_on_the_next_without_a_byte_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = director(vec![serve(dies_mid_body()), serve(resumes("v1"))], vec![]);
    let out = get(dir.path(), &["--federation", &d, "--json", "/ns/obj"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout == object(),
        "stdout holds {} bytes, not the object",
        out.stdout.len()
    );
    let summary: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(summary["bytes"], 200_000);
    assert_eq!(summary["attempts"][1]["from"], 100_000, "{summary}");
}

#[test]
fn another_version_on_the_next_server_stops_stdout_but_restarts_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = director(
        vec![
            serve(dies_mid_body()),
            serve(resumes("v2")),
            serve(resumes("v1")),
        ],
        vec![],
    );
    let out = get(dir.path(), &["--federation", &d, "/ns/obj"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a mixed object must not succeed");
    assert_eq!(out.stdout, object()[..100_000], "only the first half, once");
    assert!(
        err.contains("standard output: the output is incomplete"),
        "{err}"
    );
    assert!(err.contains("different version"), "{err}");

    let out = get(
        dir.path(),
        &["--federation", &d, "-o", "obj", "--quiet", "/ns/obj"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(dir.path().join("obj")).unwrap() == object());
    assert!(!dir.path().join("obj.part").exists());
}

#[test]
fn a_definite_404_ends_the_search_and_is_what_the_user_sees() {
    let dir = tempfile::tempdir().unwrap();
    let d = director(vec![serve(resumes("v1"))], vec![]);
    let out = get(
        dir.path(),
        &[
            "--federation",
            &d,
            "--federation",
            "http://skein-test-no-such-host.invalid:8444",
            "/nope/x",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = err
        .lines()
        .rfind(|l| l.starts_with("skein:"))
        .unwrap_or_default();
    assert!(
        last.contains("404") && last.contains("no server serves"),
        "{err}"
    );
}

#[test]
fn memory_keeps_only_directors_that_answer_and_no_memory_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let unresolvable = "http://director-b.skein-test.invalid:8444".to_string();
    let d = director(vec![serve(resumes("v1"))], vec![unresolvable.clone()]);
    let memory = dir.path().join(".cache/skein/directors.json");

    let out = get(
        dir.path(),
        &["--federation", &d, "--no-memory", "-o", "x", "/ns/obj"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!memory.exists(), "--no-memory wrote {}", memory.display());

    let out = get(dir.path(), &["--federation", &d, "-o", "x", "/ns/obj"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remembered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&memory).unwrap()).unwrap();
    let list = remembered[&d].as_array().unwrap();
    assert!(list.iter().any(|u| u == &d), "{remembered}");
    assert!(!list.iter().any(|u| u == &unresolvable), "{remembered}");
}
