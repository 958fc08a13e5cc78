//! The trust file: who may advertise what. An ad is accepted only if its signature
//! verifies with the key listed for its name and kind and every namespace is allowed;
//! a federation record (downtime, ban) only if it verifies with an admin key.
//!
//! A Pelican ad (one carrying an attestation) is accepted only if a director listed
//! here signed it, and the Pelican server it names may serve every namespace in it:
//! per a `[[pelican]]` entry of this file, or the registry's keys (origins).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::ad::{
    Ad, ServerKind, SignError, SignatureCheck, SignedAd, VerifyingKey, decode_public_key,
};
use crate::paths::is_under_prefix;
use crate::pelican::keys::{PelicanEntryFile, prefix_kind};
use crate::pelican::{Attestation, PelicanKeys, attest};

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
    #[serde(default)]
    pelican: Vec<PelicanEntryFile>,
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
    /// An attestation from someone who is not a director in this trust file.
    #[error("attestation by {0:?}, who is not a director in this trust file")]
    NotADirector(String),
    /// An attested Pelican ad this director cannot vouch for.
    #[error("pelican ad {name:?}: {why}")]
    Pelican {
        /// Server name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A service sent an attestation itself (only peers forward attested ads).
    #[error("attested ads are taken only from peer directors")]
    AttestationFromService,
}

/// What [`Trust::plan`] leaves to do: one signature to verify, and the verdict that
/// follows a good one (a forbidden namespace is reported only once the signature is
/// known good, so a forged ad is refused as forged, whatever it claims).
#[derive(Debug)]
pub struct Pending {
    /// The signature still to verify.
    pub signature: SignatureCheck,
    then: Result<(), TrustError>,
}

impl Pending {
    fn new(signature: SignatureCheck, then: Result<(), TrustError>) -> Self {
        Self { signature, then }
    }

    /// The verdict, given how the signature check came out.
    pub fn verdict(self, verified: Result<(), SignError>) -> Result<(), TrustError> {
        verified?;
        self.then
    }
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
    pelican: PelicanKeys,
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
        Self::parse_in(&text, path.parent()).map_err(|message| TrustFileError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses trust-file TOML, reporting every bad entry at once.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_in(text, None)
    }

