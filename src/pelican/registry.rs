//! Keys from Pelican's registry: the per-prefix JWKS, cached, refreshed off the hot path.
//!
//! Pelican's registry serves the public keys registered for a prefix at
//! `<registry>/api/v1.0/registry<prefix>/.well-known/issuer.jwks` (the `jwks_uri` of
//! that prefix's `openid-configuration`; `registry/registry.go` `wildcardHandler`):
//! 200 with a JWKS, 404 when the prefix is not registered, 403 when it awaits approval.
//! The registry URL is `pelican.registry_url`, else the federation discovery
//! document's `namespace_registration_endpoint`.
//!
//! Cost bounds: an entry is fresh for `key_ttl`; a stale entry keeps serving while one
//! background refresh runs (and while the registry is down); an unknown `kid` refetches
//! a prefix at most once per `refresh_min_interval` (a negative cache, so any number of
//! unknown kids costs one request per prefix per interval); concurrent misses share one
//! request (single flight); and all fetches draw on one token bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::flight::Flights;

use super::jwks::{KeySet, KidLookup, MAX_JWKS_BYTES, PublicKey};
use crate::client::Client;
use crate::clock::{SharedClock, UnixMillis};

/// Registry requests allowed in a burst, and refilled per second, by default: a cold
/// director facing 1,000 servers (2 prefixes each) fills its cache within a minute.
pub const DEFAULT_BURST: u32 = 200;
/// See [`DEFAULT_BURST`].
pub const DEFAULT_RATE_PER_SEC: u32 = 50;

/// How the registry is reached and how long its answers are kept.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// The registry's base URL (else from discovery).
    pub url: Option<String>,
    /// The federation discovery URL (to find the registry).
    pub discovery_url: Option<String>,
    /// How long a fetched key set is fresh.
    pub key_ttl: Duration,
    /// Least time between two fetches of one prefix prompted by an unknown `kid`.
    pub refresh_min_interval: Duration,
    /// Registry requests allowed in a burst.
    pub burst: u32,
    /// Registry requests allowed per second after a burst.
    pub rate_per_sec: u32,
}

/// Why the registry gave no key set.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Unreachable, slow, failing or answering garbage: retry later (503).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The prefix is not registered (404).
    #[error("{0}")]
    NotRegistered(String),
    /// The prefix awaits a federation administrator's approval (403).
    #[error("{0}")]
    NotApproved(String),
}

/// The answer to "which key is `kid` for `prefix`?".
#[derive(Debug, Clone)]
pub enum KeyLookup {
    /// Found.
    Key(PublicKey),
    /// The prefix's keys are known and `kid` is not among them.
    UnknownKid,
    /// The key exists but is unusable.
    Rejected(String),
    /// No usable answer.
    Failed(RegistryError),
}

#[derive(Debug, Clone)]
enum Known {
    Keys(Arc<KeySet>),
    Refused(RegistryError),
}

#[derive(Debug, Clone)]
struct Entry {
    known: Known,
    fetched_at: UnixMillis,
    last_attempt: UnixMillis,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The registry's key sets, cached.
pub struct Registry {
    client: Client,
    settings: RegistrySettings,
    clock: SharedClock,
    base: Mutex<Option<String>>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Fetches in the air, one per prefix.
    inflight: Flights<String, Result<Arc<KeySet>, RegistryError>>,
    bucket: Mutex<Bucket>,
    /// Bounds registry requests in flight (background refreshes come in waves).
    slots: tokio::sync::Semaphore,
    requests: AtomicU64,
    refreshing: AtomicU64,
}

/// Most registry requests in flight at once.
const MAX_IN_FLIGHT: usize = 16;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Registry {
    /// A registry cache using `client` (whose timeout bounds every request).
    pub fn new(client: Client, settings: RegistrySettings, clock: SharedClock) -> Arc<Self> {
        let base = settings
            .url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned());
        let bucket = Bucket {
            tokens: f64::from(settings.burst),
            at: Instant::now(),
        };
        Arc::new(Self {
            client,
            settings,
            clock,
            base: Mutex::new(base),
            entries: Mutex::new(HashMap::new()),
            inflight: Flights::default(),
            bucket: Mutex::new(bucket),
            slots: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            requests: AtomicU64::new(0),
            refreshing: AtomicU64::new(0),
        })
    }

    /// Background refreshes started and not yet finished.
    pub fn refreshing(&self) -> u64 {
        self.refreshing.load(Ordering::SeqCst)
    }

