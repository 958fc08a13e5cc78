//! Admitting a Pelican server's advertisement: verify as Pelican's director does, then
//! attest it so the rest of the cluster can take it in.
//!
//! Steps, in order (each failure is a JSON answer shaped like Pelican's, nothing
//! stored): bearer token present; header allow-list (`none`/HMAC never reach a key);
//! body parses and is not a Skein-signed ad; registry prefix present and of the
//! endpoint's kind; key found for (prefix, `kid`); signature, time, audience, scope;
//! issuer and name bound by the trust file where it has an entry; every namespace
//! given to that server (trust file, or for origins the registry's per-namespace keys,
//! as Pelican's `verifyAdvertiseToken` does); the name not held by another server's
//! live ad. Then the Skein ad is built and attested with this director's key.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;

use super::attest::{Attestation, KeySource, attest};
use super::convert;
use super::keys::{KeyError, PelicanKeys, Resolved, prefix_kind};
use super::token::{self, TokenError};
use super::wire::OriginAdvertise;
use crate::ad::{AdKey, ServerKind, SignedAd, SigningKey};
use crate::clock::SharedClock;
use crate::paths::is_under_prefix;
use crate::routing::View;

/// Seconds a server is told to wait when the registry cannot be asked.
pub const RETRY_AFTER_SECS: u64 = 5;

/// A refusal, answered as Pelican's director would (`{"status":"error","msg":...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Pelican's `msg`.
    pub msg: String,
    /// `Retry-After` seconds (503 only).
    pub retry_after: Option<u64>,
    /// A short code for metrics and logs.
    pub code: &'static str,
    /// Answer with Pelican's `{"approval_error": true, "error": msg}` instead.
    pub approval: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
            retry_after: None,
            code,
            approval: false,
        }
    }

    fn forbidden(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, msg)
    }

    fn token(e: TokenError) -> Self {
        match e {
            TokenError::Scope(_) => Self::forbidden(
                "scope",
                "Authorization token verification failed. Token missing required scope",
            ),
            other => Self::forbidden(
                "token",
                format!("Authorization token verification failed: {other}"),
            ),
        }
    }

    fn key(e: KeyError) -> Self {
        match e {
            KeyError::Unavailable(why) => Self {
                retry_after: Some(RETRY_AFTER_SECS),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "registry_unavailable",
                    format!(
                        "The director cannot reach the registry to verify this server and has no cached key; please retry shortly ({why})"
                    ),
                )
            },
            KeyError::NotRegistered(why) => Self::forbidden("not_registered", why),
            KeyError::NotApproved(why) => Self {
                approval: true,
                ..Self::forbidden("not_approved", why)
            },
            other => Self::forbidden(
                "unknown_key",
                format!("Authorization token verification failed: {other}"),
            ),
        }
    }
}

/// Pelican's name for a server type.
fn type_name(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Cache => "Cache",
        _ => "Origin",
    }
}

/// Verifies Pelican ads and attests them as this director.
pub struct Gate {
    director: String,
    key: SigningKey,
    keys: PelicanKeys,
    clock: SharedClock,
    leeway_secs: u64,
    audiences: Vec<String>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("director", &self.director)
            .finish()
    }
}

impl Gate {
    /// A gate for director `director` signing attestations with `key`. `audiences` are
    /// URLs (this director's advertise URL, the discovery URL, extras) whose WLCG
    /// audiences tokens may name, besides every known peer's.
    pub fn new(
        director: impl Into<String>,
        key: SigningKey,
        keys: PelicanKeys,
        clock: SharedClock,
        leeway_secs: u64,
        audiences: Vec<String>,
    ) -> Self {
        Self {
            director: director.into(),
            key,
            keys,
            clock,
            leeway_secs,
            audiences: audiences
                .iter()
                .filter_map(|u| token::wlcg_audience(u))
                .collect(),
        }
    }

    /// The keys (for the trust check of attestations).
    pub fn keys(&self) -> &PelicanKeys {
        &self.keys
    }

