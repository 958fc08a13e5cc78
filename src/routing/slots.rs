//! Server slots: a small number for each server key, the same for the life of the
//! process, so what routing reads per candidate (health, location) sits in arrays
//! indexed by it rather than in maps hashed by name.
//!
//! A slot is given when a server is first seen by a writer (the view indexing its ad, a
//! probe, the location worker), never on the redirect path: a candidate carries its
//! server's slot from the view. Slots are never reused, so a stale slot can only point at
//! its own server's entry. There is one number per key ever seen in the process: servers
//! come from signed ads of trusted servers, so the table grows with the federation, not
//! with what clients send (about 50 bytes per server).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::ad::{AdKey, ServerKind};

/// A server's slot.
pub type Slot = u32;

/// Every key given a slot, with its slot (made on first use).
type Table = Option<HashMap<(ServerKind, Box<str>), Slot>>;

static SLOTS: RwLock<Table> = RwLock::new(None);

/// The slot of the server `name` of `kind`, given now if it has none yet.
pub fn slot_of(kind: ServerKind, name: &str) -> Slot {
    let key = (kind, Box::<str>::from(name));
    if let Some(slot) = SLOTS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|slots| slots.get(&key))
    {
        return *slot;
    }
    let mut slots = SLOTS.write().unwrap_or_else(PoisonError::into_inner);
    let slots = slots.get_or_insert_with(HashMap::new);
    let next = Slot::try_from(slots.len()).unwrap_or(Slot::MAX);
    *slots.entry(key).or_insert(next)
}

/// The slot of `key` ([`slot_of`]).
pub fn slot_of_key(key: &AdKey) -> Slot {
    slot_of(key.kind, &key.name)
}

/// Slots per chunk of a [`BySlot`].
const CHUNK: usize = 64;

/// Values by slot: what a reader finds for a slot nobody set is `None`.
///
/// Two levels of copy-on-write arrays: a read is two indexed loads (it is done for every
/// candidate of every redirect), and a copy shares every chunk, so a change after a copy
/// copies one chunk of [`CHUNK`] values and the chunk pointers (at 10,000 servers, 64
/// values and 157 pointers).
#[derive(Debug, Clone)]
pub struct BySlot<T: Clone>(Vec<Arc<[Option<T>]>>);

impl<T: Clone> Default for BySlot<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Clone> BySlot<T> {
    /// The value at `slot`.
    pub fn get(&self, slot: Slot) -> Option<&T> {
        let at = slot as usize;
        self.0.get(at / CHUNK)?[at % CHUNK].as_ref()
    }

    /// Sets (or with `None` clears) the value at `slot`.
    pub fn set(&mut self, slot: Slot, value: Option<T>) {
        let at = slot as usize;
        if at / CHUNK >= self.0.len() {
            if value.is_none() {
                return;
            }
            // Slots are dense from 0, so the chunks grow at most to the servers seen.
            self.0.resize_with(at / CHUNK + 1, || {
                std::iter::repeat_n(None, CHUNK).collect()
            });
        }
        Arc::make_mut(&mut self.0[at / CHUNK])[at % CHUNK] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_slot_and_keys_differ() {
        let a = slot_of(ServerKind::Cache, "slots-test-a");
        let b = slot_of(ServerKind::Origin, "slots-test-a");
        let c = slot_of(ServerKind::Cache, "slots-test-c");
        assert_ne!(a, b, "kind is part of the key");
        assert_ne!(a, c);
        assert_eq!(slot_of(ServerKind::Cache, "slots-test-a"), a);
        let key = AdKey {
            kind: ServerKind::Origin,
            name: "slots-test-a".into(),
        };
        assert_eq!(slot_of_key(&key), b);
    }

    #[test]
    fn values_by_slot_grow_and_clear() {
        let mut values = BySlot::default();
        assert_eq!(values.get(7), None);
        values.set(7, Some("seven"));
        values.set(2, Some("two"));
        assert_eq!(
            (values.get(7), values.get(2)),
            (Some(&"seven"), Some(&"two"))
        );
        assert_eq!(values.get(3), None, "a gap reads as unset");
        values.set(7, None);
        assert_eq!(values.get(7), None);
        // A copy shares what it has not changed, and changing one leaves the other.
        let mut copy = values.clone();
        copy.set(2, Some("deux"));
        copy.set(200, Some("two hundred"));
        assert_eq!((values.get(2), copy.get(2)), (Some(&"two"), Some(&"deux")));
        assert_eq!(
            (values.get(200), copy.get(200)),
            (None, Some(&"two hundred"))
        );
        assert_eq!(copy.get(7), None);
        values.set(1_000, None);
        assert_eq!(
            values.get(1_000),
            None,
            "clearing past the end adds nothing"
        );
    }
}
