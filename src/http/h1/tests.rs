//! The director's HTTP/1.1 loop over real sockets: object requests answered as hyper
//! answers them, pipelining, the handover to hyper, `Connection: close`, timeouts, and
//! when a busy connection thread yields its core.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::http::serve::{ServeOptions, serve};
use crate::http::tests::{Harness, harness};

const DEADLINE: Duration = Duration::from_secs(10);

/// A director's listener (one connection thread) for the harness's app.
async fn listen(h: &Harness, timeouts: Duration) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let options = ServeOptions {
        tls: None,
        header_timeout: timeouts,
        idle_timeout: timeouts,
        drain_timeout: Duration::from_secs(1),
        threads: 1,
    };
    tokio::spawn(serve(listener, h.app.clone(), options, cancel.clone()));
    (addr, cancel)
}

/// The harness with an origin and a cache for `/ns`, served on a listener whose
/// timeouts are `timeouts`.
async fn director(timeouts: Duration) -> (Harness, SocketAddr, CancellationToken) {
    let h = harness();
    h.register_origin_and_cache().await;
    let (addr, cancel) = listen(&h, timeouts).await;
    (h, addr, cancel)
}

/// hyper alone serving the same app, one connection at a time: what to compare with.
async fn hyper_alone(h: &Harness) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = h.app.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let app = app.for_peer(peer);
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), app),
            );
        }
    });
    addr
}

/// One response read off `reader`: status line, headers (names lowercased, in order)
/// and body (by `Content-Length`; none for `HEAD`).
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers but `Date` (which may change between two answers), sorted.
    fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect();
        headers.sort();
        headers
    }
}

async fn read_answer<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    head: bool,
) -> Answer {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if head { 0 } else { length }];
    reader.read_exact(&mut body).await.unwrap();
    Answer {
        status_line: status_line.trim_end().to_string(),
        headers,
        body,
    }
}

/// A new connection on which `bytes` were sent, to read answers from.
async fn sent(addr: SocketAddr, bytes: &[u8]) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    BufReader::new(stream)
}

/// Sends `request` on a new connection and reads one answer.
async fn exchange(addr: SocketAddr, request: &str, head: bool) -> Answer {
    let mut reader = sent(addr, request.as_bytes()).await;
    tokio::time::timeout(DEADLINE, read_answer(&mut reader, head))
        .await
        .expect("answered")
}

