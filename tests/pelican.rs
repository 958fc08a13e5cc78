//! Pelican servers registering with Skein directors: tokens as Pelican mints them
//! (ES256, P-256 keys from rcgen), ads as Pelican serialises them, a registry stand-in
//! serving per-prefix JWKS as Pelican's registry does, and a cluster carrying the ads
//! by attestation.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Cluster, Tuning, client, eventually, now_ms, routes_to};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use skein::ad::{AdKey, Provenance, ServerKind};
use skein::clock::{ManualClock, SharedClock};
use skein::fixtures;
use skein::pelican::jwks::{KeySet, thumbprint};
use skein::pelican::registry::{Registry, RegistrySettings};
use skein::pelican::{Attestation, KeySource, PelicanEntry};
use skein::trust::Trust;

const PREFIX: &str = "/origins/origin-p.example:8444";
const NAME: &str = "origin-p.example";
const ISSUER: &str = "https://origin-p.example:8444";
const NAMESPACE: &str = "/pelican-data";

/// A Pelican server's signing key, as `config.GetIssuerPrivateJWK` makes it (P-256).
#[derive(Clone)]
struct PelicanKey {
    kid: String,
    pem: String,
    jwk: Value,
}

impl PelicanKey {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let (x, y) = (&raw[1..33], &raw[33..65]);
        let mut jwk = json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            "alg": "ES256", "use": "sig",
        });
        let kid = thumbprint(&jwk).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            kid,
            pem: pair.serialize_pem(),
            jwk,
        }
    }

    fn jwks(&self) -> String {
        json!({ "keys": [self.jwk] }).to_string()
    }

    /// A token as `server_utils.GetAdvertisementTok` mints it, claims editable.
    fn token(&self, director: &str, edit: impl FnOnce(&mut Value)) -> String {
        let now = now_ms() / 1000;
        let aud = skein::pelican::token::wlcg_audience(director).unwrap();
        let mut claims = json!({
            "iss": ISSUER, "sub": "https://origin-p.example:8443", "aud": [aud],
            "iat": now, "nbf": now, "exp": now + 60, "jti": "abc",
            "scope": "pelican.advertise", "wlcg.ver": "1.0",
        });
        edit(&mut claims);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// An origin ad as Pelican's `json.Marshal(OriginAdvertise)` writes it.
fn origin_ad(start: i64, instance: &str, generation: u64, namespaces: &[&str]) -> Value {
    let now_s = (now_ms() / 1000) as i64;
    let issuer_url = json!({"Scheme":"https","Opaque":"","User":null,"Host":"origin-p.example:8444","Path":"","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"","Fragment":"","RawFragment":""});
    let caps = json!({"PublicRead":true,"Read":true,"Write":false,"Listing":true,"FallBackRead":true,"Copies":true});
    let ns: Vec<Value> = namespaces
        .iter()
        .map(|p| {
            json!({"Caps": caps, "path": p, "token-generation": null,
            "token-issuer": [{"base-paths":[p],"restricted-paths":null,"issuer":issuer_url}],
            "from-topology": false})
        })
        .collect();
    json!({
        "name": NAME, "startTime": start, "instanceID": instance, "generationID": generation,
        "version": "7.21.0",
        "expiry": skein::pelican::wire::GoTime::from_unix_millis((now_s + 900) * 1000).0,
        "serverId": "c7c2fd9a", "registry-prefix": PREFIX,
        "data-url": "https://origin-p.example:8443", "web-url": "https://origin-p.example:8444",
        "capabilities": caps, "namespaces": ns,
        "token-issuer": [{"base-paths": namespaces, "restricted-paths": null, "issuer": issuer_url}],
        "storageType": "posix", "directorTest": false, "downtimes": null,
        "requiredFeatures": null,
        "now": skein::pelican::wire::GoTime::from_unix_millis(now_s * 1000).0,
        "status": "ok"
    })
}

const INSTANCE: &str = "8f14e45fceea167a5a36dedd4bea2543";

struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

async fn post(director: &str, endpoint: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let url = format!("{director}/api/v1.0/director/{endpoint}");
    let mut request = client()
        .http()
        .post(&url)
        .header("Content-Type", "application/json")
        .header("User-Agent", "pelican-origin/7.21.0")
        .body(body.to_vec());
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        retry_after,
    }
}

fn entry(key: &PelicanKey, namespaces: &[&str]) -> PelicanEntry {
    PelicanEntry {
        name: NAME.into(),
        kind: ServerKind::Origin,
        issuer: Some(ISSUER.into()),
        keys: KeySet::parse(key.jwks().as_bytes()).unwrap(),
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn key() -> AdKey {
    AdKey {
        kind: ServerKind::Origin,
        name: NAME.into(),
    }
}

fn tuning_with(edit: impl Fn(usize, &mut Trust) + Send + Sync + 'static) -> Tuning {
    Tuning {
        trust_edit: Some(Arc::new(edit)),
        ..Tuning::default()
    }
}

fn assert_pelican_error(answer: &Answer, status: u16, needle: &str, case: &str) {
    assert_eq!(answer.status, status, "{case}: {}", answer.body);
    assert_eq!(answer.body["status"], "error", "{case}: {}", answer.body);
    let msg = answer.body["msg"].as_str().unwrap_or_default();
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{case}: {msg:?} lacks {needle:?}"
    );
}

/// A bad-input case: name, token, body, endpoint, expected status, expected text.
type BadCase = (
    &'static str,
    Option<String>,
    Vec<u8>,
    &'static str,
    u16,
    &'static str,
);

#[tokio::test]
async fn trust_file_mode_takes_in_pelican_ads_and_refuses_bad_ones_as_pelican_does() {
    let pk = PelicanKey::new();
    let stranger = PelicanKey::new();
    let bad_rsa = json!({"kty":"RSA","kid":"huge","e":"AQAB","n":"A".repeat(4000)});
    let mut jwks: Value = serde_json::from_str(&pk.jwks()).unwrap();
    jwks["keys"].as_array_mut().unwrap().push(bad_rsa);
    let jwks = jwks.to_string();
    let for_trust = pk.clone();
    let tuning = tuning_with(move |_, trust| {
        let mut e = entry(&for_trust, &[NAMESPACE]);
        e.keys = KeySet::parse(jwks.as_bytes()).unwrap();
        trust.pelican_mut().insert(PREFIX, e);
    });
    let cluster = Cluster::start(1, tuning, |_| vec![]).await;
    let d = cluster.handle(0);
    let url = d.url().to_string();
    let ad = origin_ad(1_700_000_000, INSTANCE, 5, &[NAMESPACE]);
    let body = serde_json::to_vec(&ad).unwrap();
    let now = (now_ms() / 1000) as i64;

    // Every bad input: a clear JSON refusal, nothing stored.
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, pk.kid)),
        URL_SAFE_NO_PAD.encode(r#"{"scope":"pelican.advertise"}"#)
    );
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(pk.kid.clone());
        let claims = json!({"iss": ISSUER, "aud": [url.clone()], "exp": now + 60, "scope": "pelican.advertise"});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(pk.jwks().as_bytes()),
        )
        .unwrap()
    };
    let huge_kid_token = {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("huge".into());
        let claims = json!({"iss": ISSUER, "aud": [url.clone()], "exp": now + 60, "scope": "pelican.advertise"});
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(pk.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let skein_ad = common::signed("origin-1", ServerKind::Origin, &["/ns"], now_ms(), 1);
    let mut pelican_with_signature = ad.clone();
    pelican_with_signature["signature"] = json!("AAAA");
    let forbidden_ns =
        serde_json::to_vec(&origin_ad(1_700_000_000, INSTANCE, 5, &["/secret"])).unwrap();
    let origin = |case, token, status, needle| -> BadCase {
        (case, token, body.clone(), "registerOrigin", status, needle)
    };
    let cases: Vec<BadCase> = vec![
        origin("no token", None, 403, "Bearer token not present"),
        origin(
            "expired",
            Some(pk.token(&url, |c| {
                c["iat"] = json!(now - 600);
                c["nbf"] = json!(now - 600);
                c["exp"] = json!(now - 500);
            })),
            403,
            "expired",
        ),
        origin(
            "not yet valid",
            Some(pk.token(&url, |c| {
                c["iat"] = json!(now + 600);
                c["nbf"] = json!(now + 600);
                c["exp"] = json!(now + 660);
            })),
            403,
            "not valid yet",
        ),
        origin(
            "wrong audience",
            Some(pk.token("https://elsewhere.example", |_| {})),
            403,
            "audience",
        ),
        origin(
            "missing scope",
            Some(pk.token(&url, |c| {
                c["scope"] = json!("storage.read:/");
            })),
            403,
            "missing required scope",
        ),
        origin(
            "no scope",
            Some(pk.token(&url, |c| {
                c.as_object_mut().unwrap().remove("scope");
            })),
            403,
            "missing required scope",
        ),
        origin(
            "unknown kid",
            Some(stranger.token(&url, |_| {})),
            403,
            "is not registered",
        ),
        origin(
            "unknown issuer",
            Some(pk.token(&url, |c| {
                c["iss"] = json!("https://evil.example");
            })),
            403,
            "issuer",
        ),
        origin("alg none", Some(none_token), 403, "not accepted"),
        origin(
            "HS256 with the public key",
            Some(hs256_with_public_key),
            403,
            "not accepted",
        ),
        origin(
            "huge key in the JWKS",
            Some(huge_kid_token),
            403,
            "unusable",
        ),
        (
            "namespace not given",
            Some(pk.token(&url, |_| {})),
            forbidden_ns,
            "registerOrigin",
            403,
            "may not serve",
        ),
        (
            "origin at the cache endpoint",
            Some(pk.token(&url, |_| {})),
            body.clone(),
            "registerCache",
            403,
            "not a valid cache registration prefix",
        ),
        (
            "malformed body",
            Some(pk.token(&url, |_| {})),
            b"{not json".to_vec(),
            "registerOrigin",
            400,
            "invalid Origin registration",
        ),
        (
            "Pelican body with a Skein signature",
            Some(pk.token(&url, |_| {})),
            serde_json::to_vec(&pelican_with_signature).unwrap(),
            "registerOrigin",
            400,
            "Skein-signed",
        ),
        (
            "Skein ad with a Pelican token",
            Some(pk.token(&url, |_| {})),
            serde_json::to_vec(&skein_ad).unwrap(),
            "registerOrigin",
            400,
            "Skein-signed",
        ),
    ];
    for (case, token, body, endpoint, status, needle) in cases {
        let answer = post(&url, endpoint, token.as_deref(), &body).await;
        assert_pelican_error(&answer, status, needle, case);
        assert!(
            d.state().ledger.view().get(&key()).is_none(),
            "{case}: stored"
        );
    }
    // A Pelican body with a signature and no token is a malformed Skein ad.
    let answer = post(
        &url,
        "registerOrigin",
        None,
        &serde_json::to_vec(&pelican_with_signature).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"], "malformed_json");

    // The real thing: answered as Pelican answers, routed, listed as pelican.
    let answer = post(&url, "registerOrigin", Some(&pk.token(&url, |_| {})), &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"status": "success", "msg": "Successful registration"})
    );
    assert_eq!(routes_to(d, "/pelican-data/file").as_deref(), Some(NAME));
    let listing = client().ads(&url).await.unwrap();
    let listed = listing.iter().find(|a| a.signed.ad.name == NAME).unwrap();
    assert_eq!(listed.provenance, Provenance::Pelican);
    let att = listed.signed.attestation.as_deref().unwrap();
    assert_eq!(att.director, "director-0");
    assert_eq!(att.key_source, KeySource::TrustFile);
    assert_eq!(att.kid, pk.kid);
    assert_eq!(att.token_sha256.len(), 64);

    // Order: a newer generation replaces; a delayed copy does not; a restart wins.
    let held = |d: &skein::director::DirectorHandle| {
        d.state()
            .ledger
            .view()
            .get(&key())
            .map(|a| (a.ad.instance_id.started_at, a.ad.generation))
    };
    let send = |ad: Value| {
        let url = url.clone();
        let token = pk.token(&url, |_| {});
        async move {
            post(
                &url,
                "registerOrigin",
                Some(&token),
                &serde_json::to_vec(&ad).unwrap(),
            )
            .await
        }
    };
    assert_eq!(
        send(origin_ad(1_700_000_000, INSTANCE, 7, &[NAMESPACE]))
            .await
            .status,
        200
    );
    assert_eq!(held(d), Some((1_700_000_000_000, 7)));
    assert_eq!(
        send(origin_ad(1_700_000_000, INSTANCE, 6, &[NAMESPACE]))
            .await
            .status,
        200
    );
    assert_eq!(
        held(d),
        Some((1_700_000_000_000, 7)),
        "a delayed copy never overwrites"
    );
    assert_eq!(
        send(origin_ad(
            1_700_000_100,
            "00000000000000000000000000000001",
            1,
            &[NAMESPACE]
        ))
        .await
        .status,
        200
    );
    assert_eq!(
        held(d),
        Some((1_700_000_100_000, 1)),
        "a restarted server wins"
    );
    let metrics = client()
        .http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("skein_ads_live_by_provenance{provenance=\"pelican\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skein_pelican_registrations_total{result=\"stale\"} 1"),
        "{metrics}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_pelican_ad_registered_at_one_director_is_served_by_all_three_and_survives_a_restart() {
    let pk = PelicanKey::new();
    let for_trust = pk.clone();
    let mut tuning = tuning_with(move |_, trust| {
        trust
            .pelican_mut()
            .insert(PREFIX, entry(&for_trust, &[NAMESPACE]));
    });
    tuning.poll_interval = "200ms";
    let mut cluster = Cluster::start(3, tuning, |i| (0..3).filter(|j| *j != i).collect()).await;
    let url0 = cluster.handle(0).url().to_string();
    // The token names director-0 only: the others cannot verify it, they take the
    // attestation.
    let answer = post(
        &url0,
        "registerOrigin",
        Some(&pk.token(&url0, |_| {})),
        &serde_json::to_vec(&origin_ad(1_700_000_000, INSTANCE, 1, &[NAMESPACE])).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually(
        Duration::from_secs(10),
        "all three route the Pelican namespace",
        || {
            let routed = cluster
                .running()
                .all(|d| routes_to(d, "/pelican-data/x").as_deref() == Some(NAME));
            async move { routed }
        },
    )
    .await;
    for d in cluster.running() {
        let located = client().locate(d.url(), "/pelican-data/x").await.unwrap();
        assert_eq!(located.status, 307);
        assert!(
            located
                .location
                .unwrap()
                .starts_with("https://origin-p.example:8443/pelican-data/x")
        );
    }
    cluster.stop(1).await;
    cluster.restart(1).await;
    let d1 = cluster.handle(1);
    assert_eq!(
        routes_to(d1, "/pelican-data/x").as_deref(),
        Some(NAME),
        "kept in sled"
    );
    let held = d1.state().ledger.view().get(&key()).cloned().unwrap();
    assert_eq!(held.provenance(), Provenance::Pelican);
    assert_eq!(held.attestation.as_ref().unwrap().director, "director-0");
    cluster.shutdown().await;
}

#[tokio::test]
async fn peers_refuse_attestations_they_cannot_vouch_for() {
    let pk = PelicanKey::new();
    let for_trust = pk.clone();
    // Director 1's own trust file gives this origin another namespace only.
    let tuning = tuning_with(move |i, trust| {
        let namespaces: &[&str] = if i == 0 {
            &[NAMESPACE]
        } else {
            &["/elsewhere"]
        };
        trust
            .pelican_mut()
            .insert(PREFIX, entry(&for_trust, namespaces));
    });
    let cluster = Cluster::start(2, tuning, |i| vec![1 - i]).await;
    let (d0, d1) = (cluster.handle(0), cluster.handle(1));
    let url0 = d0.url().to_string();
    let answer = post(
        &url0,
        "registerOrigin",
        Some(&pk.token(&url0, |_| {})),
        &serde_json::to_vec(&origin_ad(1_700_000_000, INSTANCE, 1, &[NAMESPACE])).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let signed = d0.state().ledger.view().get(&key()).unwrap().signed();
    let refused = client().forward(d1.url(), &signed, &url0).await;
    assert!(refused.is_err(), "director 1 must refuse: {refused:?}");
    assert!(d1.state().ledger.view().get(&key()).is_none());

    // An attestation signed by a server (not a director) is refused everywhere.
    let mut ad = signed.ad.clone();
    ad.generation += 1;
    let mut attestation: Attestation = (**signed.attestation.as_ref().unwrap()).clone();
    attestation.director = "origin-1".into();
    let forged = skein::pelican::attest::attest(ad, attestation, &fixtures::key_for("origin-1"));
    assert!(client().forward(&url0, &forged, d1.url()).await.is_err());
    // ... and a service cannot hand in an attested ad itself.
    let answer = post(
        &url0,
        "registerOrigin",
        None,
        &serde_json::to_vec(&signed).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["error"], "attestation_from_service");
    assert_eq!(
        d0.state().ledger.view().get(&key()).unwrap().ad.generation,
        1
    );
    cluster.shutdown().await;
}

/// Pelican's registry, as far as directors use it: per-prefix JWKS (200, 404, 403),
/// plus faults (down, slow, garbage) and a request counter.
#[derive(Default)]
struct Registrar {
    prefixes: Mutex<HashMap<String, String>>,
    mode: AtomicU8,
    requests: AtomicU64,
}

const NORMAL: u8 = 0;
const DOWN: u8 = 1;
const SLOW: u8 = 2;
const GARBAGE: u8 = 3;

async fn registry_jwks(
    State(reg): State<Arc<Registrar>>,
    Path(rest): Path<String>,
) -> axum::response::Response {
    reg.requests.fetch_add(1, Ordering::SeqCst);
    match reg.mode.load(Ordering::SeqCst) {
        DOWN => return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        GARBAGE => return (StatusCode::OK, "<html>not a jwks</html>").into_response(),
        _ => {}
    }
    let Some(prefix) = rest.strip_suffix("/.well-known/issuer.jwks") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let prefix = format!("/{prefix}");
    match reg.prefixes.lock().unwrap().get(&prefix) {
        Some(marker) if marker == "APPROVAL" => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"status":"error","msg":"The origin has not been approved by a federation administrator"})),
        )
            .into_response(),
        Some(jwks) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            jwks.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status":"error","msg":format!("namespace prefix '{prefix}', was not found")})),
        )
            .into_response(),
    }
}

