//! Catch-up and anti-entropy: compare digests with a peer, pull what it has newer,
//! queue for it what this director has newer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::ad::{AdKey, SignedAd, StoredAd, is_newer};
use crate::client::ClientError;
use crate::clock::UnixMillis;
use crate::ledger::IngestOutcome;
use crate::routing::View;
use crate::wire::{DigestAnswer, DigestEntry};

use super::digest;

use super::Replicator;

/// Fewest keys fetched per request: a page is verified in Ed25519 batches split over
/// the cores, which pay off from a few hundred signatures and keep getting cheaper per
/// signature up to a thousand or so.
const MIN_PAGE: usize = 2048;

/// Most keys fetched per request (a peer serves up to 10,000).
const MAX_PAGE: usize = 8192;

/// Keys to fetch in the next page while `held` ads are held: pages grow with the view.
/// Each page is held as one new view, which copies the parts of the view's maps it
/// touches; a page of an eighth of the view touches most of their inner nodes, so that
/// copying costs a few entries per ad instead of dozens with small pages into a large
/// view, while the first pages (a small view) still arrive soon.
fn page_size(held: usize) -> usize {
    (held / 8).clamp(MIN_PAGE, MAX_PAGE)
}

/// Differing buckets compared per step (of 256): the first pull starts after this
/// share of the peer's key list has arrived.
const BUCKET_GROUP: usize = 64;

/// Ads accepted more recently than this are not pushed by a sync: they are still in (or
/// just left) the peer's forward queue, and pushing them again would only duplicate.
const PUSH_GRACE_MS: u64 = 2_000;

/// What one sync exchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    /// Ads pulled from the peer and accepted as newer.
    pub pulled: usize,
    /// Ads queued for the peer because it lacked them.
    pub pushed: usize,
    /// Digest buckets that differed (0: in sync).
    pub differing_buckets: usize,
}

impl Replicator {
    /// One digest exchange with `peer`. The buckets that differ are compared a group at
    /// a time: while one group's missing ads are pulled, the next group's entries are
    /// fetched, so an empty director starts verifying after a quarter of the key list
    /// instead of all of it.
    pub async fn sync_with(self: &Arc<Self>, peer: &str) -> Result<SyncReport, ClientError> {
        let answer = self.client.digest_summary(peer).await?;
        if self.peers.mark_ok(peer) {
            tracing::info!(peer = %peer, "director reachable again");
        }
        let view = self.ledger.view();
        let now = self.ledger.clock().now_ms();
        let mut report = SyncReport::default();
        // Each group: its buckets (None: every ad, from a director without buckets) and
        // its entries once fetched.
        let (groups, mut entries): (Vec<Option<Vec<usize>>>, Vec<DigestEntry>) = match answer {
            DigestAnswer::Summary(summary) => {
                let mut differ: Vec<usize> =
                    digest::differing(&digest::summarise(&view, now), &summary.buckets)
                        .into_iter()
                        .collect();
                if differ.is_empty() {
                    self.peers.note_sync(peer, true);
                    return Ok(report);
                }
                differ.sort_unstable();
                report.differing_buckets = differ.len();
                let groups: Vec<_> = differ
                    .chunks(BUCKET_GROUP)
                    .map(|g| Some(g.to_vec()))
                    .collect();
                let first = self.entries_of(peer, groups[0].as_deref()).await?;
                (groups, first)
            }
            DigestAnswer::Full(entries) => {
                report.differing_buckets = digest::BUCKETS;
                (vec![None], entries)
            }
        };
        let held = held_by_group(&view, now, &groups);
        // The keys to pull flow from the comparisons into one pipeline of pages, which
        // never drains between groups: while a group's last page is held, the next
        // page (of the next group's keys) is already being fetched.
        let (wanted, wants) = mpsc::unbounded_channel::<Vec<AdKey>>();
        let compare_groups = async {
            let (mut pushed_total, mut in_sync) = (0, true);
            for (i, held) in held.iter().enumerate() {
                let (want, pushed) = self.compare(peer, &view, &entries, held);
                pushed_total += pushed;
                in_sync &= want.is_empty() && pushed == 0;
                if !want.is_empty() {
                    // The pull only ends after this sender is dropped, so it is there.
                    let _ = wanted.send(want);
                }
                if let Some(buckets) = groups.get(i + 1) {
                    entries = self.entries_of(peer, buckets.as_deref()).await?;
                }
            }
            drop(wanted);
            Ok::<_, ClientError>((pushed_total, in_sync))
        };
        let (compared, pulled) = tokio::join!(compare_groups, self.pull(peer, wants));
        let (pushed, in_sync) = compared?;
        report.pushed = pushed;
        report.pulled = pulled?;
        self.peers.note_sync(peer, in_sync);
        if report.pulled > 0 {
            // Every page's flush has started; this one returns once all are durable.
            if let Err(error) = self.ledger.store().flush().await {
                tracing::error!(peer = %peer, %error, "flushing caught-up ads failed");
            }
        }
        Ok(report)
    }

    /// The peer's digest entries of `buckets` (every entry when `None`).
    async fn entries_of(
        &self,
        peer: &str,
        buckets: Option<&[usize]>,
    ) -> Result<Vec<DigestEntry>, ClientError> {
        match buckets {
            Some(buckets) => self.client.digest_buckets(peer, buckets).await,
            None => self.client.digest(peer).await,
        }
    }