/// True once the server has closed `stream` (read to its end within the deadline).
async fn closed<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn object_requests_are_answered_as_hyper_answers_them() {
    let (h, ours, cancel) = director(Duration::from_secs(5)).await;
    let theirs = hyper_alone(&h).await;
    let targets = [
        ("GET", "/ns/obj"),
        ("HEAD", "/ns/obj"),
        ("GET", "/ns/a%20b?authz=t"),
        ("GET", "/ns/a%20b?authz=t&redirect=false"),
        ("GET", "/ns/obj?explain"),
        ("HEAD", "/ns/obj?explain"),
        ("GET", "/ns/obj?directread&prefercached"),
        ("GET", "/api/v1.0/director/object/ns/obj"),
        ("GET", "/api/v1.0/director/origin/ns/obj"),
        ("GET", "/elsewhere/obj"),
        ("GET", "/ns/../etc"),
        ("GET", "/ns/a%0d%0aSet-Cookie:%20x"),
        ("GET", "/api/v9/unknown"),
        ("HEAD", "/api/v9/unknown"),
        // Not the loop's: hyper answers them on either listener.
        ("OPTIONS", "/ns/obj"),
        ("PUT", "/ns/obj"),
        ("GET", "/health"),
    ];
    for (method, target) in targets {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 20.1.1.1\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let head = method == "HEAD";
        let mine = exchange(ours, &request, head).await;
        let hypers = exchange(theirs, &request, head).await;
        assert_eq!(mine.status_line, hypers.status_line, "{method} {target}");
        assert_eq!(
            mine.comparable_headers(),
            hypers.comparable_headers(),
            "{method} {target}"
        );
        assert_eq!(mine.body, hypers.body, "{method} {target}");
        assert!(mine.header("date").is_some(), "{method} {target}");
    }
    cancel.cancel();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_hyper_takes_over_for_the_rest() {
    let (_h, addr, cancel) = director(Duration::from_secs(5)).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    // Three object requests, then one for hyper (a body), then object requests again,
    // all in one write.
    let body = "{}";
    let requests = format!(
        "GET /ns/a HTTP/1.1\r\nHost: x\r\n\r\n\
         HEAD /ns/b HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /ns/c?redirect=false HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /api/v1.0/director/registerOrigin HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         GET /ns/d HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /ns/e HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    reader
        .get_mut()
        .write_all(requests.as_bytes())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for head in [false, true, false, false, false, false] {
        answers.push(
            tokio::time::timeout(DEADLINE, read_answer(&mut reader, head))
                .await
                .expect("answered"),
        );
    }
    let statuses: Vec<&str> = answers.iter().map(|a| a.status_line.as_str()).collect();
    assert_eq!(
        statuses[..3],
        [
            "HTTP/1.1 307 Temporary Redirect",
            "HTTP/1.1 307 Temporary Redirect",
            "HTTP/1.1 200 OK"
        ]
    );
    assert!(statuses[3].starts_with("HTTP/1.1 4"), "{statuses:?}");
    assert_eq!(statuses[4..], ["HTTP/1.1 307 Temporary Redirect"; 2]);
    let locations: Vec<Option<&str>> = answers.iter().map(|a| a.header("location")).collect();
    assert_eq!(locations[0], Some("http://cache-1.example:8443/ns/a"));
    assert_eq!(locations[1], Some("http://cache-1.example:8443/ns/b"));
    assert_eq!(locations[4], Some("http://cache-1.example:8443/ns/d"));
    assert_eq!(locations[5], Some("http://cache-1.example:8443/ns/e"));
    let route: serde_json::Value = serde_json::from_slice(&answers[2].body).unwrap();
    assert_eq!(route["namespace"], "/ns");
    cancel.cancel();
}

#[tokio::test]
async fn close_http_1_0_bodies_and_split_heads_are_answered_as_asked() {
    let (_h, addr, cancel) = director(Duration::from_secs(5)).await;

    // `Connection: close`: answered, said, and closed.
    let mut reader = sent(
        addr,
        b"GET /ns/a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
    )
    .await;
    let answer = read_answer(&mut reader, false).await;
    assert_eq!(answer.status_line, "HTTP/1.1 307 Temporary Redirect");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut reader).await);

    // HTTP/1.0 (hyper's): answered and closed.
    let mut reader = sent(addr, b"GET /ns/a HTTP/1.0\r\n\r\n").await;
    let answer = read_answer(&mut reader, false).await;
    assert!(
        answer.status_line.contains(" 307 "),
        "{}",
        answer.status_line
    );
    assert!(closed(&mut reader).await);

    // A GET with a body goes to hyper, which reads the body (the body is never taken for
    // the next request): the next request is answered, or (hyper's way with a chunked
    // body the handler did not read) the connection is closed.
    for framing in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let requests = format!(
            "GET /ns/a HTTP/1.1\r\nHost: x\r\n{framing}GET /ns/b HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let mut reader = sent(addr, requests.as_bytes()).await;
        let first = read_answer(&mut reader, false).await;
        assert_eq!(
            first.header("location"),
            Some("http://cache-1.example:8443/ns/a"),
            "{framing}"
        );
        let next = read_answer(&mut reader, false).await;
        assert!(
            next.status_line.is_empty()
                || next.header("location") == Some("http://cache-1.example:8443/ns/b"),
            "{framing}: {} {:?}",
            next.status_line,
            next.headers
        );
    }

    // A head that arrives in pieces is answered once whole.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    for piece in ["GET /ns/spl", "it HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"] {
        reader.get_mut().write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = read_answer(&mut reader, false).await;
    assert_eq!(
        answer.header("location"),
        Some("http://cache-1.example:8443/ns/split")
    );
    cancel.cancel();
}

/// The status line each server in `at` answers `request` with, on a new connection.
async fn status_lines(request: &str, at: [std::net::SocketAddr; 2]) -> Vec<String> {
    let mut statuses = Vec::new();
    for at in at {
        let mut stream = TcpStream::connect(at).await.unwrap();
        // The server may close before reading it all: what it answered is read anyway.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut reader = BufReader::new(stream);
        statuses.push(read_answer(&mut reader, false).await.status_line);
    }
    statuses
}