    /// HTTP requests made to the registry (and discovery) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn entry(&self, prefix: &str) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(prefix)
            .cloned()
    }

    /// Resolves `kid` for `prefix`, fetching only when the cache cannot answer.
    pub async fn key(self: &Arc<Self>, prefix: &str, kid: &str) -> KeyLookup {
        let now = self.clock.now_ms();
        let ttl = self.settings.key_ttl.as_millis() as u64;
        let min_gap = self.settings.refresh_min_interval.as_millis() as u64;
        let entry = self.entry(prefix);
        let may_refetch = entry
            .as_ref()
            .is_none_or(|e| now.saturating_sub(e.last_attempt) >= min_gap);
        match entry {
            Some(Entry {
                known: Known::Keys(set),
                fetched_at,
                ..
            }) => {
                let fresh = now.saturating_sub(fetched_at) < ttl;
                match set.lookup(kid) {
                    KidLookup::Found(key) => {
                        if !fresh && may_refetch {
                            self.refresh_in_background(prefix);
                        }
                        return KeyLookup::Key(key);
                    }
                    KidLookup::Rejected(why) if fresh || !may_refetch => {
                        return KeyLookup::Rejected(why);
                    }
                    KidLookup::Unknown if !may_refetch => return KeyLookup::UnknownKid,
                    _ => {}
                }
            }
            Some(Entry {
                known: Known::Refused(why),
                ..
            }) if !may_refetch => return KeyLookup::Failed(why),
            _ => {}
        }
        match self.fetch(prefix).await {
            Ok(set) => match set.lookup(kid) {
                KidLookup::Found(key) => KeyLookup::Key(key),
                KidLookup::Rejected(why) => KeyLookup::Rejected(why),
                KidLookup::Unknown => KeyLookup::UnknownKid,
            },
            Err(e) => KeyLookup::Failed(e),
        }
    }

    /// From the cache only (never fetches): does `prefix` hold `kid`? `None` if unknown.
    pub fn cached_contains(&self, prefix: &str, kid: &str) -> Option<bool> {
        match self.entry(prefix)?.known {
            Known::Keys(set) => Some(set.contains(kid)),
            Known::Refused(_) => Some(false),
        }
    }

    /// Makes sure `prefix` is cached (fetching if it is not); errors are left for the
    /// later check to report.
    pub async fn warm(self: &Arc<Self>, prefix: &str) {
        if self.entry(prefix).is_none() {
            let _ = self.fetch(prefix).await;
        }
    }

    fn refresh_in_background(self: &Arc<Self>, prefix: &str) {
        // Marked now, so the calls that follow before the task runs do not start more.
        self.note_attempt(prefix, self.clock.now_ms());
        let this = self.clone();
        let prefix = prefix.to_owned();
        self.refreshing.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(error) = this.fetch(&prefix).await {
                tracing::debug!(%prefix, %error, "background key refresh failed; keeping cached keys");
            }
            this.refreshing.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// One fetch per prefix at a time; everyone asking meanwhile shares its answer.
    async fn fetch(self: &Arc<Self>, prefix: &str) -> Result<Arc<KeySet>, RegistryError> {
        let (this, owned) = (self.clone(), prefix.to_owned());
        let fetch = move || async move { this.fetch_now(&owned).await };
        self.inflight.run(prefix.to_owned(), fetch).await
    }

    fn take_token(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill =
            now.duration_since(bucket.at).as_secs_f64() * f64::from(self.settings.rate_per_sec);
        bucket.tokens = (bucket.tokens + refill).min(f64::from(self.settings.burst));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn fetch_now(&self, prefix: &str) -> Result<Arc<KeySet>, RegistryError> {
        let now = self.clock.now_ms();
        self.note_attempt(prefix, now);
        if !self.take_token() {
            return Err(RegistryError::Unavailable(
                "registry request budget exhausted; retry shortly".into(),
            ));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let base = self.base_url().await?;
        let url = format!("{base}/api/v1.0/registry{prefix}/.well-known/issuer.jwks");
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .client
            .http()
            .get(&url)
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            let why = if status == reqwest::StatusCode::NOT_FOUND {
                RegistryError::NotRegistered(format!(
                    "prefix {prefix} is not registered at the federation registry"
                ))
            } else {
                RegistryError::NotApproved(format!(
                    "{prefix} was not approved by an administrator of the federation registry"
                ))
            };
            self.store(prefix, Known::Refused(why.clone()), now);
            return Err(why);
        }
        if !status.is_success() {
            return Err(RegistryError::Unavailable(format!(
                "{url} answered {status}"
            )));
        }
        let body = read_bounded(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{url}: {e}")))?;
        let set = KeySet::parse(&body)
            .map_err(|e| RegistryError::Unavailable(format!("{url} answered garbage: {e}")))?;
        self.store(prefix, Known::Keys(set.clone()), now);
        Ok(set)
    }

    fn note_attempt(&self, prefix: &str, now: UnixMillis) {
        if let Some(entry) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(prefix)
        {
            entry.last_attempt = now;
        }
    }

    fn store(&self, prefix: &str, known: Known, now: UnixMillis) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                prefix.to_owned(),
                Entry {
                    known,
                    fetched_at: now,
                    last_attempt: now,
                },
            );
    }

    async fn base_url(&self) -> Result<String, RegistryError> {
        if let Some(base) = self.base.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(base);
        }
        let Some(discovery) = self.settings.discovery_url.as_deref() else {
            return Err(RegistryError::Unavailable(
                "no pelican.registry_url and no federation.discovery_url".into(),
            ));
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let doc = self
            .client
            .discovery(discovery)
            .await
            .map_err(|e| RegistryError::Unavailable(format!("discovery: {e}")))?;
        let base = doc
            .namespace_registration_endpoint
            .trim_end_matches('/')
            .to_owned();
        if base.is_empty() {
            return Err(RegistryError::Unavailable(
                "the discovery document names no namespace_registration_endpoint".into(),
            ));
        }
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = Some(base.clone());
        Ok(base)
    }
}

/// Reads a response body, refusing more than `limit` bytes.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n as usize > limit)
    {
        return Err(format!("body over {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("body over {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