async fn start_registry() -> (Arc<Registrar>, String) {
    let reg = Arc::new(Registrar::default());
    let app = axum::Router::new()
        .route(
            "/api/v1.0/registry/{*rest}",
            axum::routing::get(registry_jwks),
        )
        .with_state(reg.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (reg, url)
}

#[tokio::test]
async fn registry_mode_verifies_against_the_registry_and_survives_its_faults() {
    let pk = PelicanKey::new();
    let other = PelicanKey::new();
    let (reg, registry_url) = start_registry().await;
    {
        let mut prefixes = reg.prefixes.lock().unwrap();
        prefixes.insert(PREFIX.into(), pk.jwks());
        prefixes.insert(NAMESPACE.into(), pk.jwks());
        prefixes.insert("/not-mine".into(), other.jwks());
    }
    let tuning = Tuning {
        extra: format!(
            "[pelican]\nkeys = \"registry\"\nregistry_url = {registry_url:?}\nregistry_timeout = \"300ms\"\n"
        ),
        ..Tuning::default()
    };
    let cluster = Cluster::start(1, tuning, |_| vec![]).await;
    let d = cluster.handle(0);
    let url = d.url().to_string();
    let body = |generation, namespaces: &[&str]| {
        serde_json::to_vec(&origin_ad(1_700_000_000, INSTANCE, generation, namespaces)).unwrap()
    };

    // Nothing cached and the registry down, slow or answering garbage: 503, retry.
    for (mode, case) in [(DOWN, "down"), (SLOW, "slow"), (GARBAGE, "garbage")] {
        reg.mode.store(mode, Ordering::SeqCst);
        let answer = post(
            &url,
            "registerOrigin",
            Some(&pk.token(&url, |_| {})),
            &body(1, &[NAMESPACE]),
        )
        .await;
        assert_pelican_error(&answer, 503, "retry", case);
        assert!(answer.retry_after.is_some(), "{case}: no Retry-After");
        assert!(d.state().ledger.view().get(&key()).is_none(), "{case}");
        // Faults are not remembered as answers.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reg.mode.store(NORMAL, Ordering::SeqCst);
    // The registry-prefix fetch above failed; the negative gap does not apply to faults.
    let answer = post(
        &url,
        "registerOrigin",
        Some(&pk.token(&url, |_| {})),
        &body(1, &[NAMESPACE]),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let att = d
        .state()
        .ledger
        .view()
        .get(&key())
        .unwrap()
        .attestation
        .clone()
        .unwrap();
    assert_eq!(att.key_source, KeySource::Registry);

    // A prefix awaiting approval: Pelican's approval answer.
    reg.prefixes
        .lock()
        .unwrap()
        .insert("/origins/pending.example".into(), "APPROVAL".into());
    let mut pending = origin_ad(1_700_000_000, INSTANCE, 1, &[NAMESPACE]);
    pending["registry-prefix"] = json!("/origins/pending.example");
    let answer = post(
        &url,
        "registerOrigin",
        Some(&pk.token(&url, |_| {})),
        &serde_json::to_vec(&pending).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["approval_error"], true, "{}", answer.body);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("not approved")
    );

    // A namespace registered to another server's key; one not registered at all.
    for (ns, case) in [("/not-mine", "other key"), ("/unregistered", "404")] {
        let answer = post(
            &url,
            "registerOrigin",
            Some(&pk.token(&url, |_| {})),
            &body(2, &[NAMESPACE, ns]),
        )
        .await;
        assert_pelican_error(&answer, 403, "not registered to this origin", case);
    }
    assert_eq!(
        d.state().ledger.view().get(&key()).unwrap().ad.generation,
        1
    );

    // The registry goes down: cached keys keep serving.
    reg.mode.store(DOWN, Ordering::SeqCst);
    let answer = post(
        &url,
        "registerOrigin",
        Some(&pk.token(&url, |_| {})),
        &body(3, &[NAMESPACE]),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    reg.mode.store(NORMAL, Ordering::SeqCst);

    // 10,000 distinct unknown kids within a minute cost at most a couple of requests.
    let before = reg.requests.load(Ordering::SeqCst);
    let view = d.state().ledger.view();
    let ad_body = body(4, &[NAMESPACE]);
    for i in 0..10_000 {
        let token = format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"kid-{i}"}}"#)),
            URL_SAFE_NO_PAD.encode("{}")
        );
        let refused = d
            .state()
            .pelican
            .admit(
                ServerKind::Origin,
                Some(&format!("Bearer {token}")),
                &ad_body,
                &[],
                &view,
            )
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    let spent = reg.requests.load(Ordering::SeqCst) - before;
    println!("registry requests for 10,000 unknown kids: {spent}");
    assert!(spent <= 2, "{spent} registry requests");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_requests_per_minute_with_1000_pelican_servers() {
    const SERVERS: usize = 1000;
    const MINUTES: u64 = 60;
    let pk = PelicanKey::new();
    let (reg, registry_url) = start_registry().await;
    {
        let mut prefixes = reg.prefixes.lock().unwrap();
        for i in 0..SERVERS {
            prefixes.insert(format!("/origins/o{i}.example"), pk.jwks());
            prefixes.insert(format!("/data/o{i}"), pk.jwks());
        }
    }
    let clock = ManualClock::new(now_ms());
    let shared: SharedClock = clock.clone();
    let registry = Registry::new(
        skein::client::Client::new(Duration::from_secs(2), None).unwrap(),
        RegistrySettings {
            url: Some(registry_url),
            discovery_url: None,
            key_ttl: Duration::from_secs(15 * 60),
            refresh_min_interval: Duration::from_secs(30),
            burst: 1_000_000,
            rate_per_sec: 1_000_000,
        },
        shared,
    );
    let mut keys = skein::pelican::PelicanKeys::default();
    keys.set_registry(registry.clone());
    let mut per_minute = Vec::new();
    for _minute in 0..MINUTES {
        let before = reg.requests.load(Ordering::SeqCst);
        for i in 0..SERVERS {
            // What the gate asks per origin ad: its registry prefix and its namespace.
            assert!(
                keys.resolve(&format!("/origins/o{i}.example"), &pk.kid)
                    .await
                    .is_ok()
            );
            assert!(keys.resolve(&format!("/data/o{i}"), &pk.kid).await.is_ok());
        }
        // Background refreshes finish within the minute.
        eventually(
            Duration::from_secs(30),
            "background refreshes finish",
            || {
                let idle = registry.refreshing() == 0;
                async move { idle }
            },
        )
        .await;
        per_minute.push(reg.requests.load(Ordering::SeqCst) - before);
        clock.advance(60_000);
    }
    let total: u64 = per_minute.iter().sum();
    let steady: u64 = per_minute[1..].iter().sum::<u64>() / (MINUTES - 1);
    println!(
        "registry requests, {SERVERS} origins (2 prefixes each) advertising every minute for {MINUTES} min: first minute {}, steady state {steady}/min, total {total}",
        per_minute[0]
    );
    assert_eq!(
        per_minute[0],
        2 * SERVERS as u64,
        "cold cache: one request per prefix"
    );
    // Each prefix is refreshed once per key_ttl (15 min): 2,000 / 15 = ~133 a minute.
    assert!(
        steady <= 2 * SERVERS as u64 / 15 + 20,
        "steady {steady}/min"
    );
}

#[test]
fn trust_file_pelican_entries_parse_and_report_every_problem() {
    let pk = PelicanKey::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("origin.jwks"), pk.jwks()).unwrap();
    let text = format!(
        r#"
[[server]]
name = "director-0"
kind = "director"
public_key = "{dkey}"

[[pelican]]
name = "origin-p.example"
kind = "origin"
registry_prefix = "/origins/origin-p.example:8444"
issuer = "https://origin-p.example:8444"
jwks_file = "origin.jwks"
namespaces = ["/pelican-data"]

[[pelican]]
name = "cache-p"
kind = "cache"
registry_prefix = "/caches/cache-p"
jwks = '''{jwks}'''
namespaces = ["/"]
"#,
        dkey = skein::ad::encode_public_key(&fixtures::key_for("director-0").verifying_key()),
        jwks = pk.jwks(),
    );
    std::fs::write(dir.path().join("trust.toml"), &text).unwrap();
    let trust = Trust::load(&dir.path().join("trust.toml")).unwrap();
    assert_eq!(trust.len(), 1, "today's [[server]] entries still load");
    assert_eq!(trust.pelican().len(), 2);
    assert!(
        trust
            .pelican()
            .entry(PREFIX)
            .unwrap()
            .keys
            .contains(&pk.kid)
    );

    let bad = r#"
[[pelican]]
name = "x"
kind = "origin"
registry_prefix = "/caches/x"
jwks = '{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}'
namespaces = ["relative"]

[[pelican]]
name = "y"
kind = "cache"
registry_prefix = "/caches/y"
"#;
    let problems = Trust::parse(bad).unwrap_err();
    for needle in [
        "registry_prefix must be",
        "not a clean absolute path",
        "no usable key",
        "exactly one of jwks or jwks_file",
    ] {
        assert!(problems.contains(needle), "{problems} lacks {needle}");
    }
}

#[tokio::test]
async fn in_registry_mode_a_peer_checks_an_attestation_against_its_own_registry_copy() {
    let pk = PelicanKey::new();
    let (reg, registry_url) = start_registry().await;
    {
        let mut prefixes = reg.prefixes.lock().unwrap();
        prefixes.insert(PREFIX.into(), pk.jwks());
        prefixes.insert(NAMESPACE.into(), pk.jwks());
    }
    let tuning = Tuning {
        extra: format!("[pelican]\nkeys = \"registry\"\nregistry_url = {registry_url:?}\n"),
        ..Tuning::default()
    };
    let cluster = Cluster::start(2, tuning, |i| vec![1 - i]).await;
    let url0 = cluster.handle(0).url().to_string();
    let body = serde_json::to_vec(&origin_ad(1_700_000_000, INSTANCE, 1, &[NAMESPACE])).unwrap();
    let answer = post(
        &url0,
        "registerOrigin",
        Some(&pk.token(&url0, |_| {})),
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually(
        Duration::from_secs(10),
        "director 1 takes the attested ad",
        || {
            let routed = routes_to(cluster.handle(1), "/pelican-data/x").as_deref() == Some(NAME);
            async move { routed }
        },
    )
    .await;
    // Director 1 asked the registry itself (prefix and namespace) before vouching.
    let d1 = cluster.handle(1);
    let registry = d1
        .state()
        .ledger
        .trust()
        .pelican()
        .registry()
        .unwrap()
        .clone();
    assert!(registry.requests() >= 2, "{} requests", registry.requests());
    cluster.shutdown().await;
}