#[tokio::test]
async fn long_heads_are_answered_and_heads_past_the_limit_refused() {
    let (h, addr, cancel) = director(Duration::from_secs(5)).await;
    // A 30 KiB header (a large token, say), sent in pieces: answered by the loop.
    let long = format!(
        "GET /ns/a HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "t".repeat(30 * 1024)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for piece in long.as_bytes().chunks(4000) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader, false).await;
    assert_eq!(
        answer.header("location"),
        Some("http://cache-1.example:8443/ns/a")
    );
    // Heads about as long as hyper takes, and longer: answered as hyper alone answers
    // them, and one far longer is refused with 431.
    let theirs = hyper_alone(&h).await;
    for extra in [
        super::MAX_HEAD - 100,
        super::MAX_HEAD + 1,
        2 * super::MAX_HEAD,
    ] {
        let huge = format!(
            "GET /ns/a HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
            "t".repeat(extra)
        );
        let statuses = status_lines(&huge, [addr, theirs]).await;
        assert_eq!(statuses[0], statuses[1], "{extra}");
        if extra == 2 * super::MAX_HEAD {
            assert_eq!(statuses[0], "HTTP/1.1 431 Request Header Fields Too Large");
        }
    }
    // A header name longer than `http` takes (64 KiB), in a head hyper's buffer holds:
    // answered as hyper alone answers it, not redirected as if the header were not there.
    let long_name = format!(
        "GET /ns/a HTTP/1.1\r\nHost: x\r\nX-{}: v\r\n\r\n",
        "n".repeat(70 * 1024)
    );
    let statuses = status_lines(&long_name, [addr, theirs]).await;
    assert_eq!(statuses[0], statuses[1]);
    assert!(!statuses[0].contains("307"), "{}", statuses[0]);
    cancel.cancel();
}

#[tokio::test]
async fn idle_connections_and_unfinished_heads_are_closed_in_time() {
    let (_h, addr, cancel) = director(Duration::from_millis(300)).await;
    // Nothing sent: closed after the idle timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut silent).await, "a silent connection stayed open");
    // Half a head, then nothing: closed after the header timeout.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /ns/a HTTP/1.1\r\nHo").await.unwrap();
    assert!(
        closed(&mut half).await,
        "an unfinished head kept its connection"
    );
    // A head trickled a byte at a time cannot push its deadline on.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    for byte in
        b"GET /ns/a HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cut || closed(&mut trickle).await,
        "a trickled head kept its connection"
    );
    assert!(started.elapsed() < DEADLINE);
    // After an answer, the idle timeout applies again.
    let mut reader = sent(addr, b"GET /ns/a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_answer(&mut reader, false).await;
    assert_eq!(answer.status_line, "HTTP/1.1 307 Temporary Redirect");
    assert!(
        closed(&mut reader).await,
        "an idle kept-alive connection stayed open"
    );
    cancel.cancel();
}

/// `skein_connection_thread_yields_total` as the director's `/metrics` gives it.
async fn yields(addr: SocketAddr) -> u64 {
    let answer = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    let text = String::from_utf8(answer.body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("skein_connection_thread_yields_total "))
        .expect("the metric is rendered")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_connection_thread_that_sleeps_between_requests_never_yields() {
    let (_h, addr, cancel) = director(Duration::from_secs(5)).await;
    let mut stream = sent(addr, b"").await;
    // Each gap is a sleep of the connection thread (its runtime parks), which starts
    // its count of CPU time again. The answers use milliseconds of CPU time in all:
    // without the park hooks, the thread would yield once per millisecond of it.
    for _ in 0..100 {
        stream
            .get_mut()
            .write_all(b"GET /ns/obj?explain HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = tokio::time::timeout(DEADLINE, read_answer(&mut stream, false))
            .await
            .expect("answered");
        assert!(answer.status_line.contains("200"), "{}", answer.status_line);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(yields(addr).await, 0);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_thread_kept_busy_yields_and_counts_it() {
    let (_h, addr, cancel) = director(Duration::from_secs(30)).await;
    // Connections that each pipeline thousands of requests: the connection thread
    // answers for far longer than a millisecond with a request always waiting.
    const CONNECTIONS: usize = 8;
    const REQUESTS: usize = 3000;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        clients.spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let mut requests = "GET /ns/obj HTTP/1.1\r\nHost: x\r\n\r\n".repeat(REQUESTS - 1);
            requests.push_str("GET /ns/obj HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let write = tokio::spawn(async move { writer.write_all(requests.as_bytes()).await });
            let mut answers = Vec::new();
            reader.read_to_end(&mut answers).await.unwrap();
            write.await.unwrap().unwrap();
            String::from_utf8_lossy(&answers)
                .matches("HTTP/1.1 307 ")
                .count()
        });
    }
    let answered = tokio::time::timeout(Duration::from_secs(120), clients.join_all())
        .await
        .expect("every pipeline answered");
    assert_eq!(answered, vec![REQUESTS; CONNECTIONS]);
    assert!(yields(addr).await > 0);
    cancel.cancel();
}
