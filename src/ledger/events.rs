//! One log line when a server joins, withdraws, expires or is refused: at most one
//! per server and kind of event per minute, so a flapping or hostile server cannot
//! flood the log.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ad::{Ad, AdKey, AdStatus};
use crate::clock::UnixMillis;

/// Quiet time per server and event after a line is written.
const QUIET_MS: u64 = 60_000;
/// Servers remembered; past this the memory is cleared (a few lines may repeat).
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Event {
    Joined,
    Withdrew,
    Expired,
    Refused,
}

/// Rate-limited server life-cycle lines.
#[derive(Default)]
pub(super) struct ServerLog {
    last: Mutex<HashMap<(String, Event), UnixMillis>>,
}

impl ServerLog {
    fn allow(&self, who: String, event: Event, now: UnixMillis) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= MAX_REMEMBERED {
            last.clear();
        }
        match last.get(&(who.clone(), event)) {
            Some(&at) if now.saturating_sub(at) < QUIET_MS => false,
            _ => {
                last.insert((who, event), now);
                true
            }
        }
    }

    /// A newer ad was accepted; `before` is the status held until now.
    pub(super) fn accepted(&self, ad: &Ad, before: Option<AdStatus>, now: UnixMillis) {
        let key = ad.key();
        if let Some(record) = ad.record.as_ref().filter(|_| ad.kind.is_record()) {
            // Operator records are rare and each one matters: always one line.
            tracing::info!(record = %key, active = record.active, signer = %record.signer, reason = %record.reason, "federation record accepted");
            return;
        }
        match (before, ad.status) {
            (None | Some(AdStatus::ShuttingDown), AdStatus::Ok)
                if self.allow(key.to_string(), Event::Joined, now) =>
            {
                tracing::info!(server = %key, data_url = %ad.data_url, "server joined");
            }
            (Some(AdStatus::Ok), AdStatus::ShuttingDown)
                if self.allow(key.to_string(), Event::Withdrew, now) =>
            {
                tracing::info!(server = %key, "server withdrew");
            }
            _ => {}
        }
    }

    /// An ad was dropped at its expiry.
    pub(super) fn expired(&self, key: &AdKey, now: UnixMillis) {
        if self.allow(key.to_string(), Event::Expired, now) {
            tracing::info!(server = %key, "server expired (no fresh ad)");
        }
    }

    /// An ad was refused.
    pub(super) fn refused(&self, ad: &Ad, reason: &dyn std::fmt::Display, now: UnixMillis) {
        // Bound the name: a hostile sender chooses it.
        let name: String = ad.name.chars().take(64).collect();
        let who = format!("{}/{name}", ad.kind);
        if self.allow(who.clone(), Event::Refused, now) {
            tracing::warn!(server = %who, %reason, "ad refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_server_and_event_per_minute() {
        let log = ServerLog::default();
        assert!(log.allow("cache/a".into(), Event::Refused, 1_000));
        assert!(!log.allow("cache/a".into(), Event::Refused, 30_000));
        assert!(log.allow("cache/a".into(), Event::Joined, 30_000));
        assert!(log.allow("cache/b".into(), Event::Refused, 30_000));
        assert!(log.allow("cache/a".into(), Event::Refused, 61_000));
    }
}