    /// Like [`Trust::parse`], reading `jwks_file` paths relative to `base`.
    pub fn parse_in(text: &str, base: Option<&Path>) -> Result<Self, String> {
        let file: TrustFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut servers = HashMap::new();
        let mut admins = HashMap::new();
        let mut problems = Vec::new();
        let pelican = PelicanKeys::from_entries(file.pelican, base, &mut problems);
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
            Ok(Self {
                servers,
                pelican,
                admins,
            })
        } else {
            Err(problems.join("; "))
        }
    }

    /// Adds or replaces an entry (used by tests and embedders).
    pub fn insert(&mut self, name: impl Into<String>, server: TrustedServer) {
        self.servers.insert(name.into(), server);
    }

    /// The entry for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&TrustedServer> {
        self.servers.get(name)
    }

    /// Pelican servers' keys (trust-file entries and, once set, the registry).
    pub fn pelican(&self) -> &PelicanKeys {
        &self.pelican
    }

    /// Mutable access to the Pelican keys (to attach the registry, or add entries).
    pub fn pelican_mut(&mut self) -> &mut PelicanKeys {
        &mut self.pelican
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
        let pending = self.plan(signed)?;
        let verified = pending.signature.verify();
        pending.verdict(verified)
    }

    /// Everything [`Trust::check`] decides but the signature itself: the signature check
    /// to run (alone, or with others in [`SignatureCheck::verify_many`]) and the verdict
    /// that follows a good one. An error here is final.
    pub fn plan(&self, signed: &SignedAd) -> Result<Pending, TrustError> {
        match &signed.attestation {
            Some(attestation) => self.plan_attested(signed, attestation),
            None => self.plan_signed(&signed.ad, &signed.signature),
        }
    }

    /// True if `name` is trusted as a `kind` with exactly `key` (a director asks this of
    /// itself after a reload).
    pub fn lists(&self, name: &str, kind: ServerKind, key: &VerifyingKey) -> bool {
        self.servers
            .get(name)
            .is_some_and(|t| t.kind == kind && t.key == *key)
    }

    /// A digest of everything that decides whether a signed (not attested) ad is
    /// admitted: every server's name, kind, key and namespaces, and every admin's name and
    /// key. Two trusts with the same digest admit exactly the same signed ads.
    pub fn signers_fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        // Each field with its length first: no two lists of fields write the same bytes.
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        let mut servers: Vec<_> = self.servers.iter().collect();
        servers.sort_by(|a, b| a.0.cmp(b.0));
        for (name, server) in servers {
            field(b"server");
            field(name.as_bytes());
            field(server.kind.as_str().as_bytes());
            field(server.key.as_bytes());
            let mut namespaces: Vec<&String> = server.namespaces.iter().collect();
            namespaces.sort();
            field(&(namespaces.len() as u64).to_le_bytes());
            for ns in namespaces {
                field(ns.as_bytes());
            }
        }
        let mut admins: Vec<_> = self.admins.iter().collect();
        admins.sort_by(|a, b| a.0.cmp(b.0));
        for (name, key) in admins {
            field(b"admin");
            field(name.as_bytes());
            field(key.as_bytes());
        }
        hash.finalize().into()
    }

    /// The one question both ingest and a reload ask: may `ad`, carrying `signature`, be
    /// held and routed under this trust? Known signer of the right kind, a signature that
    /// verifies with the listed key, and every namespace under an allowed prefix.
    /// A record (downtime, ban) instead needs a signature by the admin it names.
    fn plan_signed(&self, ad: &Ad, signature: &str) -> Result<Pending, TrustError> {
        if ad.kind.is_record() {
            let record = ad
                .record
                .as_ref()
                .ok_or(TrustError::MissingRecord(ad.kind))?;
            let key = self
                .admins
                .get(&record.signer)
                .ok_or_else(|| TrustError::NotAdmin(record.signer.clone()))?;
            return Ok(Pending::new(ad.signature_check(signature, key)?, Ok(())));
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
        let signature = ad.signature_check(signature, &trusted.key)?;
        let forbidden = ad.namespaces.iter().find(|ns| {
            !trusted
                .namespaces
                .iter()
                .any(|prefix| is_under_prefix(&ns.path, prefix))
        });
        let then = match forbidden {
            Some(ns) => Err(TrustError::ForbiddenNamespace {
                name: ad.name.clone(),
                namespace: ns.path.clone(),
            }),
            None => Ok(()),
        };
        Ok(Pending::new(signature, then))
    }

    /// Before checking an attested Pelican ad that no `[[pelican]]` entry covers, makes
    /// sure the registry's keys it needs are cached (fetching them if not); the check
    /// itself never waits on the network.
    pub async fn prepare(&self, signed: &SignedAd) {
        let Some(att) = &signed.attestation else {
            return;
        };
        let Some(registry) = self.pelican.registry() else {
            return;
        };
        if self.pelican.entry(&att.registry_prefix).is_some() {
            return;
        }
        registry.warm(&att.registry_prefix).await;
        if signed.ad.kind == ServerKind::Origin {
            for ns in &signed.ad.namespaces {
                registry.warm(&ns.path).await;
            }
        }
    }

    /// Plans the check of a Pelican ad: signed by a director listed here, for a registry
    /// prefix of its kind, and every namespace given to that server by a `[[pelican]]`
    /// entry or (origins without an entry) by the registry's keys as cached here.
    fn plan_attested(&self, signed: &SignedAd, att: &Attestation) -> Result<Pending, TrustError> {
        let ad = &signed.ad;
        let director = self
            .servers
            .get(&att.director)
            .filter(|s| s.kind == ServerKind::Director)
            .ok_or_else(|| TrustError::NotADirector(att.director.clone()))?;
        let signature = attest::signature_check(ad, att, &signed.signature, &director.key)?;
        Ok(Pending::new(signature, self.admits_attested(ad, att)))
    }

    /// What an attested ad needs beyond its director's signature: a registry prefix of its
    /// kind, and every namespace given to that Pelican server here or by the registry.
    fn admits_attested(&self, ad: &Ad, att: &Attestation) -> Result<(), TrustError> {
        let pelican = |why: String| TrustError::Pelican {
            name: ad.name.clone(),
            why,
        };
        let prefix = &att.registry_prefix;
        if prefix_kind(prefix) != Some(ad.kind) {
            return Err(pelican(format!(
                "registry prefix {prefix:?} is not one of a {}",
                ad.kind
            )));
        }
        if let Some(entry) = self.pelican.entry(prefix) {
            if entry.kind != ad.kind || entry.name != ad.name {
                return Err(pelican(format!(
                    "registry prefix {prefix} belongs to {} {:?} here",
                    entry.kind, entry.name
                )));
            }
            if !entry.keys.contains(&att.kid) {
                return Err(pelican(format!(
                    "key {:?} is not listed here for {prefix}",
                    att.kid
                )));
            }
            for ns in &ad.namespaces {
                if !entry
                    .namespaces
                    .iter()
                    .any(|p| is_under_prefix(&ns.path, p))
                {
                    return Err(TrustError::ForbiddenNamespace {
                        name: ad.name.clone(),
                        namespace: ns.path.clone(),
                    });
                }
            }
            return Ok(());
        }
        let Some(registry) = self.pelican.registry() else {
            return Err(pelican(format!(
                "registry prefix {prefix:?} is not in this trust file and no registry is configured"
            )));
        };
        let registered = |p: &str| registry.cached_contains(p, &att.kid);
        match registered(prefix) {
            Some(true) => {}
            Some(false) => {
                return Err(pelican(format!(
                    "key {:?} is not registered for {prefix}",
                    att.kid
                )));
            }
            None => return Err(pelican(format!("the keys of {prefix} are not known yet"))),
        }
        if ad.kind == ServerKind::Origin {
            for ns in &ad.namespaces {
                if registered(&ns.path) != Some(true) {
                    return Err(TrustError::ForbiddenNamespace {
                        name: ad.name.clone(),
                        namespace: ns.path.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}
