//! Values that many threads update without sharing a cache line: one copy per stripe,
//! each thread writing to its own stripe, read back by summing them all.
//!
//! Every redirect counts itself and its duration. With one atomic counter, each update
//! on one core first takes the cache line from the core that updated it last; with a
//! stripe per thread, a connection thread keeps its lines to itself.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Stripes per value: more than the connection threads of most machines; threads beyond
/// that share stripes, which stays correct (the updates are atomic), only slower.
const STRIPES: usize = 8;

/// One stripe, alone on its cache lines (128 bytes: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// `T` once per stripe.
#[derive(Debug, Default)]
pub struct Striped<T> {
    stripes: [Padded<T>; STRIPES],
}

impl<T> Striped<T> {
    /// This thread's copy.
    pub fn mine(&self) -> &T {
        &self.stripes[stripe()].0
    }

    /// Every copy, to be summed.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// This thread's stripe: threads take stripes in the order they first ask.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn updates_from_many_threads_sum_to_the_total() {
        let counter = std::sync::Arc::new(Striped::<AtomicU64>::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.mine().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: u64 = counter.all().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 12_000);
        // Twelve threads over eight stripes: more than one stripe was written.
        assert!(
            counter
                .all()
                .filter(|c| c.load(Ordering::Relaxed) > 0)
                .count()
                > 1
        );
    }
}
