//! Catch-up: pulled pages are verified in batches, and one bad ad spoils nothing else.

use skein::ad::{AdKey, ServerKind};
use skein::fixtures;

use super::WAIT;
use crate::common::*;

/// Good origins in the page: enough for more than one Ed25519 batch.
const GOOD: usize = 150;

fn good_name(i: usize) -> String {
    format!("origin-good-{i}")
}

fn origin(name: &str) -> AdKey {
    AdKey {
        kind: ServerKind::Origin,
        name: name.to_string(),
    }
}

/// How many ads `d` counted as received with `result` (`forbidden`, `accepted`, ...).
fn received(d: &skein::director::DirectorHandle, result: &str) -> u64 {
    let text = d.state().metrics.render(0, 0);
    let label = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("skein_ads_received_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_page_with_one_forged_ad_holds_every_good_one_and_refuses_the_forged_one() {
    // Director 0 holds the ads and knows nobody (it does not trust director-1, so it never
    // forwards to it): director 1 can only get them by pulling, through catch-up.
    // "origin-forged" is signed with the key director 0 lists for it; director 1's trust
    // file lists another key for that name, so to director 1 the ad is a forgery.
    let tuning = Tuning {
        trust_edit: Some(std::sync::Arc::new(|i, trust: &mut skein::trust::Trust| {
            let goods: Vec<String> = (0..GOOD).map(good_name).collect();
            let namespaces = ["/good"];
            let mut servers: Vec<(&str, ServerKind, &[&str])> = goods
                .iter()
                .map(|n| (n.as_str(), ServerKind::Origin, &namespaces[..]))
                .collect();
            let director = director_name(i);
            servers.push((director.as_str(), ServerKind::Director, &[]));
            if i == 1 {
                servers.push(("director-0", ServerKind::Director, &[]));
            }
            servers.push(("origin-forged", ServerKind::Origin, &namespaces[..]));
            let mut edited = fixtures::trust(&servers);
            if i == 1 {
                let mut listed = edited.get("origin-forged").cloned().unwrap();
                listed.key = fixtures::key_for("someone-else").verifying_key();
                edited.insert("origin-forged", listed);
            }
            *trust = edited;
        })),
        ..Tuning::default()
    };
    let cluster = Cluster::start(2, tuning, |i| if i == 1 { vec![0] } else { vec![] }).await;
    // Cut while director 0 takes the ads, so that they all come by catch-up (pulled in a
    // few pages, one per group of differing digest buckets).
    cluster.cut(0, 1);
    let started = now_ms();
    let c = client();
    let mut ads: Vec<_> = (0..GOOD)
        .map(|i| signed(&good_name(i), ServerKind::Origin, &["/good"], started, 1))
        .collect();
    ads.insert(
        GOOD / 2,
        signed("origin-forged", ServerKind::Origin, &["/good"], started, 1),
    );
    for ad in &ads {
        let answer = c.register(cluster.handle(0).url(), ad).await.unwrap();
        assert_eq!(answer.status, "accepted", "{}", ad.ad.name);
    }
    let holder = cluster.handle(0);
    assert!(
        holder
            .state()
            .ledger
            .view()
            .get(&origin("origin-forged"))
            .is_some()
    );
    assert_eq!(received(cluster.handle(1), "forbidden"), 0);
    cluster.heal(0, 1);
    let puller = cluster.handle(1);
    eventually(WAIT, "director 1 pulled every good ad", || async {
        (0..GOOD).all(|i| held_generation(puller, &origin(&good_name(i))) == Some(1))
    })
    .await;
    // The forged ad came in the same page as the good ones (one fetch of 151 keys): it
    // was refused, not held, and counted as refused.
    eventually(
        WAIT,
        "director 1 counted the forged ad as refused",
        || async { received(puller, "forbidden") >= 1 },
    )
    .await;
    assert_eq!(
        held_generation(puller, &origin("origin-forged")),
        None,
        "a forged ad is never held"
    );
    // A pulled page is counted after its view is published: the count may trail the
    // view by a moment.
    eventually(WAIT, "every good ad counted as accepted", || async {
        received(puller, "accepted") >= GOOD as u64
    })
    .await;
    cluster.shutdown().await;
}
