//! What routing knows of servers beyond their ads: health from probes and object presence.
//!
//! Background workers fill these in; the redirect path only reads them, lock-free. This
//! file is the seam between routing (which ranks) and the probes (which observe).

use super::Candidate;
use crate::ad::{AdKey, ServerKind};
use crate::clock::UnixMillis;

/// A server's health as the probes last saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerHealth {
    /// False while probes fail: the server is ranked after every healthy one, never removed.
    pub up: bool,
    /// Exponentially weighted success rate of recent probes, 0.0 to 1.0.
    pub ewma: f64,
    /// Round trip of the last successful probe, milliseconds (a load hint).
    pub latency_ms: f64,
    /// When the last probe finished.
    pub checked_at: UnixMillis,
}

/// Whether a server holds an object, as far as a presence check knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Presence {
    /// A check found the object there.
    Present,
    /// A check found it missing.
    Absent,
    /// Not checked (or the check failed).
    #[default]
    Unknown,
}

/// What the signals say of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    /// Its last known health (`None`: never probed).
    pub health: Option<ServerHealth>,
    /// Whether it holds the object asked about (`Unknown` when not asked).
    pub presence: Presence,
}

/// The read side of the signals. Implementations answer from memory: no I/O, no waiting.
pub trait Signals: Send + Sync {
    /// The server's last known health; `None` if it was never probed.
    fn health(&self, key: &AdKey) -> Option<ServerHealth>;
    /// Whether the server holds `path`, as far as cached checks know.
    fn presence(&self, key: &AdKey, path: &str) -> Presence;

    /// What is known of each of `candidates`, written to `out` in their order: health,
    /// and presence of `path` when one is given. A redirect asks this of all its
    /// candidates together, so an implementation can read each of its tables once.
    fn read(&self, candidates: &[Candidate], path: Option<&str>, out: &mut [Seen]) {
        let mut key = KeyBuf::default();
        for (c, seen) in candidates.iter().zip(out) {
            let key = key.of(c.kind, c.name());
            *seen = Seen {
                health: self.health(key),
                presence: path.map_or(Presence::Unknown, |path| self.presence(key, path)),
            };
        }
    }
}

/// No probes: every server's health and every object's presence are unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSignals;

impl Signals for NoSignals {
    fn health(&self, _key: &AdKey) -> Option<ServerHealth> {
        None
    }

    fn presence(&self, _key: &AdKey, _path: &str) -> Presence {
        Presence::Unknown
    }
}

/// One reusable [`AdKey`]: the signals are asked by key, and a route asks about each of
/// its servers, so the name is copied into one buffer instead of a new key per server.
#[derive(Debug)]
pub struct KeyBuf(AdKey);

impl Default for KeyBuf {
    fn default() -> Self {
        Self(AdKey {
            kind: ServerKind::Cache,
            name: String::new(),
        })
    }
}

impl KeyBuf {
    /// The key of the server `name` of `kind`.
    pub fn of(&mut self, kind: ServerKind, name: &str) -> &AdKey {
        self.0.kind = kind;
        self.0.name.clear();
        self.0.name.push_str(name);
        &self.0
    }
}
