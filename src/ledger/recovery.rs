//! After store damage: not ready until a peer refills the store; degraded if none can.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::store::Damage;

/// How complete the director's ads are after its store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// The store opened sound, or was refilled from a peer since.
    Sound,
    /// The store was damaged; a catch-up with a peer is under way.
    Refilling,
    /// The store was damaged and no peer could refill it: serving what survived.
    Degraded,
}

const SOUND: u8 = 0;
const REFILLING: u8 = 1;
const DEGRADED: u8 = 2;

/// The store's damage, if any, and whether a peer has refilled it since.
#[derive(Debug, Default)]
pub struct Recovery {
    damage: OnceLock<Damage>,
    phase: AtomicU8,
}

impl Recovery {
    /// Records the damage found at open: refilling if a peer is known, else degraded.
    pub fn damaged(&self, damage: Damage, peers_known: bool) {
        let _ = self.damage.set(damage);
        let phase = if peers_known { REFILLING } else { DEGRADED };
        self.phase.store(phase, Ordering::SeqCst);
        if !peers_known {
            tracing::error!(
                "store damaged and no peer director is known: serving the ads that survived (degraded)"
            );
        }
    }

    /// The current state.
    pub fn state(&self) -> StoreState {
        match self.phase.load(Ordering::SeqCst) {
            REFILLING => StoreState::Refilling,
            DEGRADED => StoreState::Degraded,
            _ => StoreState::Sound,
        }
    }

    /// What was found at open, if the store was damaged.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.get()
    }

    /// A catch-up with `peer` completed: the store holds everything that peer has. True
    /// when that ends a recovery (the store's record of the damage can go).
    pub fn sync_succeeded(&self, peer: &str) -> bool {
        let ended = self.phase.swap(SOUND, Ordering::SeqCst) != SOUND;
        if ended {
            tracing::warn!(peer = %peer, "store refilled from a peer after damage; ready");
        }
        ended
    }

    /// Every ad held before the damage has expired or been sent again since
    /// (`ads.max_lifetime` has passed): the servers themselves have refilled the store.
    /// True when that ends a recovery.
    pub fn renewed(&self) -> bool {
        let ended = self.phase.swap(SOUND, Ordering::SeqCst) != SOUND;
        if ended {
            tracing::warn!(
                "every server has advertised again since the store's damage (ads.max_lifetime has passed); ready"
            );
        }
        ended
    }

    /// A catch-up with `peer` failed: while no peer has refilled the store, it is degraded.
    pub fn sync_failed(&self, peer: &str) {
        if self
            .phase
            .compare_exchange(REFILLING, DEGRADED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            tracing::error!(peer = %peer, "store damaged and the peer cannot refill it: serving the ads that survived (degraded)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn damage() -> Damage {
        Damage {
            what: "db truncated".into(),
            moved_to: "/x.corrupt-1".into(),
            survivors: 3,
        }
    }

    #[test]
    fn refilling_degrades_on_failure_and_heals_on_success() {
        let r = Recovery::default();
        assert_eq!(r.state(), StoreState::Sound);
        r.damaged(damage(), true);
        assert_eq!(r.state(), StoreState::Refilling);
        r.sync_failed("http://p");
        assert_eq!(r.state(), StoreState::Degraded);
        r.sync_succeeded("http://p");
        assert_eq!(r.state(), StoreState::Sound);
        r.sync_failed("http://p");
        assert_eq!(
            r.state(),
            StoreState::Sound,
            "a later failure is not damage"
        );
        assert_eq!(r.damage().map(|d| d.survivors), Some(3));
    }

    #[test]
    fn no_peer_means_degraded_at_once() {
        let r = Recovery::default();
        r.damaged(damage(), false);
        assert_eq!(r.state(), StoreState::Degraded);
    }

    #[test]
    fn a_recovery_ends_once_by_a_refill_or_by_renewal() {
        let r = Recovery::default();
        assert!(!r.renewed(), "no recovery to end");
        r.damaged(damage(), false);
        assert!(r.renewed());
        assert_eq!(r.state(), StoreState::Sound);
        assert!(!r.renewed() && !r.sync_succeeded("http://p"), "ended once");
        let r = Recovery::default();
        r.damaged(damage(), true);
        assert!(r.sync_succeeded("http://p"));
        assert!(!r.renewed(), "already ended by the refill");
    }
}
