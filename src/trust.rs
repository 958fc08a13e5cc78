//! The trust file: who may advertise what. An ad is accepted only if its signature
//! verifies with the key listed for its name and kind and every namespace is allowed;
//! a federation record (downtime, ban) only if it verifies with an admin key.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::ad::{Ad, ServerKind, SignError, SignedAd, VerifyingKey, decode_public_key};
use crate::paths::is_under_prefix;

/// One `[[server]]` entry as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerEntry {
    name: String,
    kind: EntryKind,
    public_key: String,
    #[serde(default)]
    namespaces: Vec<String>,
}

/// What an entry trusts: a server of a kind, or an operator key that signs records.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EntryKind {
    Origin,
    Cache,
    Director,
    Admin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    server: Vec<ServerEntry>,
}

/// A trusted server.
#[derive(Debug, Clone)]
pub struct TrustedServer {
    /// Its kind.
    pub kind: ServerKind,
    /// Its signing key.
    pub key: VerifyingKey,
    /// Namespace prefixes it may serve.
    pub namespaces: Vec<String>,
}

/// Why an ad is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    /// No entry for the ad's name.
    #[error("server {0:?} is not in the trust file")]
    UnknownServer(String),
    /// The entry is for another kind.
    #[error("server {name:?} is trusted as a {trusted}, not as a {claimed}")]
    WrongKind {
        /// Server name.
        name: String,
        /// Kind in the trust file.
        trusted: ServerKind,
        /// Kind in the ad.
        claimed: ServerKind,
    },
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SignError),
    /// A record signed by a name that is not an admin in the trust file.
    #[error("records must be signed by an admin key; {0:?} is not one")]
    NotAdmin(String),
    /// A record kind without its record.
    #[error("a {0} record carries no record body")]
    MissingRecord(ServerKind),
    /// A namespace outside the server's allowed prefixes.
    #[error("server {name:?} may not serve namespace {namespace:?}")]
    ForbiddenNamespace {
        /// Server name.
        name: String,
        /// The namespace refused.
        namespace: String,
    },
}

/// Why the trust file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    /// Unreadable.
    #[error("trust file {path}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("trust file {path}: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The loaded trust file.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    servers: HashMap<String, TrustedServer>,
    /// Operator keys (`kind = "admin"`), by name: they sign downtime and ban records.
    admins: HashMap<String, VerifyingKey>,
}

impl Trust {
    /// Loads and checks a trust file.
    pub fn load(path: &Path) -> Result<Self, TrustFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| TrustFileError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses trust-file TOML, reporting every bad entry at once.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TrustFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut servers = HashMap::new();
        let mut admins = HashMap::new();
        let mut problems = Vec::new();
        for entry in file.server {
            let key = match decode_public_key(&entry.public_key) {
                Ok(key) => key,
                Err(e) => {
                    problems.push(format!("server {:?}: {e}", entry.name));
                    continue;
                }
            };
            for ns in &entry.namespaces {
                if !ns.starts_with('/') {
                    problems.push(format!(
                        "server {:?}: namespace {ns:?} must start with /",
                        entry.name
                    ));
                }
            }
            let kind = match entry.kind {
                EntryKind::Origin => ServerKind::Origin,
                EntryKind::Cache => ServerKind::Cache,
                EntryKind::Director => ServerKind::Director,
                EntryKind::Admin => {
                    if !entry.namespaces.is_empty() {
                        problems.push(format!(
                            "admin {:?}: an admin key serves no namespaces",
                            entry.name
                        ));
                    }
                    if servers.contains_key(&entry.name)
                        || admins.insert(entry.name.clone(), key).is_some()
                    {
                        problems.push(format!("server {:?} is listed twice", entry.name));
                    }
                    continue;
                }
            };
            let trusted = TrustedServer {
                kind,
                key,
                namespaces: entry.namespaces,
            };
            if admins.contains_key(&entry.name)
                || servers.insert(entry.name.clone(), trusted).is_some()
            {
                problems.push(format!("server {:?} is listed twice", entry.name));
            }
        }
        if problems.is_empty() {
            Ok(Self { servers, admins })
        } else {
            Err(problems.join("; "))
        }
    }

    /// Adds or replaces an entry (used by tests and embedders).
    pub fn insert(&mut self, name: impl Into<String>, server: TrustedServer) {
        self.servers.insert(name.into(), server);
    }

    /// Adds or replaces an admin key (used by tests and embedders).
    pub fn insert_admin(&mut self, name: impl Into<String>, key: VerifyingKey) {
        self.admins.insert(name.into(), key);
    }

    /// Number of trusted servers and admin keys.
    pub fn len(&self) -> usize {
        self.servers.len() + self.admins.len()
    }

    /// True if nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.admins.is_empty()
    }

    /// Checks an ad: known signer of the right kind, valid signature, allowed namespaces.
    pub fn check(&self, signed: &SignedAd) -> Result<(), TrustError> {
        self.admits(&signed.ad, &signed.signature)
    }

    /// True if `name` is trusted as a `kind` with exactly `key` (a director asks this of
    /// itself after a reload).
    pub fn lists(&self, name: &str, kind: ServerKind, key: &VerifyingKey) -> bool {
        self.servers
            .get(name)
            .is_some_and(|t| t.kind == kind && t.key == *key)
    }

    /// The one question both ingest and a reload ask: may `ad`, carrying `signature`, be
    /// held and routed under this trust? Known signer of the right kind, a signature that
    /// verifies with the listed key, and every namespace under an allowed prefix.
    /// A record (downtime, ban) instead needs a signature by the admin it names.
    pub fn admits(&self, ad: &Ad, signature: &str) -> Result<(), TrustError> {
        if ad.kind.is_record() {
            let record = ad
                .record
                .as_ref()
                .ok_or(TrustError::MissingRecord(ad.kind))?;
            let key = self
                .admins
                .get(&record.signer)
                .ok_or_else(|| TrustError::NotAdmin(record.signer.clone()))?;
            ad.verify_signature(signature, key)?;
            return Ok(());
        }
        let trusted = self
            .servers
            .get(&ad.name)
            .ok_or_else(|| TrustError::UnknownServer(ad.name.clone()))?;
        if trusted.kind != ad.kind {
            return Err(TrustError::WrongKind {
                name: ad.name.clone(),
                trusted: trusted.kind,
                claimed: ad.kind,
            });
        }
        ad.verify_signature(signature, &trusted.key)?;
        for ns in &ad.namespaces {
            let allowed = trusted
                .namespaces
                .iter()
                .any(|prefix| is_under_prefix(&ns.path, prefix));
            if !allowed {
                return Err(TrustError::ForbiddenNamespace {
                    name: ad.name.clone(),
                    namespace: ns.path.clone(),
                });
            }
        }
        Ok(())
    }
}
