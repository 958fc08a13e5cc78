//! Rendezvous (highest-random-weight) ranking: one object keeps going to the same
//! server while that server is up, and only its share moves when the set changes.

/// The FNV-1a offset basis: the seed of [`stable_hash`] for a fresh hash.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes` from `seed`, then a splitmix64 finaliser to spread the bits.
/// Stable across builds and machines, so every director computes the same value.
pub fn stable_hash(seed: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    finish(fnv(seed, bytes))
}

/// FNV-1a over `bytes` from `state`.
fn fnv(state: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash = state;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The splitmix64 finaliser.
fn finish(mut hash: u64) -> u64 {
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// A stable 64-bit hash of (server, object): every director ranks alike.
pub fn score(server: &str, object: &str) -> u64 {
    score_from(name_seed(server), object)
}

/// What [`score`] computes of `server` before it reads the object: worked out once per
/// server (when the view indexes it) rather than once per redirect.
pub fn name_seed(server: &str) -> u64 {
    fnv(FNV_OFFSET, server.bytes().chain([0xff]))
}

/// [`score`] of the server whose [`name_seed`] is `seed`.
pub fn score_from(seed: u64, object: &str) -> u64 {
    finish(fnv(seed, object.bytes()))
}

/// Sorts `items` best first for `object`, by each item's server name.
pub fn rank_by<T>(items: &mut [T], object: &str, name: impl Fn(&T) -> &str) {
    // Best first: highest score, ties by name (descending). Lists are short, so scores are
    // recomputed per comparison rather than cached with an owned copy of every name.
    items.sort_by(|a, b| {
        let (a, b) = (name(a), name(b));
        (score(b, object), b).cmp(&(score(a, object), a))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_the_same_on_every_build() {
        // Every director must rank alike, across versions too: a pinned value.
        assert_eq!(score("cache-a", "/ns/object-1"), 9568896273400670462);
    }

    #[test]
    fn ranking_is_deterministic_and_spreads() {
        let servers = ["cache-a", "cache-b", "cache-c", "cache-d"];
        let mut firsts = std::collections::HashMap::new();
        for i in 0..4000 {
            let object = format!("/ns/object-{i}");
            let mut a = servers.to_vec();
            let mut b = servers.to_vec();
            b.reverse();
            rank_by(&mut a, &object, |s| s);
            rank_by(&mut b, &object, |s| s);
            assert_eq!(a, b, "order must not depend on input order");
            *firsts.entry(a[0]).or_insert(0) += 1;
        }
        for server in servers {
            let share = firsts[server];
            assert!((700..1300).contains(&share), "{server} got {share} of 4000");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_objects() {
        let all = ["a", "b", "c"];
        for i in 0..500 {
            let object = format!("/o/{i}");
            let mut full = all.to_vec();
            rank_by(&mut full, &object, |s| s);
            let mut without_c = vec!["a", "b"];
            rank_by(&mut without_c, &object, |s| s);
            if full[0] != "c" {
                assert_eq!(full[0], without_c[0]);
            }
        }
    }
}
