//! A per-thread memo of where client addresses are: a client asks for many objects, and
//! each redirect would otherwise walk the overrides and the GeoIP database again for the
//! same address.
//!
//! Each connection thread keeps a small direct-mapped table of its own (no lock, nothing
//! shared). An entry holds the [`Geo`](super::Geo) generation it was found under: a
//! reload (a new database or new overrides) starts a new generation, so nothing found
//! before it is used after it.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Coord, LocatedBy};

/// Entries per thread (about 48 KiB).
const SLOTS: usize = 1024;

/// A location lookup's result.
pub(super) type Found = (Option<Coord>, LocatedBy);

#[derive(Clone, Copy)]
struct Slot {
    generation: u64,
    ip: IpAddr,
    found: Found,
}

thread_local! {
    static MEMO: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// A generation no other locator in this process has had: two directors in one process
/// (tests, benchmarks) never read each other's entries.
pub(super) fn new_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What `look_up` finds for `ip` under `generation`, from this thread's memo when it
/// holds that address for that generation.
pub(super) fn remembered(generation: u64, ip: IpAddr, look_up: impl FnOnce() -> Found) -> Found {
    let slot = rustc_hash::FxBuildHasher.hash_one(ip) as usize % SLOTS;
    let hit = MEMO.with_borrow(|memo| {
        memo.get(slot)
            .copied()
            .flatten()
            .filter(|s| s.generation == generation && s.ip == ip)
            .map(|s| s.found)
    });
    if let Some(found) = hit {
        return found;
    }
    let found = look_up();
    MEMO.with_borrow_mut(|memo| {
        if memo.is_empty() {
            memo.resize(SLOTS, None);
        }
        memo[slot] = Some(Slot {
            generation,
            ip,
            found,
        });
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_looked_up_once_per_generation() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (first, second) = (new_generation(), new_generation());
        let lookups = std::cell::Cell::new(0);
        let look = |generation| {
            remembered(generation, ip, || {
                lookups.set(lookups.get() + 1);
                (Coord::new(1.0, 2.0), LocatedBy::Database)
            })
        };
        assert_eq!(look(first).1, LocatedBy::Database);
        look(first);
        assert_eq!(lookups.get(), 1, "remembered within a generation");
        look(second);
        assert_eq!(lookups.get(), 2, "a new generation looks again");
    }

    #[test]
    fn addresses_sharing_a_slot_each_get_their_own_answer() {
        let generation = new_generation();
        // More addresses than slots: some share one, and each still gets its own answer.
        for round in 0..2 {
            for i in 0..(2 * SLOTS as u32) {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                let lat = f64::from(i % 90);
                let found = remembered(generation, ip, || {
                    (Coord::new(lat, 0.0), LocatedBy::Database)
                });
                assert_eq!(found.0, Coord::new(lat, 0.0), "round {round}, {ip}");
            }
        }
    }
}
