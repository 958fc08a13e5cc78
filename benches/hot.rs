//! Criterion benches of the hot paths: routing, with_ad, signature checks, codec.

use std::hint::black_box;
use std::sync::Arc;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use skein::ad::{Record, ServerKind};
use skein::codec;
use skein::fixtures::{federation, federation_ad, key_for, namespace_path};
use skein::metrics::{Metrics, RouteClass};
use skein::routing::{Purpose, View};
use skein::store::StoredAd;

const SERVERS: usize = 1_000;
const NAMESPACES: usize = 10_000;
const STARTED: u64 = 1_700_000_000_000;
const NOW: u64 = STARTED + 1_000;

fn loaded_view() -> (View, Vec<StoredAd>) {
    let servers = federation(SERVERS, NAMESPACES);
    let stored: Vec<StoredAd> = servers
        .iter()
        .map(|s| StoredAd::new(federation_ad(s, STARTED, 1), STARTED, 15 * 60 * 1000))
        .collect();
    (View::from_ads(stored.clone()), stored)
}

/// Object paths spread over every namespace, a few levels below the prefix.
fn paths(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ns = (i * 7919) % NAMESPACES;
            format!("{}/run{}/file{i}.dat", namespace_path(ns), i % 13)
        })
        .collect()
}

fn bench_route(c: &mut Criterion) {
    let (view, _) = loaded_view();
    let paths = paths(4096);
    let mut i = 0;
    c.bench_function("view_route_1k_servers_10k_ns", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(view.route(black_box(&paths[i]), Purpose::Read, NOW)).ok()
        })
    });
    // The same view holding 100 downtime records (about servers not in it): every
    // candidate of every redirect is then checked against them.
    let mut with_records = view.clone();
    for n in 0..100 {
        let record = Record {
            signer: "ops".into(),
            active: true,
            start: 0,
            end: u64::MAX,
            reason: String::new(),
        };
        let ad = record
            .into_ad(
                ServerKind::Downtime,
                &format!("elsewhere-{n}"),
                STARTED,
                u64::MAX,
            )
            .sign(&key_for("ops"));
        with_records = with_records.with_ad(Arc::new(StoredAd::new(ad, STARTED, u64::MAX)));
    }
    c.bench_function("view_route_1k_servers_10k_ns_100_records", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(with_records.route(black_box(&paths[i]), Purpose::Read, NOW)).ok()
        })
    });
    let metrics = Metrics::default();
    c.bench_function("metrics_request_observe", |b| {
        b.iter(|| {
            let class = RouteClass::of(black_box("/ligo/frames/file.dat"));
            metrics.request(class, black_box(Duration::from_micros(180)));
        })
    });
    c.bench_function("view_route_miss", |b| {
        b.iter(|| black_box(view.route(black_box("/nowhere/at/all"), Purpose::Read, NOW)).ok())
    });
}

fn bench_with_ad(c: &mut Criterion) {
    let (view, stored) = loaded_view();
    // Replace a cache ad (60 namespaces) with a newer version, as an ingest does.
    let cache = stored
        .iter()
        .find(|s| s.ad.name == "cache-7")
        .cloned()
        .map(|mut s| {
            s.ad.generation += 1;
            Arc::new(s)
        });
    let Some(cache) = cache else { return };
    c.bench_function("view_with_ad_1k_servers_10k_ns", |b| {
        b.iter(|| black_box(view.with_ad(cache.clone())))
    });
}

fn bench_signatures(c: &mut Criterion) {
    let servers = federation(SERVERS, NAMESPACES);
    let Some(cache) = servers.iter().find(|s| s.0 == "cache-7") else {
        return;
    };
    let key = key_for(&cache.0);
    let signed = federation_ad(cache, STARTED, 1);
    let public = key.verifying_key();
    c.bench_function("ad_verify_60_ns", |b| {
        b.iter(|| black_box(signed.verify(&public)))
    });
    let ad = signed.ad.clone();
    c.bench_function("ad_sign_60_ns", |b| {
        b.iter(|| black_box(ad.clone().sign(&key)))
    });
    let json = serde_json::to_vec(&signed).unwrap_or_default();
    c.bench_function("ad_json_parse_60_ns", |b| {
        b.iter(|| black_box(serde_json::from_slice::<skein::ad::SignedAd>(&json).ok()))
    });
}

fn bench_codec(c: &mut Criterion) {
    let servers = federation(SERVERS, NAMESPACES);
    let Some(cache) = servers.iter().find(|s| s.0 == "cache-7") else {
        return;
    };
    let stored = StoredAd::new(federation_ad(cache, STARTED, 1), STARTED, 900_000);
    c.bench_function("codec_encode_stored_ad", |b| {
        b.iter(|| black_box(codec::encode(black_box(&stored))))
    });
    let bytes = codec::encode(&stored);
    c.bench_function("codec_decode_stored_ad", |b| {
        b.iter(|| black_box(codec::decode::<StoredAd>(black_box(&bytes)).ok()))
    });
    c.bench_function("codec_canonical_ad_bytes", |b| {
        b.iter(|| black_box(codec::canonical_ad_bytes(black_box(&stored.ad))))
    });
}

criterion_group!(
    benches,
    bench_route,
    bench_with_ad,
    bench_signatures,
    bench_codec
);
criterion_main!(benches);
