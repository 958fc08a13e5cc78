//! A process's identity as an advertiser: instance ID, generation counter and key.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ad::{Ad, AdStatus, InstanceId, NamespaceAd, ServerKind, SignedAd, SigningKey};
use crate::clock::UnixMillis;
use crate::coord::Coord;

/// Signs this process's ads with a fixed instance ID and a rising generation.
#[derive(Debug)]
pub struct Identity {
    name: String,
    kind: ServerKind,
    instance: InstanceId,
    generation: AtomicU64,
    key: SigningKey,
}

/// The start time for a new life: now, or strictly after the previous life's start if
/// the clock went backwards, so a restart is always "newer".
pub fn next_start_time(now: UnixMillis, previous: Option<UnixMillis>) -> UnixMillis {
    match previous {
        Some(prev) if prev >= now => prev + 1,
        _ => now,
    }
}

/// What an ad says besides identity and ordering.
#[derive(Debug, Clone)]
pub struct AdBody {
    /// Where clients fetch objects (directors: the advertise URL).
    pub data_url: String,
    /// Web URL.
    pub web_url: String,
    /// Namespaces served.
    pub namespaces: Vec<NamespaceAd>,
    /// Serving or withdrawing.
    pub status: AdStatus,
    /// Where the server is (`[location]`), if declared.
    pub location: Option<Coord>,
}

impl Identity {
    /// An identity whose instance started at `started_at`.
    pub fn new(
        name: impl Into<String>,
        kind: ServerKind,
        started_at: UnixMillis,
        key: SigningKey,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            instance: InstanceId::new(started_at),
            generation: AtomicU64::new(0),
            key,
        }
    }

    /// This process's instance ID.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs a new ad (next generation) expiring at `expires_at`.
    pub fn sign(&self, body: AdBody, expires_at: UnixMillis) -> SignedAd {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ad {
            name: self.name.clone(),
            kind: self.kind,
            data_url: body.data_url,
            web_url: body.web_url,
            namespaces: body.namespaces,
            status: body.status,
            instance_id: self.instance,
            generation,
            expires_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            record: None,
            location: body.location,
        }
        .sign(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_is_newer_even_if_the_clock_went_back() {
        assert_eq!(next_start_time(100, None), 100);
        assert_eq!(next_start_time(100, Some(50)), 100);
        assert_eq!(next_start_time(100, Some(100)), 101);
        assert_eq!(next_start_time(100, Some(500)), 501);
    }

    #[test]
    fn generations_rise() {
        let id = Identity::new(
            "d",
            ServerKind::Director,
            5,
            SigningKey::from_bytes(&[1; 32]),
        );
        let body = AdBody {
            data_url: "http://d".into(),
            web_url: "http://d".into(),
            namespaces: vec![],
            status: AdStatus::Ok,
            location: None,
        };
        let a = id.sign(body.clone(), 10);
        let b = id.sign(body, 10);
        assert!(b.ad.version() > a.ad.version());
    }
}