    /// Checks a Pelican server's POST and returns the attested ad to take in.
    /// `peers` are the advertise URLs of the directors known now; `view` is the
    /// current view (for the name check).
    pub async fn admit(
        &self,
        kind: ServerKind,
        authorization: Option<&str>,
        body: &[u8],
        peers: &[String],
        view: &Arc<View>,
    ) -> Result<SignedAd, Refusal> {
        let bearer = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Refusal::forbidden(
                    "no_token",
                    "Bearer token not present in the 'Authorization' header",
                )
            })?;
        let header = token::inspect(bearer).map_err(Refusal::token)?;
        let tname = type_name(kind);
        let raw: Value = serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("invalid {tname} registration: {e}"),
            )
        })?;
        if raw.get("signature").is_some() || raw.get("attestation").is_some() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "mixed",
                "this body is a Skein-signed ad: send it without a bearer token, or send a Pelican ad with one",
            ));
        }
        let mut ad: OriginAdvertise = serde_json::from_value(raw).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("invalid {tname} registration: {e}"),
            )
        })?;
        for ns in &mut ad.namespaces {
            let trimmed = ns.path.trim_end_matches('/');
            ns.path = if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            };
        }
        let prefix = ad.registry_prefix.trim_end_matches('/').to_owned();
        if prefix.is_empty() {
            return Err(Refusal::forbidden(
                "no_registry_prefix",
                format!(
                    "{tname} advertisement rejected: no registry prefix present in the ad. Ensure the server runs a supported Pelican version and is registered at the federation registry"
                ),
            ));
        }
        if prefix_kind(&prefix) != Some(kind) {
            return Err(Refusal::forbidden(
                "wrong_prefix",
                format!(
                    "{tname} advertisement rejected: registry prefix {prefix:?} is not a valid {} registration prefix",
                    tname.to_lowercase()
                ),
            ));
        }

        let resolved = self
            .keys
            .resolve(&prefix, &header.kid)
            .await
            .map_err(Refusal::key)?;
        let (public, entry, source) = match resolved {
            Resolved::TrustFile(entry, key) => (key, Some(entry), KeySource::TrustFile),
            Resolved::Registry(key) => (key, None, KeySource::Registry),
        };
        if public.alg != header.alg {
            return Err(Refusal::token(TokenError::Signature(format!(
                "key {:?} is a {:?} key, the token says {}",
                header.kid,
                public.alg,
                token::alg_name(header.alg)
            ))));
        }
        let mut audiences = self.audiences.clone();
        audiences.extend(peers.iter().filter_map(|u| token::wlcg_audience(u)));
        let now = self.clock.now_ms();
        let verified = token::verify(
            bearer,
            &header,
            &public.key,
            &audiences,
            now,
            self.leeway_secs,
        )
        .map_err(Refusal::token)?;

        let name = ad.server_base_ad.name.trim().to_owned();
        match &entry {
            Some(entry) => {
                if entry.kind != kind || entry.name != name {
                    return Err(Refusal::forbidden(
                        "name",
                        format!(
                            "registry prefix {prefix} belongs to {} {:?}, not {} {name:?}",
                            entry.kind, entry.name, kind
                        ),
                    ));
                }
                if entry.issuer.as_ref().is_some_and(|i| *i != verified.issuer) {
                    return Err(Refusal::forbidden(
                        "issuer",
                        format!(
                            "Authorization token verification failed: issuer {:?} is not the one trusted for {prefix}",
                            verified.issuer
                        ),
                    ));
                }
                if let Some(ns) = ad.namespaces.iter().find(|ns| {
                    !entry
                        .namespaces
                        .iter()
                        .any(|p| is_under_prefix(&ns.path, p))
                }) {
                    return Err(Refusal::forbidden(
                        "forbidden_namespace",
                        format!("{tname} {name:?} may not serve namespace {:?}", ns.path),
                    ));
                }
            }
            None if kind == ServerKind::Origin => {
                // As Pelican: the same token must verify with each namespace's keys.
                for ns in &ad.namespaces {
                    match self.keys.resolve(&ns.path, &header.kid).await {
                        Ok(_) => {}
                        Err(e @ KeyError::Unavailable(_)) => return Err(Refusal::key(e)),
                        Err(e) => {
                            return Err(Refusal::forbidden(
                                "forbidden_namespace",
                                format!(
                                    "Authorization token verification failed: namespace {:?} is not registered to this origin ({e})",
                                    ns.path
                                ),
                            ));
                        }
                    }
                }
            }
            None => {}
        }
        let key = AdKey {
            kind,
            name: name.clone(),
        };
        let held_by_another = view.get(&key).is_some_and(|held| {
            held.expires_at > now
                && held
                    .attestation
                    .as_ref()
                    .is_none_or(|a| a.registry_prefix != prefix)
        });
        if held_by_another {
            return Err(Refusal::forbidden(
                "name_taken",
                format!("{tname} name {name:?} is held by another server's live advertisement"),
            ));
        }

        let pelican_ad = serde_json::to_string(&ad).unwrap_or_default();
        let skein_ad = convert::to_ad(&ad, kind, now, verified.issued_at);
        let attestation = Attestation {
            director: self.director.clone(),
            verified_at: now,
            key_source: source,
            registry_prefix: prefix,
            issuer: verified.issuer,
            kid: verified.kid,
            alg: verified.alg.to_owned(),
            token_expires_at: verified.expires_at,
            token_sha256: verified.sha256,
            pelican_ad,
        };
        Ok(attest(skein_ad, attestation, &self.key))
    }
}
