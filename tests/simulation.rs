//! A deterministic simulation of the replication protocol: 25 directors exchange
//! messages over a simulated network with random delays, drops, partitions, restarts and
//! skewed clocks, using Skein's own total order (`ad::is_newer`), views (`routing::View`)
//! and bucketed digests (`replication::digest`). After the faults stop and the network
//! heals, anti-entropy must bring every director to the same view: the newest version of
//! every ad that any director ever accepted. A property test runs many seeds; a failing
//! seed replays exactly.
//!
//! It models the protocol, not the HTTP transport, as `docs/replication.md` describes it:
//! forwarding as the repair path (only newer ads, to every other director but the one it
//! came from, never to oneself; each peer's outbox is Skein's own coalescing
//! [`PeerQueue`], which holds an ad `forward_delay` and then offers its version; only
//! what the peer answers it lacks is sent in full; a failed offer or send goes back in
//! the queue), digest exchange, and catch-up on restart. A stopped director loses its
//! queues, as a real one does (they live in memory).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skein::ad::StoredAd;
use skein::ad::{AdKey, AdVersion, ServerKind, SignedAd, is_newer};
use skein::fixtures;
use skein::replication::{PeerQueue, digest};
use skein::routing::View;
use tokio::time::Instant;

const DIRECTORS: usize = 25;
const SERVERS: usize = 40;
const STEPS: usize = 400;
/// Far beyond the simulated time: expiry is not what this simulation is about.
const LIFETIME_MS: u64 = 365 * 24 * 3600 * 1000;
const EPOCH: u64 = 1_700_000_000_000;
/// `peers.forward_delay`'s default, ms.
const FORWARD_DELAY_MS: u64 = 2_000;
/// A worker's batch limits (`src/replication/forward.rs`).
const MAX_WANTED: usize = 256;
const MAX_OFFERS: usize = 2_048;

/// One simulated director.
struct Director {
    view: View,
    /// Ahead (+) or behind (-) the true time, ms.
    skew: i64,
    up: bool,
    /// Directors in the same group can talk.
    group: u8,
    /// One outbox per other director (its own entry unused: a director never forwards
    /// to itself).
    queues: Vec<PeerQueue>,
    /// Bumped when the director stops: a send from an earlier life that fails has no
    /// queue to go back to.
    life: u32,
}

fn fresh_queues() -> Vec<PeerQueue> {
    (0..DIRECTORS).map(|_| PeerQueue::default()).collect()
}

/// A simulated server: its current instance and generation.
struct Server {
    started_at: u64,
    instance: u64,
    generation: u64,
    group: u8,
}

