//! Spreading connections evenly over the connection threads: a thread that accepts a
//! connection while it serves more than the least-loaded thread hands it over.
//!
//! Every connection thread accepts from the same socket, and whichever is awake first
//! takes what arrives: a burst of new connections (a client pool opening, a load
//! balancer reconnecting) could land mostly on one thread, which then served most of the
//! redirects on one core while the other cores idled (seen: 70% against 30% of 64
//! connections' work on two threads). A connection stays on the thread that serves it,
//! so the place is chosen once, at accept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// A thread keeps a connection it accepted while it serves at most this many more
/// connections than the least-loaded thread (so two threads' counts swapping places one
/// at a time never move a connection).
const SLACK: usize = 1;

/// A connection handed to another thread, not yet registered with any runtime, counted
/// against that thread.
pub(super) type Handed = (std::net::TcpStream, SocketAddr, Served);

/// The live connection count of every thread, and where to hand each one a connection.
pub(super) struct Spread {
    live: Vec<AtomicUsize>,
    /// Threads that stopped taking connections (or never started): never chosen.
    gone: Vec<AtomicBool>,
    mailboxes: Vec<mpsc::UnboundedSender<Handed>>,
}

impl Spread {
    /// A spread over `threads` threads (at least one), with each thread's mailbox.
    pub(super) fn new(threads: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        let (mailboxes, receivers) = (0..threads.max(1))
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let live = (0..threads.max(1)).map(|_| AtomicUsize::new(0)).collect();
        let gone = (0..threads.max(1))
            .map(|_| AtomicBool::new(false))
            .collect();
        let spread = Self {
            live,
            gone,
            mailboxes,
        };
        (Arc::new(spread), receivers)
    }

    /// Where a connection accepted by thread `me` is served: `me`, unless another thread
    /// serves more than [`SLACK`] fewer connections (then the least-loaded one). The
    /// chosen thread's count includes the connection from now on, until its
    /// [`Served`] is dropped.
    pub(super) fn place(self: &Arc<Self>, me: usize) -> Served {
        let mine = self.live[me].load(Ordering::Relaxed);
        let least = self
            .live
            .iter()
            .enumerate()
            .filter(|(thread, _)| !self.gone[*thread].load(Ordering::Relaxed))
            .map(|(thread, n)| (thread, n.load(Ordering::Relaxed)))
            .min_by_key(|&(_, n)| n);
        let thread = match least {
            Some((least, fewest)) if mine > fewest + SLACK => least,
            _ => me,
        };
        self.count(thread)
    }

    /// Counts one more connection against `thread`.
    fn count(self: &Arc<Self>, thread: usize) -> Served {
        self.live[thread].fetch_add(1, Ordering::Relaxed);
        Served {
            spread: Arc::clone(self),
            thread,
        }
    }

    /// Hands `connection` to the thread its [`Served`] names. If that thread no longer
    /// takes connections, it is never chosen again, and the connection comes back,
    /// counted against `me`, for the caller to serve.
    pub(super) fn hand_over(self: &Arc<Self>, connection: Handed, me: usize) -> Result<(), Handed> {
        let thread = connection.2.thread;
        self.mailboxes[thread].send(connection).map_err(|refused| {
            self.gone[thread].store(true, Ordering::Relaxed);
            let (stream, peer, _elsewhere) = refused.0;
            (stream, peer, self.count(me))
        })
    }
}

/// One connection counted against the thread that serves it, until dropped.
pub(super) struct Served {
    spread: Arc<Spread>,
    thread: usize,
}

impl Served {
    /// The thread chosen to serve the connection.
    pub(super) fn thread(&self) -> usize {
        self.thread
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.spread.live[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_accepted_by_one_thread_is_spread_evenly() {
        let (spread, _mailboxes) = Spread::new(4);
        let served: Vec<Served> = (0..64).map(|_| spread.place(0)).collect();
        let mut per_thread = [0usize; 4];
        for s in &served {
            per_thread[s.thread()] += 1;
        }
        assert!(
            per_thread.iter().all(|&n| (15..=17).contains(&n)),
            "{per_thread:?}"
        );
        drop(served);
        assert!(spread.live.iter().all(|n| n.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn a_thread_keeps_what_it_accepts_while_it_is_not_ahead() {
        let (spread, _mailboxes) = Spread::new(2);
        let first = spread.place(1);
        assert_eq!(first.thread(), 1);
        // One ahead is within the slack: kept.
        let second = spread.place(1);
        assert_eq!(second.thread(), 1);
        // Two ahead is not: the next goes to thread 0.
        let third = spread.place(1);
        assert_eq!(third.thread(), 0);
        drop((first, second, third));
        assert!(spread.live.iter().all(|n| n.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn a_thread_that_takes_no_more_connections_gets_none_and_gives_its_one_back() {
        let (spread, mut mailboxes) = Spread::new(2);
        drop(mailboxes.remove(0));
        let kept: Vec<Served> = (0..2).map(|_| spread.place(1)).collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let to_zero = spread.place(1);
        assert_eq!(to_zero.thread(), 0);
        let (_, _, back) = spread
            .hand_over((stream, addr, to_zero), 1)
            .expect_err("thread 0 is gone");
        assert_eq!(back.thread(), 1);
        // Thread 0 is never chosen again, however far ahead thread 1 gets.
        assert!((0..5).all(|_| spread.place(1).thread() == 1));
        drop((kept, back));
    }

    #[test]
    fn one_thread_keeps_everything() {
        let (spread, _mailboxes) = Spread::new(1);
        let served: Vec<Served> = (0..10).map(|_| spread.place(0)).collect();
        assert!(served.iter().all(|s| s.thread() == 0));
    }
}
