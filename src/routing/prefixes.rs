//! The view's prefix index: namespace prefix -> the servers advertising it, as a fixed
//! number of copy-on-write hash maps (shards).
//!
//! Every redirect looks its path's prefix up here. A persistent hash trie (what the view
//! used before) walks three or four nodes for 10,000 prefixes, each a likely cache miss
//! under load; a shard is one flat hash table, found by index. Changing the view copies
//! only the shards it touches (about 1/256 of the prefixes each), once per view copy:
//! a batch of ads applied to one copy pays for each shard at most once.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

/// Shards in an index.
const SHARDS: usize = 256;

/// One shard. Hashed with FxHash: the keys are namespaces that trusted servers signed, so
/// a client's path can probe the index but never shape it.
type Shard<V> = HashMap<Arc<str>, V, FxBuildHasher>;

/// Prefix -> `V`, cloned in O(1) and changed shard by shard.
#[derive(Debug, Clone)]
pub struct PrefixIndex<V> {
    shards: Arc<Vec<Arc<Shard<V>>>>,
}

impl<V> Default for PrefixIndex<V> {
    fn default() -> Self {
        Self {
            shards: Arc::new((0..SHARDS).map(|_| Arc::default()).collect()),
        }
    }
}

/// The shard of `prefix`: from bits of its hash that the shard's own table uses for
/// neither its bucket index (the low bits) nor its tags (the top seven).
fn shard_of(prefix: &str) -> usize {
    (FxBuildHasher.hash_one(prefix) >> 32) as usize % SHARDS
}

impl<V: Clone> PrefixIndex<V> {
    /// The stored prefix and its value.
    pub fn get_key_value(&self, prefix: &str) -> Option<(&Arc<str>, &V)> {
        self.shards[shard_of(prefix)].get_key_value(prefix)
    }

    /// The value of `prefix`, to change in place (its shard is copied first if another
    /// index shares it).
    pub fn get_mut(&mut self, prefix: &str) -> Option<&mut V> {
        let at = shard_of(prefix);
        if !self.shards[at].contains_key(prefix) {
            return None;
        }
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[at]).get_mut(prefix)
    }

    /// Sets the value of `prefix`.
    pub fn insert(&mut self, prefix: Arc<str>, value: V) {
        let at = shard_of(&prefix);
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[at]).insert(prefix, value);
    }

    /// Removes `prefix`.
    pub fn remove(&mut self, prefix: &str) {
        let at = shard_of(prefix);
        if self.shards[at].contains_key(prefix) {
            Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[at]).remove(prefix);
        }
    }

    /// Every prefix and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_what_it_saw() {
        let mut index: PrefixIndex<u32> = PrefixIndex::default();
        for i in 0..1_000u32 {
            index.insert(Arc::from(format!("/ns/{i}")), i);
        }
        let before = index.clone();
        *index.get_mut("/ns/7").unwrap() = 70;
        index.remove("/ns/8");
        index.insert(Arc::from("/new"), 1);
        assert_eq!(index.get_key_value("/ns/7").map(|(_, v)| *v), Some(70));
        assert_eq!(index.get_key_value("/ns/8"), None);
        assert_eq!(before.get_key_value("/ns/7").map(|(_, v)| *v), Some(7));
        assert_eq!(before.get_key_value("/ns/8").map(|(_, v)| *v), Some(8));
        assert_eq!(before.get_key_value("/new"), None);
        assert!(index.get_mut("/absent").is_none());
        index.remove("/absent");
        assert_eq!(index.iter().count(), 1_000);
        assert_eq!(before.iter().count(), 1_000);
        let (key, value) = index.get_key_value("/ns/999").unwrap();
        assert_eq!((&**key, *value), ("/ns/999", 999));
    }

    #[test]
    fn prefixes_spread_over_the_shards() {
        let mut used = vec![0usize; SHARDS];
        for i in 0..10_000 {
            used[shard_of(&format!("/vo{}/ns{i}", i % 7))] += 1;
        }
        let (least, most) = (used.iter().min(), used.iter().max());
        assert!(
            least >= Some(&15) && most <= Some(&80),
            "{least:?}..{most:?}"
        );
    }
}
