//! Bearer tokens for object access, checked as a Pelican origin checks them (WLCG /
//! SciTokens profile): an ES256 or RS256 JWT from an issuer the namespace names, with a
//! valid signature, `exp` and `nbf`, an accepted audience, and a storage scope covering
//! the path (see [`scopes`]).
//!
//! The token comes from `Authorization: Bearer <token>` or the `authz` (or
//! `access_token`) query parameter, as Pelican clients and XRootD accept it.

pub mod jwks;
pub mod scopes;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::client::Client;
use crate::config::ServiceConfig;
use crate::http::ApiError;
pub use jwks::{IssuerKeys, KeySource};
pub use scopes::Action;

/// The audience every WLCG token may carry to be accepted by any server.
pub const WLCG_ANY_AUDIENCE: &str = "https://wlcg.cern.ch/jwt/v1/any";

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// Why a request's token does not allow it.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token where one is needed.
    #[error("{0} needs a bearer token (Authorization: Bearer, or ?authz=)")]
    Missing(String),
    /// The token is malformed, badly signed, expired, for another audience, or from an
    /// issuer the namespace does not name.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but its scopes do not cover the request.
    #[error("the token's scopes do not allow {action} on {path}")]
    Forbidden {
        /// The scope needed.
        action: &'static str,
        /// The object path.
        path: String,
    },
    /// The issuer's public keys could not be loaded.
    #[error("the keys of issuer {issuer} could not be loaded: {detail}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        detail: String,
    },
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        let detail = error.to_string();
        match error {
            TokenError::Missing(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "token_required", detail)
            }
            TokenError::Invalid(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", detail)
            }
            TokenError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", detail)
            }
            TokenError::KeysUnavailable { .. } => {
                tracing::warn!(%detail, "token check impossible");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "issuer_keys_unavailable",
                    detail,
                )
            }
        }
    }
}

/// The claims Skein reads; the signature, `exp`, `nbf`, `iss` and `aud` are checked by
/// the JWT library.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: String,
}

