//! Single flight: concurrent callers asking for the same key share one future's result.
//!
//! The map holds a flight only while some caller awaits it: the last caller to leave
//! (its answer in hand, or dropped half-way, as a request whose client went away) removes
//! it, so the map never holds more flights than there are callers in the air. A caller
//! that arrives after a flight landed starts a new one.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

/// Flights in the air, by key.
pub struct Flights<K, V: Clone> {
    /// Held only to look up, insert or remove a flight: never across an `.await`.
    in_air: Mutex<HashMap<K, Flight<V>>>,
}

impl<K, V: Clone> Default for Flights<K, V> {
    fn default() -> Self {
        Self {
            in_air: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V: Clone> std::fmt::Debug for Flights<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("in_air", &self.in_air.lock().map_or(0, |m| m.len()))
            .finish()
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone + Send + Sync + 'static,
{
    /// The result of the flight for `key`: the one in the air, else a new one, `start()`.
    pub async fn run<F>(&self, key: K, start: impl FnOnce() -> F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut in_air = self.lock();
            match in_air.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let flight = start().boxed().shared();
                    in_air.insert(key.clone(), flight.clone());
                    flight
                }
            }
        };
        let mut aboard = Aboard {
            flights: self,
            key,
            flight: None,
        };
        // The seat holds the caller's one handle, so leaving (here or on drop) sees
        // exactly who else still waits.
        let value = aboard.flight.insert(flight).await;
        drop(aboard);
        value
    }

    /// Flights in the air.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no flight is in the air.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Callers awaiting the flight for `key` (0: none in the air).
    pub fn aboard(&self, key: &K) -> usize {
        self.lock()
            .get(key)
            .and_then(|f| f.strong_count())
            .map_or(0, |n| n.saturating_sub(1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<V>>> {
        self.in_air.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One caller's seat: leaving (on landing, or dropped half-way) removes the flight once
/// it has landed or nobody else awaits it.
struct Aboard<'a, K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> {
    flights: &'a Flights<K, V>,
    key: K,
    flight: Option<Flight<V>>,
}

impl<K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> Aboard<'_, K, V> {
    fn leave(&mut self) {
        if self.flight.take().is_none() {
            return;
        }
        let mut in_air = self.flights.lock();
        // Landed, or only the map's own handle is left: nobody waits for it any more.
        let done = in_air
            .get(&self.key)
            .is_some_and(|f| f.peek().is_some() || f.strong_count().is_none_or(|n| n <= 1));
        if done {
            in_air.remove(&self.key);
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> Drop for Aboard<'_, K, V> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn callers_of_one_key_share_one_run_and_the_map_empties() {
        let flights: Arc<Flights<&str, u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut callers = Vec::new();
        for _ in 0..10 {
            let (flights, runs, gate) = (flights.clone(), runs.clone(), gate.clone());
            callers.push(tokio::spawn(async move {
                flights
                    .run("k", move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        7
                    })
                    .await
            }));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while flights.aboard(&"k") < 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "callers never boarded"
            );
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
        // Landed: the next caller flies again.
        assert_eq!(flights.run("k", || async { 8 }).await, 8);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_flight_every_caller_abandoned_leaves_the_map() {
        let flights: Flights<&str, u32> = Flights::default();
        let never = flights.run("k", futures::future::pending);
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(1), never).await;
        assert!(abandoned.is_err());
        assert!(flights.is_empty(), "{flights:?}");
    }
}