/// A message in flight: an ad forwarded in full from one director to another.
struct Message {
    from: usize,
    /// The sender's life when it sent.
    life: u32,
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
    /// Ads sent in full between directors.
    forwards: u64,
    /// Offer entries sent, and how many the peer answered it lacked.
    offered: u64,
    wanted: u64,
    /// Where simulated time 0 (`EPOCH`) sits on the queues' clock: an hour ahead of the
    /// real clock, so an ad the queue marks due "now" (by the real clock) is always due in
    /// the simulation, whatever the speed of the machine running it.
    clock_base: Instant,
    /// Delivery failures (not partitions) per 1,000 messages.
    loss_per_mille: u32,
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
                queues: fresh_queues(),
                life: 0,
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
            offered: 0,
            wanted: 0,
            clock_base: Instant::now() + std::time::Duration::from_secs(3600),
            loss_per_mille: 30,
        }
    }

    /// Simulated time on the queues' clock.
    fn instant(&self, at: u64) -> Instant {
        self.clock_base + std::time::Duration::from_millis(at - EPOCH)
    }

    fn can_talk(&self, a: usize, b: usize) -> bool {
        self.directors[a].up
            && self.directors[b].up
            && self.directors[a].group == self.directors[b].group
    }

    /// A director receives `ad` (from a server, or from director `from`): stores it if
    /// newer and queues it, to offer after the delay, for every other director but
    /// `from`, never itself (`Replicator::offer`).
    fn receive(&mut self, at: usize, ad: Arc<StoredAd>, from: Option<usize>) {
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
        let due = self.instant(self.now + FORWARD_DELAY_MS);
        for (to, queue) in self.directors[at].queues.iter().enumerate() {
            if to != at && Some(to) != from {
                queue.push_offer(ad.clone(), due);
            }
        }
    }

    /// Director `at`'s forward workers run once, as `forward.rs` does: for each peer,
    /// the wanted ads due go in full (onto the network), else the ads due to offer are
    /// offered; the peer answers which it lacks, and those go back as wanted. An offer to
    /// a peer it cannot reach goes back to be offered again.
    fn run_workers(&mut self, at: usize) {
        if !self.directors[at].up {
            return;
        }
        let now = self.instant(self.now);
        for to in 0..DIRECTORS {
            if to == at {
                continue;
            }
            let due = self.directors[at].queues[to].take_due(now, MAX_WANTED, MAX_OFFERS);
            // In key order: the queue's order is a per-process hash order.
            let (mut wanted, mut to_offer) = (due.wanted, due.to_offer);
            wanted.sort_by_key(|a| a.ad.key());
            to_offer.sort_by_key(|a| a.ad.key());
            for ad in wanted {
                self.network.push_back(Message {
                    from: at,
                    life: self.directors[at].life,
                    to,
                    ad,
                });
                self.forwards += 1;
            }
            if to_offer.is_empty() {
                continue;
            }
            if !self.can_talk(at, to) || self.lost() {
                self.directors[at].queues[to].put_back_offers(to_offer);
                continue;
            }
            // The peer's answer (`http::peers::offer`): the entries newer than it holds.
            let peer = &self.directors[to].view;
            let lacking: Vec<Arc<StoredAd>> = to_offer
                .iter()
                .filter(|a| {
                    is_newer(
                        a.ad.version(),
                        peer.get(&a.ad.key()).map(|h| h.ad.version()),
                    )
                })
                .cloned()
                .collect();
            self.offered += to_offer.len() as u64;
            self.wanted += lacking.len() as u64;
            self.directors[at].queues[to].put_back(lacking);
        }
    }

    /// Director `d` stops: its view is durable, its queues are not.
    fn stop(&mut self, d: usize) {
        let director = &mut self.directors[d];
        director.up = false;
        director.life += 1;
        director.queues = fresh_queues();
    }

    /// True for a request that fails in transit (a reset connection, a timeout).
    fn lost(&mut self) -> bool {
        self.rng.gen_range(0..1000) < self.loss_per_mille
    }

    /// A server sends a new ad to every director in its group, as services do.
    fn advertise(&mut self, index: usize) {
        let group = self.servers[index].group;
        let reached: Vec<usize> = (0..DIRECTORS)
            .filter(|&at| self.directors[at].group == group)
            .collect();
        self.advertise_to(index, &reached);
    }

    /// A server sends a new ad to the directors `reached` only.
    fn advertise_to(&mut self, index: usize, reached: &[usize]) {
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
        for &at in reached {
            let received = self.now.saturating_add_signed(self.directors[at].skew);
            let signed = SignedAd {
                ad: ad.clone(),
                signature: String::new(),
                attestation: None,
            };
            self.receive(
                at,
                Arc::new(StoredAd::new(signed, received, LIFETIME_MS)),
                None,
            );
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

    /// Delivers one message; across a partition, to a stopped director, or lost on the
    /// way, the send fails and the ad goes back in the sender's queue (if the sender
    /// still runs the life that sent it).
    fn deliver_one(&mut self) {
        if self.network.is_empty() {
            return;
        }
        // Random order: a message may overtake others (a delayed copy arrives late).
        let pick = self.rng.gen_range(0..self.network.len().min(64));
        let Some(message) = self.network.remove(pick) else {
            return;
        };
        if self.can_talk(message.from, message.to) && !self.lost() {
            self.receive(message.to, message.ad, Some(message.from));
        } else {
            let sender = &self.directors[message.from];
            if sender.up && sender.life == message.life {
                sender.queues[message.to].put_back(vec![message.ad]);
            }
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
                self.receive(a, ad.clone(), Some(b));
            }
        }
        for entry in sorted(digest::entries(&va, self.now, Some(&differ))) {
            if is_newer(entry.version, vb.get(&entry.key).map(|x| x.ad.version()))
                && let Some(ad) = va.get(&entry.key)
            {
                self.receive(b, ad.clone(), Some(a));
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
                    self.stop(d);
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
            51..=62 => {
                let d = self.rng.gen_range(0..DIRECTORS);
                self.run_workers(d);
            }
            _ => {
                for _ in 0..8 {
                    self.deliver_one();
                }
            }
        }
    }

    /// Faults stop: every director up, one group, nothing lost on the way; then rounds
    /// (each a forward delay long) of forward workers and anti-entropy (each director
    /// with one random peer, as every `poll_interval`) until all agree.
    fn heal_and_settle(&mut self) -> usize {
        // What is in flight arrives, or fails under the faults still in force and goes
        // back to its sender's queue; what a stopped director's queues held is gone, and
        // only anti-entropy can repair that.
        while !self.network.is_empty() {
            self.deliver_one();
        }
        for d in &mut self.directors {
            d.up = true;
            d.group = 0;
        }
        self.loss_per_mille = 0;
        for round in 1..=64 {
            if self.converged() {
                return round - 1;
            }
            self.forward_round();
            for a in 0..DIRECTORS {
                let b = self.rng.gen_range(0..DIRECTORS);
                self.sync(a, b);
            }
        }
        64
    }

    /// One forward delay passes; every director's workers run until they find nothing
    /// due and nothing is in flight.
    fn forward_round(&mut self) {
        self.now += FORWARD_DELAY_MS;
        loop {
            let before = (self.forwards, self.offered);
            for d in 0..DIRECTORS {
                self.run_workers(d);
            }
            if self.network.is_empty() && (self.forwards, self.offered) == before {
                break;
            }
            while !self.network.is_empty() {
                self.deliver_one();
            }
        }
    }

    /// Ads waiting in any queue.
    fn backlog(&self) -> usize {
        self.directors
            .iter()
            .flat_map(|d| &d.queues)
            .map(PeerQueue::len)
            .sum()
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
        // Nothing waits for ever: what the queues still hold (offers every peer now
        // answers it holds, sends put back after a failure) drains, and the views stay.
        world.forward_round();
        world.forward_round();
        prop_assert_eq!(world.backlog(), 0, "seed {}: queues never drained", seed);
        prop_assert!(world.converged());
    }
}

/// A world with no fault at all: every director up in one group, nothing lost.
fn calm_world(seed: u64) -> World {
    let mut world = World::new(seed);
    world.loss_per_mille = 0;
    world
}

#[test]
fn services_that_reach_every_director_cause_offers_and_no_full_forward() {
    let mut world = calm_world(11);
    for _ in 0..STEPS {
        world.now += world.rng.gen_range(1..2_000);
        if world.rng.gen_bool(0.6) {
            let s = world.rng.gen_range(0..SERVERS);
            world.advertise(s);
        } else {
            let d = world.rng.gen_range(0..DIRECTORS);
            world.run_workers(d);
        }
    }
    world.forward_round();
    assert!(world.converged());
    assert_eq!(world.backlog(), 0);
    // Every peer already held what it was offered: the offers were the whole cost.
    assert!(world.offered > 0);
    assert_eq!((world.wanted, world.forwards), (0, 0));
}

#[test]
fn anti_entropy_repairs_what_a_stopped_director_had_not_forwarded() {
    let mut world = calm_world(13);
    world.advertise_to(0, &[3]);
    // Director 3 stops before its worker offers the ad (its queues are lost) and comes
    // back with the ad in its store: forwarding alone never spreads it.
    world.stop(3);
    world.directors[3].up = true;
    world.forward_round();
    world.forward_round();
    assert!(!world.converged());
    assert_eq!(world.forwards, 0);
    let rounds = world.heal_and_settle();
    assert!(world.converged(), "not converged after {rounds} rounds");
    assert!(rounds >= 1);
}

#[test]
fn an_ad_given_to_one_director_reaches_all_by_forwarding_alone() {
    let mut world = calm_world(12);
    world.advertise_to(0, &[3]);
    // No anti-entropy: only the forward workers.
    world.forward_round();
    assert!(world.converged(), "forwarding alone did not spread the ad");
    // Director 3 offered it to each peer, each lacked it and got it in full; their own
    // offers, a delay later, were all answered "held".
    assert_eq!(world.forwards, DIRECTORS as u64 - 1);
    world.forward_round();
    assert_eq!(world.forwards, DIRECTORS as u64 - 1);
    assert_eq!(world.backlog(), 0);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut world = World::new(seed);
        for _ in 0..STEPS {
            world.step();
        }
        let rounds = world.heal_and_settle();
        (
            (world.forwards, world.offered, world.wanted),
            rounds,
            world.versions(0),
        )
    };
    assert_eq!(run(7), run(7));
    let ((forwards, offered, wanted), rounds, versions) = run(7);
    println!(
        "25 directors, {SERVERS} servers, {STEPS} steps: {offered} offer entries ({wanted} wanted), {forwards} full forwards, {} ads, converged after {rounds} rounds",
        versions.len()
    );
}