/// The token of a request, if any: `Authorization: Bearer`, else `?authz=` or
/// `?access_token=` (percent-decoded; a leading `Bearer ` is dropped).
pub fn bearer(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    from_header
        .or_else(|| {
            query?.split('&').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                matches!(name, "authz" | "access_token").then(|| {
                    percent_encoding::percent_decode_str(&value.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
        })
        .map(|token| {
            let token = token.trim();
            token
                .strip_prefix("Bearer ")
                .or_else(|| token.strip_prefix("bearer "))
                .unwrap_or(token)
                .trim()
                .to_string()
        })
        .filter(|token| !token.is_empty())
}

/// Checks tokens for the namespaces of one server.
pub struct Authorizer {
    /// Per namespace path, the issuers whose tokens it accepts.
    namespaces: Vec<(String, Vec<Arc<IssuerKeys>>)>,
    audiences: Vec<String>,
    client: Client,
}

impl Authorizer {
    /// The issuers of every namespace of `config`: its `issuer` (keys from `jwks` or
    /// `jwks_url`, else discovered) and its `issuers` (keys discovered). Tokens must be
    /// for the server's `data_url`, `web_url`, a `token_audiences` entry, or
    /// [`WLCG_ANY_AUDIENCE`].
    pub fn new(config: &ServiceConfig) -> Result<Self, crate::client::ClientError> {
        let mut all: Vec<Arc<IssuerKeys>> = Vec::new();
        let mut keys_for = |issuer: &str, source: KeySource| {
            let issuer = issuer.trim_end_matches('/');
            if let Some(known) = all.iter().find(|k| k.issuer() == issuer) {
                return known.clone();
            }
            let keys = Arc::new(IssuerKeys::new(issuer, source));
            all.push(keys.clone());
            keys
        };
        let namespaces = config
            .namespaces
            .iter()
            .map(|ns| {
                let mut issuers = Vec::new();
                if let Some(issuer) = &ns.issuer {
                    let source = match (&ns.jwks, &ns.jwks_url) {
                        (Some(file), _) => KeySource::File(file.clone()),
                        (None, Some(url)) => KeySource::Url(url.clone()),
                        (None, None) => KeySource::Discover,
                    };
                    issuers.push(keys_for(issuer, source));
                }
                for issuer in &ns.issuers {
                    issuers.push(keys_for(issuer, KeySource::Discover));
                }
                (ns.path.clone(), issuers)
            })
            .collect();
        let mut audiences = vec![
            config.data_url.clone(),
            config.web_url.clone(),
            WLCG_ANY_AUDIENCE.to_string(),
        ];
        audiences.extend(config.token_audiences.iter().cloned());
        audiences.dedup();
        Ok(Self {
            namespaces,
            audiences,
            client: Client::new(Duration::from_secs(5), config.ca_bundle.as_deref())?,
        })
    }

    /// Checks that `token` allows `action` on `path` (clean), in namespace `prefix`.
    pub async fn check(
        &self,
        prefix: &str,
        path: &str,
        token: Option<&str>,
        action: Action,
    ) -> Result<(), TokenError> {
        let token =
            token.ok_or_else(|| TokenError::Missing(format!("{} {path}", action.verb())))?;
        let issuers = self
            .namespaces
            .iter()
            .find(|(p, _)| p == prefix)
            .map(|(_, issuers)| issuers.as_slice())
            .unwrap_or_default();
        let scope = self.verify(token, prefix, issuers).await?;
        let rel = match &path[prefix.len()..] {
            "" => "/",
            rest => rest,
        };
        if scopes::allows(&scope, action, rel) {
            Ok(())
        } else {
            Err(TokenError::Forbidden {
                action: action.wlcg_scope(),
                path: path.to_string(),
            })
        }
    }

    /// Verifies `token` against the keys of the issuer it names; returns its scopes.
    async fn verify(
        &self,
        token: &str,
        prefix: &str,
        issuers: &[Arc<IssuerKeys>],
    ) -> Result<String, TokenError> {
        let invalid = |detail: String| TokenError::Invalid(detail);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted (ES256 or RS256)",
                header.alg
            )));
        }
        let iss = unverified_issuer(token).ok_or_else(|| invalid("no iss claim".into()))?;
        let keys = issuers
            .iter()
            .find(|k| k.issuer() == iss.trim_end_matches('/'))
            .ok_or_else(|| invalid(format!("issuer {iss:?} is not trusted for {prefix}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[iss.as_str()]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let mut set = keys.keys(&self.client, false).await?;
        if let Some(kid) = &header.kid {
            if set.find(kid).is_none() {
                set = keys.keys(&self.client, true).await?;
            }
        }
        let candidates: Vec<_> = match &header.kid {
            Some(kid) => set.find(kid).into_iter().collect(),
            None => set.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(invalid(format!(
                "issuer {iss} has no key {:?}",
                header.kid.as_deref().unwrap_or_default()
            )));
        }
        let mut last = String::from("no usable key");
        for jwk in candidates {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
                Ok(data) => return Ok(data.claims.scope),
                Err(error) => last = error.to_string(),
            }
        }
        Err(invalid(last))
    }
}

/// The `iss` claim, read before the signature is checked (to pick the keys).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: IssuerOnly = serde_json::from_slice(&bytes).ok()?;
    Some(claims.iss).filter(|iss| !iss.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_from_header_or_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers, None), None);
        assert_eq!(
            bearer(&headers, Some("authz=Bearer%20abc")),
            Some("abc".into())
        );
        assert_eq!(
            bearer(&headers, Some("x=1&access_token=def")),
            Some("def".into())
        );
        assert_eq!(bearer(&headers, Some("authz=")), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(bearer(&headers, Some("authz=abc")), Some("xyz".into()));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer(&headers, None), None);
    }
}
