//! A deterministic simulation of the replication protocol: 25 directors exchange
//! messages over a simulated network with random delays, drops, partitions, restarts and
//! skewed clocks, using Skein's own total order (`ad::is_newer`), views (`routing::View`)
//! and bucketed digests (`replication::digest`). After the faults stop and the network
//! heals, anti-entropy must bring every director to the same view: the newest version of
//! every ad that any director ever accepted. A property test runs many seeds; a failing
//! seed replays exactly.
//!
//! It models the protocol, not the HTTP transport: forwarding (only newer ads, to every
//! other director, never to oneself), digest exchange and catch-up on restart, as
//! `docs/replication.md` describes them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skein::ad::StoredAd;
use skein::ad::{AdKey, AdVersion, ServerKind, SignedAd, is_newer};
use skein::fixtures;
use skein::replication::digest;
use skein::routing::View;

const DIRECTORS: usize = 25;
const SERVERS: usize = 40;
const STEPS: usize = 400;
/// Far beyond the simulated time: expiry is not what this simulation is about.
const LIFETIME_MS: u64 = 365 * 24 * 3600 * 1000;
const EPOCH: u64 = 1_700_000_000_000;

/// One simulated director.
struct Director {
    view: View,
    /// Ahead (+) or behind (-) the true time, ms.
    skew: i64,
    up: bool,
    /// Directors in the same group can talk.
    group: u8,
}

/// A simulated server: its current instance and generation.
struct Server {
    started_at: u64,
    instance: u64,
    generation: u64,
    group: u8,
}

/// A message in flight: an ad forwarded from one director to another.
struct Message {
    from: usize,
    to: usize,
    ad: Arc<StoredAd>,
}

struct World {
    rng: StdRng,
    now: u64,
    directors: Vec<Director>,
    servers: Vec<Server>,
    network: VecDeque<Message>,
    /// The newest version of each key that any director accepted.
    newest: BTreeMap<AdKey, AdVersion>,
    forwards: u64,
}

/// Entries in key order: a view iterates in a per-process hash order, and the run must
/// not depend on it.
fn sorted(mut entries: Vec<skein::wire::DigestEntry>) -> Vec<skein::wire::DigestEntry> {
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries
}

