//! The total order of ads: the one rule every director applies to decide "newer".
//!
//! For two ads of the same server (same kind and name):
//! 1. the later process start (`instance_id.started_at`) is newer: a restarted process
//!    supersedes its previous life; equal start times are broken by the instance UUID so
//!    that the order is total;
//! 2. within one instance, the higher `generation` is newer;
//! 3. the same instance and generation is *the same ad*: never stored or forwarded again,
//!    which is what makes forwarding loops impossible.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::UnixMillis;

/// An ad's position in the total order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdVersion {
    /// Process start, Unix milliseconds.
    pub started_at: UnixMillis,
    /// Process UUID (tie-break for equal start times).
    pub uuid: Uuid,
    /// Per-process counter.
    pub generation: u64,
}

impl Ord for AdVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.started_at
            .cmp(&other.started_at)
            .then_with(|| self.uuid.as_bytes().cmp(other.uuid.as_bytes()))
            .then_with(|| self.generation.cmp(&other.generation))
    }
}

impl PartialOrd for AdVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// True if `candidate` should replace `held` (strictly newer). `None` held: always.
pub fn is_newer(candidate: AdVersion, held: Option<AdVersion>) -> bool {
    held.is_none_or(|held| candidate > held)
}

/// The version a director holds after seeing both: the newer one.
pub fn merge(a: AdVersion, b: AdVersion) -> AdVersion {
    a.max(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = AdVersion> {
        // Small ranges so that ties on each component are common.
        (0u64..4, 0u8..3, 0u64..4).prop_map(|(started_at, u, generation)| AdVersion {
            started_at,
            uuid: Uuid::from_bytes([u; 16]),
            generation,
        })
    }

    proptest! {
        #[test]
        fn antisymmetric(a in version(), b in version()) {
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a.cmp(&b) == Ordering::Equal { prop_assert_eq!(a, b); }
        }

        #[test]
        fn transitive(a in version(), b in version(), c in version()) {
            if a <= b && b <= c { prop_assert!(a <= c); }
            if a < b && b < c { prop_assert!(a < c); }
        }

        #[test]
        fn merge_idempotent_commutative_associative(a in version(), b in version(), c in version()) {
            prop_assert_eq!(merge(a, a), a);
            prop_assert_eq!(merge(a, b), merge(b, a));
            prop_assert_eq!(merge(merge(a, b), c), merge(a, merge(b, c)));
        }

        #[test]
        fn same_ad_is_never_newer(a in version()) {
            prop_assert!(!is_newer(a, Some(a)));
            prop_assert!(is_newer(a, None));
        }

        #[test]
        fn exactly_one_direction_is_newer(a in version(), b in version()) {
            let forward = is_newer(a, Some(b));
            let backward = is_newer(b, Some(a));
            prop_assert!(!(forward && backward));
            prop_assert_eq!(forward || backward, a != b);
        }
    }

    #[test]
    fn later_start_beats_any_generation() {
        let uuid = Uuid::nil();
        let old = AdVersion {
            started_at: 10,
            uuid,
            generation: 1_000_000,
        };
        let restarted = AdVersion {
            started_at: 11,
            uuid,
            generation: 0,
        };
        assert!(is_newer(restarted, Some(old)));
        assert!(!is_newer(old, Some(restarted)));
    }

    #[test]
    fn higher_generation_wins_within_an_instance() {
        let uuid = Uuid::from_bytes([7; 16]);
        let a = AdVersion {
            started_at: 5,
            uuid,
            generation: 1,
        };
        let b = AdVersion {
            started_at: 5,
            uuid,
            generation: 2,
        };
        assert!(is_newer(b, Some(a)));
    }
}
