//! An issuer's public keys (a JWKS): from a file, a URL, or found through the issuer's
//! OpenID configuration (`<issuer>/.well-known/openid-configuration`, `jwks_uri`), as
//! SciTokens libraries do. Fetched keys are kept for [`REFRESH`]; a token signed with a
//! key id not in the set triggers one early refetch, at most every [`RETRY`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::TokenError;
use crate::client::Client;

/// How long fetched keys are used before they are fetched again.
pub const REFRESH: Duration = Duration::from_secs(10 * 60);
/// Least time between two fetches caused by unknown key ids.
pub const RETRY: Duration = Duration::from_secs(30);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file (re-read when a key id is unknown).
    File(PathBuf),
    /// A JWKS URL.
    Url(String),
    /// The `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    Discover,
}

#[derive(Default)]
struct Cached {
    keys: Option<(Instant, Arc<JwkSet>)>,
    last_fetch: Option<Instant>,
}

/// One issuer and its keys.
pub struct IssuerKeys {
    issuer: String,
    source: KeySource,
    cached: Mutex<Cached>,
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    jwks_uri: String,
}

impl IssuerKeys {
    /// An issuer whose keys come from `source`; nothing is fetched yet.
    pub fn new(issuer: &str, source: KeySource) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            source,
            cached: Mutex::default(),
        }
    }

    /// The issuer URL (the `iss` a token must carry).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The keys, fetched if none are held, they are old, or `missing_kid` is set and a
    /// refetch is allowed by now.
    pub async fn keys(
        &self,
        client: &Client,
        missing_kid: bool,
    ) -> Result<Arc<JwkSet>, TokenError> {
        let now = Instant::now();
        let held = {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            let may_retry = cached.last_fetch.is_none_or(|t| now - t >= RETRY);
            match &cached.keys {
                Some((at, keys)) if now - *at < REFRESH && !(missing_kid && may_retry) => {
                    return Ok(keys.clone());
                }
                Some((_, keys)) if !may_retry => return Ok(keys.clone()),
                Some((_, keys)) => Some(keys.clone()),
                None => None,
            }
        };
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_fetch = Some(now);
        match self.fetch(client).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.cached.lock().unwrap_or_else(|e| e.into_inner()).keys =
                    Some((Instant::now(), keys.clone()));
                Ok(keys)
            }
            // Keys that worked stay usable while the source is unreachable.
            Err(error) => match held {
                Some(keys) => {
                    tracing::warn!(issuer = %self.issuer, %error, "could not refresh the issuer's keys; keeping the old ones");
                    Ok(keys)
                }
                None => Err(error),
            },
        }
    }

    async fn fetch(&self, client: &Client) -> Result<JwkSet, TokenError> {
        let unavailable = |detail: String| TokenError::KeysUnavailable {
            issuer: self.issuer.clone(),
            detail,
        };
        match &self.source {
            KeySource::File(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
                serde_json::from_slice(&text)
                    .map_err(|e| unavailable(format!("{}: not a JWKS ({e})", path.display())))
            }
            KeySource::Url(url) => client
                .get_json(url)
                .await
                .map_err(|e| unavailable(e.to_string())),
            KeySource::Discover => {
                let url = format!("{}/.well-known/openid-configuration", self.issuer);
                let config: OpenIdConfiguration = client
                    .get_json(&url)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                client
                    .get_json(&config.jwks_uri)
                    .await
                    .map_err(|e| unavailable(e.to_string()))
            }
        }
    }
}