    /// Compares the peer's `theirs` (the entries of one group of buckets) with `view`:
    /// returns the keys to pull, and queues for the peer the ads of `held` (this
    /// director's settled ads in those buckets) that it lacks (how many).
    fn compare(
        &self,
        peer: &str,
        view: &View,
        theirs: &[DigestEntry],
        held: &[&Arc<StoredAd>],
    ) -> (Vec<AdKey>, usize) {
        let their_versions: HashMap<_, _> = theirs.iter().map(|e| (&e.key, e.version)).collect();
        let want: Vec<_> = theirs
            .iter()
            .filter(|e| is_newer(e.version, view.get(&e.key).map(|a| a.ad.version())))
            .map(|e| e.key.clone())
            .collect();
        let queue = self.queue_for(&crate::peers::normalize(peer));
        let mut pushed = 0;
        for ad in held {
            if is_newer(ad.ad.version(), their_versions.get(&ad.ad.key()).copied()) {
                queue.push(Arc::clone(ad));
                pushed += 1;
            }
        }
        (want, pushed)
    }

    /// Pulls the keys that arrive on `wants` from the peer in pages, pipelined (the next
    /// page is fetched while this one is verified and held), until every group has been
    /// compared and every key pulled. Returns how many were newer.
    async fn pull(
        self: &Arc<Self>,
        peer: &str,
        mut wants: mpsc::UnboundedReceiver<Vec<AdKey>>,
    ) -> Result<usize, ClientError> {
        let mut waiting = Vec::new();
        let first = page_size(self.ledger.view().len());
        let Some(keys) = next_page(&mut wants, &mut waiting, first).await else {
            return Ok(0);
        };
        let mut fetched = self.client.fetch(peer, keys).await?;
        let mut pulled = 0;
        loop {
            // The page being held counts towards the view the next one lands in.
            let size = page_size(self.ledger.view().len() + fetched.len());
            let (next, held) = tokio::join!(
                async {
                    match next_page(&mut wants, &mut waiting, size).await {
                        Some(keys) => Some(self.client.fetch(peer, keys).await),
                        None => None,
                    }
                },
                self.hold_page(std::mem::take(&mut fetched), peer)
            );
            pulled += held;
            match next {
                Some(next) => fetched = next?,
                None => return Ok(pulled),
            }
        }
    }

    /// Verifies and holds one pulled page (off the async runtime: the signatures are
    /// verified on every core, in batches), offers the newer ads to the other peers, and
    /// starts one flush for the page, which runs while the next page is checked (the sync
    /// waits for the last one). Nothing here is acknowledged to anyone, so a crash before
    /// the flush only means pulling them again. Returns how many were newer.
    async fn hold_page(self: &Arc<Self>, page: Vec<SignedAd>, peer: &str) -> usize {
        if page.is_empty() {
            return 0;
        }
        // A Pelican ad's check may need the registry's keys: fetched now, not while held.
        for ad in page.iter().filter(|ad| ad.attestation.is_some()) {
            self.ledger.prepare(ad).await;
        }
        let answers = self.accept_forwarded_many(page, Some(peer)).await;
        let mut accepted = 0;
        for answer in &answers {
            match answer {
                Ok(IngestOutcome::Accepted(_)) => accepted += 1,
                Ok(_) => {}
                Err(error) => tracing::debug!(peer = %peer, %error, "caught-up ad refused"),
            }
        }
        accepted
    }
}

/// The next page of up to `size` keys, taken from `waiting` once it holds that many or
/// every group has been compared (`wants` closed); `None` when no key is left.
async fn next_page(
    wants: &mut mpsc::UnboundedReceiver<Vec<AdKey>>,
    waiting: &mut Vec<AdKey>,
    size: usize,
) -> Option<Vec<AdKey>> {
    while waiting.len() < size {
        match wants.recv().await {
            Some(more) => waiting.extend(more),
            None => break,
        }
    }
    if waiting.is_empty() {
        return None;
    }
    let rest = waiting.split_off(size.min(waiting.len()));
    Some(std::mem::replace(waiting, rest))
}

/// This director's ads that a sync may push, one list per group of buckets (`None`: the
/// one group of every bucket), sorted into their groups in one pass over the view: live,
/// and accepted at least [`PUSH_GRACE_MS`] ago (newer ones are still in flight through
/// normal forwarding).
fn held_by_group<'v>(
    view: &'v View,
    now: UnixMillis,
    groups: &[Option<Vec<usize>>],
) -> Vec<Vec<&'v Arc<StoredAd>>> {
    let mut group_of = [None; digest::BUCKETS];
    for (i, group) in groups.iter().enumerate() {
        match group {
            Some(buckets) => buckets.iter().for_each(|&b| group_of[b] = Some(i)),
            None => group_of = [Some(i); digest::BUCKETS],
        }
    }
    let settled = now.saturating_sub(PUSH_GRACE_MS);
    let mut held = vec![Vec::new(); groups.len()];
    for ad in view
        .ads()
        .filter(|a| a.expires_at > now && a.received_at <= settled)
    {
        if let Some(i) = group_of[digest::bucket_of_parts(ad.ad.kind, &ad.ad.name)] {
            held[i].push(ad);
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages start small (the first one lands soon), grow with the view, and never ask a
    /// peer for more keys than it serves per fetch (10,000).
    #[test]
    fn pages_grow_with_the_view_within_bounds() {
        assert_eq!(page_size(0), MIN_PAGE);
        assert_eq!(page_size(16_000), MIN_PAGE);
        assert_eq!(page_size(32_000), 4_000);
        assert_eq!(page_size(1_000_000), MAX_PAGE);
        let sizes: Vec<usize> = (0..200).map(|k| page_size(k * 1_000)).collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
        const { assert!(MAX_PAGE <= 10_000) };
    }
}
