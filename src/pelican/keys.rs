//! Who may advertise as which Pelican server: `[[pelican]]` trust-file entries and,
//! where configured, the registry.
//!
//! A trust-file entry names a Pelican server by its registry prefix, binds it to one
//! ad `name` and kind, lists its public keys (a JWKS inline or in a file) and the
//! namespace prefixes it may serve. Where no entry matches and the registry is
//! configured, the registry's per-prefix JWKS decides (see [`super::registry`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::jwks::{KeySet, KidLookup};
use super::registry::{KeyLookup, Registry, RegistryError};
use crate::ad::ServerKind;

/// One `[[pelican]]` entry as written in the trust file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PelicanEntryFile {
    name: String,
    kind: ServerKind,
    registry_prefix: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    namespaces: Vec<String>,
}

/// A Pelican server the trust file names.
#[derive(Debug, Clone)]
pub struct PelicanEntry {
    /// The `name` its ads must carry.
    pub name: String,
    /// Origin or cache.
    pub kind: ServerKind,
    /// The token `iss` it must use (any when unset).
    pub issuer: Option<String>,
    /// Its public keys.
    pub keys: Arc<KeySet>,
    /// Namespace prefixes it may serve.
    pub namespaces: Vec<String>,
}

/// The kind a registry prefix is for: `/origins/<host>` or `/caches/<site>`.
pub fn prefix_kind(prefix: &str) -> Option<ServerKind> {
    let tail_ok = |rest: &str| !rest.is_empty() && !rest.contains("..");
    if let Some(rest) = prefix.strip_prefix("/origins/") {
        tail_ok(rest).then_some(ServerKind::Origin)
    } else if let Some(rest) = prefix.strip_prefix("/caches/") {
        tail_ok(rest).then_some(ServerKind::Cache)
    } else {
        None
    }
}

/// Where a key was found.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// In a trust-file entry.
    TrustFile(PelicanEntry, super::jwks::PublicKey),
    /// In the registry.
    Registry(super::jwks::PublicKey),
}

/// Why no key was found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Neither the trust file nor the registry knows the prefix.
    #[error("registry prefix {0:?} is not known to this director")]
    UnknownPrefix(String),
    /// The prefix is known but `kid` is not one of its keys.
    #[error("key {kid:?} is not registered for {prefix}")]
    UnknownKid {
        /// Prefix.
        prefix: String,
        /// Key ID.
        kid: String,
    },
    /// The key is listed but unusable.
    #[error("key {kid:?} of {prefix} is unusable: {why}")]
    BadKey {
        /// Prefix.
        prefix: String,
        /// Key ID.
        kid: String,
        /// Why.
        why: String,
    },
    /// The registry does not know the prefix.
    #[error("{0}")]
    NotRegistered(String),
    /// The registry knows the prefix but an administrator has not approved it.
    #[error("{0}")]
    NotApproved(String),
    /// The registry could not be asked and nothing is cached: retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// Pelican servers' keys: trust-file entries, then the registry.
#[derive(Debug, Clone, Default)]
pub struct PelicanKeys {
    entries: Arc<HashMap<String, PelicanEntry>>,
    registry: Option<Arc<Registry>>,
}

impl PelicanKeys {
    /// Builds entries from the trust file (paths relative to `base`), reporting every
    /// problem.
    pub(crate) fn from_entries(
        raw: Vec<PelicanEntryFile>,
        base: Option<&Path>,
        problems: &mut Vec<String>,
    ) -> Self {
        let mut entries = HashMap::new();
        for entry in raw {
            let label = format!("pelican {:?}", entry.registry_prefix);
            match prefix_kind(&entry.registry_prefix) {
                Some(kind) if kind == entry.kind => {}
                _ => problems.push(format!(
                    "{label}: registry_prefix must be /origins/<host> for an origin or /caches/<site> for a cache (kind {})",
                    entry.kind
                )),
            }
            for ns in &entry.namespaces {
                if !crate::paths::is_valid_namespace(ns) {
                    problems.push(format!(
                        "{label}: namespace {ns:?} is not a clean absolute path"
                    ));
                }
            }
            let text = match (&entry.jwks, &entry.jwks_file) {
                (Some(text), None) => text.clone().into_bytes(),
                (None, Some(file)) => {
                    let path = match base {
                        Some(base) if file.is_relative() => base.join(file),
                        _ => file.clone(),
                    };
                    match std::fs::read(&path) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            problems.push(format!("{label}: jwks_file {}: {e}", path.display()));
                            continue;
                        }
                    }
                }
                _ => {
                    problems.push(format!("{label}: give exactly one of jwks or jwks_file"));
                    continue;
                }
            };
            let keys = match KeySet::parse(&text) {
                Ok(keys) if !keys.is_empty() => keys,
                Ok(_) => {
                    problems.push(format!("{label}: the JWKS holds no usable key"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{label}: {e}"));
                    continue;
                }
            };
            let parsed = PelicanEntry {
                name: entry.name,
                kind: entry.kind,
                issuer: entry.issuer,
                keys,
                namespaces: entry.namespaces,
            };
            if entries
                .insert(entry.registry_prefix.clone(), parsed)
                .is_some()
            {
                problems.push(format!("{label} is listed twice"));
            }
        }
        Self {
            entries: Arc::new(entries),
            registry: None,
        }
    }

    /// Adds or replaces an entry (tests and embedders).
    pub fn insert(&mut self, registry_prefix: impl Into<String>, entry: PelicanEntry) {
        Arc::make_mut(&mut self.entries).insert(registry_prefix.into(), entry);
    }

    /// Uses `registry` for prefixes no entry names.
    pub fn set_registry(&mut self, registry: Arc<Registry>) {
        self.registry = Some(registry);
    }

    /// The registry, when configured.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.as_ref()
    }

    /// The trust-file entry for a registry prefix.
    pub fn entry(&self, prefix: &str) -> Option<&PelicanEntry> {
        self.entries.get(prefix)
    }

    /// Number of trust-file entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no trust-file entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finds the key `kid` for `prefix` (may ask the registry).
    pub async fn resolve(&self, prefix: &str, kid: &str) -> Result<Resolved, KeyError> {
        if let Some(entry) = self.entries.get(prefix) {
            return match entry.keys.lookup(kid) {
                KidLookup::Found(key) => Ok(Resolved::TrustFile(entry.clone(), key)),
                KidLookup::Rejected(why) => Err(KeyError::BadKey {
                    prefix: prefix.into(),
                    kid: kid.into(),
                    why,
                }),
                KidLookup::Unknown => Err(KeyError::UnknownKid {
                    prefix: prefix.into(),
                    kid: kid.into(),
                }),
            };
        }
        let Some(registry) = &self.registry else {
            return Err(KeyError::UnknownPrefix(prefix.into()));
        };
        match registry.key(prefix, kid).await {
            KeyLookup::Key(key) => Ok(Resolved::Registry(key)),
            KeyLookup::UnknownKid => Err(KeyError::UnknownKid {
                prefix: prefix.into(),
                kid: kid.into(),
            }),
            KeyLookup::Rejected(why) => Err(KeyError::BadKey {
                prefix: prefix.into(),
                kid: kid.into(),
                why,
            }),
            KeyLookup::Failed(RegistryError::NotRegistered(why)) => {
                Err(KeyError::NotRegistered(why))
            }
            KeyLookup::Failed(RegistryError::NotApproved(why)) => Err(KeyError::NotApproved(why)),
            KeyLookup::Failed(RegistryError::Unavailable(why)) => Err(KeyError::Unavailable(why)),
        }
    }
}