fn server_name(i: usize) -> String {
    format!("server-{i}")
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let directors = (0..DIRECTORS)
            .map(|_| Director {
                view: View::default(),
                skew: rng.gen_range(-3_600_000..=3_600_000),
                up: true,
                group: 0,
            })
            .collect();
        let servers = (0..SERVERS)
            .map(|i| Server {
                started_at: EPOCH - rng.gen_range(0..100_000),
                instance: i as u64,
                generation: 0,
                group: 0,
            })
            .collect();
        Self {
            rng,
            now: EPOCH,
            directors,
            servers,
            network: VecDeque::new(),
            newest: BTreeMap::new(),
            forwards: 0,
        }
    }

    fn can_talk(&self, a: usize, b: usize) -> bool {
        self.directors[a].up
            && self.directors[b].up
            && self.directors[a].group == self.directors[b].group
    }

    /// A director receives `ad` (from a server or a peer): stores it if newer and
    /// forwards it to every other director it can reach, never to itself.
    fn receive(&mut self, at: usize, ad: Arc<StoredAd>) {
        let director = &self.directors[at];
        if !director.up {
            return;
        }
        let key = ad.ad.key();
        let held = director.view.get(&key).map(|a| a.ad.version());
        if !is_newer(ad.ad.version(), held) {
            return;
        }
        self.directors[at].view = self.directors[at].view.with_ad(ad.clone());
        let newest = self.newest.entry(key).or_insert(ad.ad.version());
        if ad.ad.version() > *newest {
            *newest = ad.ad.version();
        }
        for to in 0..DIRECTORS {
            if to != at {
                self.network.push_back(Message {
                    from: at,
                    to,
                    ad: ad.clone(),
                });
                self.forwards += 1;
            }
        }
    }

    /// A server sends a new ad to every director in its group, as services do.
    fn advertise(&mut self, index: usize) {
        let server = &mut self.servers[index];
        server.generation += 1;
        let mut ad = fixtures::ad(
            &server_name(index),
            if index % 2 == 0 {
                ServerKind::Origin
            } else {
                ServerKind::Cache
            },
            &["/sim"],
            server.started_at,
            server.generation,
        );
        ad.instance_id.uuid = uuid::Uuid::from_u64_pair(server.started_at, server.instance);
        ad.expires_at = EPOCH + LIFETIME_MS;
        let group = server.group;
        for at in 0..DIRECTORS {
            if self.directors[at].group == group {
                let received = self.now.saturating_add_signed(self.directors[at].skew);
                let signed = SignedAd {
                    ad: ad.clone(),
                    signature: String::new(),
                    attestation: None,
                };
                self.receive(at, Arc::new(StoredAd::new(signed, received, LIFETIME_MS)));
            }
        }
    }

    /// A server restarts: a new instance, started by its own (possibly wrong) clock.
    fn restart_server(&mut self, index: usize) {
        let skew: i64 = self.rng.gen_range(-600_000..=600_000);
        let instance = self.rng.r#gen::<u64>();
        let server = &mut self.servers[index];
        server.started_at = self.now.saturating_add_signed(skew);
        server.instance = instance;
        server.generation = 0;
    }

    /// Delivers (or, across a partition or to a stopped director, drops) one message.
    fn deliver_one(&mut self) {
        if self.network.is_empty() {
            return;
        }
        // Random order: a message may overtake others (a delayed copy arrives late).
        let pick = self.rng.gen_range(0..self.network.len().min(64));
        let Some(message) = self.network.remove(pick) else {
            return;
        };
        if self.can_talk(message.from, message.to) && self.rng.gen_bool(0.97) {
            self.receive(message.to, message.ad);
        }
    }

    /// One digest exchange, as `sync_with`: compare bucket summaries, then pull what the
    /// peer holds newer and push what it lacks, only within differing buckets.
    fn sync(&mut self, a: usize, b: usize) {
        if a == b || !self.can_talk(a, b) {
            return;
        }
        let (va, vb) = (
            self.directors[a].view.clone(),
            self.directors[b].view.clone(),
        );
        let differ = digest::differing(
            &digest::summarise(&va, self.now),
            &digest::summarise(&vb, self.now),
        );
        if differ.is_empty() {
            return;
        }
        for entry in sorted(digest::entries(&vb, self.now, Some(&differ))) {
            if is_newer(entry.version, va.get(&entry.key).map(|x| x.ad.version()))
                && let Some(ad) = vb.get(&entry.key)
            {
                self.receive(a, ad.clone());
            }
        }
        for entry in sorted(digest::entries(&va, self.now, Some(&differ))) {
            if is_newer(entry.version, vb.get(&entry.key).map(|x| x.ad.version()))
                && let Some(ad) = va.get(&entry.key)
            {
                self.receive(b, ad.clone());
            }
        }
    }

    fn step(&mut self) {
        self.now += self.rng.gen_range(1..2_000);
        match self.rng.gen_range(0..100) {
            0..=34 => {
                let s = self.rng.gen_range(0..SERVERS);
                self.advertise(s);
            }
            35..=37 => {
                let s = self.rng.gen_range(0..SERVERS);
                self.restart_server(s);
            }
            38..=40 => {
                // A partition: every director and server into one of two groups.
                for d in 0..DIRECTORS {
                    self.directors[d].group = self.rng.gen_range(0..2);
                }
                for s in 0..SERVERS {
                    self.servers[s].group = self.rng.gen_range(0..2);
                }
            }
            41..=42 => {
                for d in &mut self.directors {
                    d.group = 0;
                }
                for s in &mut self.servers {
                    s.group = 0;
                }
            }
            43..=45 => {
                // A director stops (its view is durable: it comes back with it) or restarts
                // and catches up from a random peer.
                let d = self.rng.gen_range(0..DIRECTORS);
                if self.directors[d].up {
                    self.directors[d].up = false;
                } else {
                    self.directors[d].up = true;
                    self.directors[d].skew = self.rng.gen_range(-3_600_000..=3_600_000);
                    let peer = self.rng.gen_range(0..DIRECTORS);
                    self.sync(d, peer);
                }
            }
            46..=50 => {
                let (a, b) = (
                    self.rng.gen_range(0..DIRECTORS),
                    self.rng.gen_range(0..DIRECTORS),
                );
                self.sync(a, b);
            }
            _ => {
                for _ in 0..8 {
                    self.deliver_one();
                }
            }
        }
    }

    /// Faults stop: every director up, one group; anti-entropy rounds
    /// (each director with one random peer, as every `poll_interval`) until all agree.
    fn heal_and_settle(&mut self) -> usize {
        // What is in flight arrives (or is lost) under the faults still in force; only
        // anti-entropy can repair what was lost.
        while !self.network.is_empty() {
            self.deliver_one();
        }
        for d in &mut self.directors {
            d.up = true;
            d.group = 0;
        }
        for round in 1..=64 {
            if self.converged() {
                return round - 1;
            }
            for a in 0..DIRECTORS {
                let b = self.rng.gen_range(0..DIRECTORS);
                self.sync(a, b);
            }
            while !self.network.is_empty() {
                self.deliver_one();
            }
        }
        64
    }

    fn versions(&self, d: usize) -> BTreeMap<AdKey, AdVersion> {
        self.directors[d]
            .view
            .ads()
            .map(|a| (a.ad.key(), a.ad.version()))
            .collect()
    }

    fn converged(&self) -> bool {
        (0..DIRECTORS).all(|d| self.versions(d) == self.newest)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn twenty_five_directors_converge_after_any_faults(seed in any::<u64>()) {
        let mut world = World::new(seed);
        for _ in 0..STEPS {
            world.step();
        }
        let rounds = world.heal_and_settle();
        prop_assert!(
            world.converged(),
            "seed {seed}: not converged after {rounds} anti-entropy rounds"
        );
        // Every director holds the newest version of every server's ad, and nothing else.
        for d in 0..DIRECTORS {
            prop_assert_eq!(world.versions(d).len(), world.newest.len());
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut world = World::new(seed);
        for _ in 0..STEPS {
            world.step();
        }
        let rounds = world.heal_and_settle();
        (world.forwards, rounds, world.versions(0))
    };
    assert_eq!(run(7), run(7));
    let (forwards, rounds, versions) = run(7);
    println!(
        "25 directors, {SERVERS} servers, {STEPS} steps: {forwards} forwards, {} ads, converged after {rounds} anti-entropy rounds",
        versions.len()
    );
}
