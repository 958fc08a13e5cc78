//! Private keys and bearer tokens never reach the logs: a director runs with every Skein
//! log level on, handles a token-carrying redirect and hostile input, and the captured
//! output is searched for the secrets.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use skein::ad::ServerKind;
use skein::config::DirectorConfig;
use skein::director::{Director, Options};
use skein::fixtures;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_and_tokens_are_never_logged() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("skein=trace,no_secrets=trace")
        .with_writer(move || sink.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("director-a.key");
    let key = skein::keys::generate(&key_path).unwrap();
    let seed = URL_SAFE_NO_PAD.encode(key.to_bytes());
    let trust_path = dir.path().join("trust.toml");
    std::fs::write(
        &trust_path,
        format!(
            "[[server]]\nname = \"director-a\"\nkind = \"director\"\npublic_key = \"{}\"\n\n\
             [[server]]\nname = \"origin-1\"\nkind = \"origin\"\npublic_key = \"{}\"\nnamespaces = [\"/test\"]\n",
            skein::ad::encode_public_key(&key.verifying_key()),
            skein::ad::encode_public_key(&fixtures::key_for("origin-1").verifying_key()),
        ),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = DirectorConfig::from_toml(&format!(
        "name = \"director-a\"\nlisten = \"{addr}\"\nadvertise_url = \"http://{addr}\"\n\
         data_dir = \"{data}\"\n[identity]\nkey = \"{key}\"\n[federation]\ntrust = \"{trust}\"\n",
        data = dir.path().join("data").display(),
        key = key_path.display(),
        trust = trust_path.display(),
    ))
    .unwrap();
    let d = Director::start_with(
        config,
        Options::default(),
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // The identity's Debug form (as a careless `?identity` would log it) hides the key.
    let identity = format!("{:?}", d.state().identity);
    assert!(!identity.contains(&seed), "{identity}");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.as_millis() as u64)
        .unwrap_or_default();
    let ad = fixtures::ad("origin-1", ServerKind::Origin, &["/test"], now - 1000, 1)
        .sign(&fixtures::key_for("origin-1"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let register = format!("http://{addr}/api/v1.0/director/registerOrigin");
    let answer = client.post(&register).json(&ad).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let token = "eyJhbGciOiJFUzI1NiJ9.SECRET-BEARER-TOKEN.sig";
    let response = client
        .get(format!("http://{addr}/test/x?authz=Bearer%20{token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    // Refusals log too: a missing namespace, a malformed body, a forged ad.
    let _ = client
        .get(format!("http://{addr}/nowhere?authz={token}"))
        .send()
        .await;
    let _ = client
        .post(&register)
        .header("authorization", format!("Bearer {token}"))
        .body(format!("{{\"token\": \"{token}\""))
        .send()
        .await;
    let forged = fixtures::ad("origin-1", ServerKind::Origin, &["/test"], now - 1000, 2)
        .sign(&fixtures::key_for("mallory"));
    let _ = client.post(&register).json(&forged).send().await;
    d.shutdown().await;

    // A key file with the wrong mode is refused without printing its content.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = skein::keys::load(&key_path).unwrap_err().to_string();
    assert!(!error.contains(&seed));
    tracing::error!(%error, "hostile: key refused");

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("director ready"), "nothing was captured");
    assert!(!logs.contains(&seed), "the private key reached the logs");
    assert!(
        !logs.contains("SECRET-BEARER-TOKEN"),
        "a token reached the logs"
    );
}
