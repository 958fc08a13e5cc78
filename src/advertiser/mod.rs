//! The service side: sign this server's ad and send it to every director.
//!
//! With `protocol = "skein"` (the default) the ad is Skein's, Ed25519-signed; with
//! `protocol = "pelican"` it is Pelican's `OriginAdvertise` with an ES256 advertise token
//! per director (see [`pelican`]).
//!
//! A service has no store, so its instance starts at the wall-clock time of process
//! start. If its clock went backwards across a restart, directors answer `stale` until
//! the previous instance's ad expires (at most `ads.max_lifetime`); the advertiser logs
//! it loudly. Directors persist their last start and never have this problem.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

pub mod pelican;

use crate::ad::{AdStatus, NamespaceAd, SignedAd, TokenIssuer};
use crate::client::{Client, ClientError};
use crate::clock::{SharedClock, system};
use crate::config::{Protocol, ServiceConfig};
use crate::discovery::discover_directors;
use crate::identity::{AdBody, Identity};
use crate::keys::{self, KeyError};
use crate::pelican::wire::OriginAdvertise;
use pelican::PelicanSigner;

/// One director's answer to one advertisement.
#[derive(Debug)]
pub struct Delivery {
    /// The director.
    pub director: String,
    /// `accepted`, `duplicate`, `stale`, or the error.
    pub result: Result<String, ClientError>,
}

impl Delivery {
    /// True if the director now holds this ad (accepted, or already had it by forward).
    pub fn held(&self) -> bool {
        matches!(self.result.as_deref(), Ok("accepted") | Ok("duplicate"))
    }
}

/// Who signs: a Skein identity (Ed25519) or a Pelican advertise-token minter (EC).
enum Signer {
    Skein(Identity),
    Pelican(PelicanSigner),
}

/// One round's ad, in the configured protocol.
enum Payload {
    Skein(Box<SignedAd>),
    Pelican(Box<OriginAdvertise>),
}

/// Signs and sends a service's ads.
pub struct Advertiser {
    config: ServiceConfig,
    signer: Signer,
    client: Client,
    clock: SharedClock,
    /// Directors found in earlier rounds: sent to first, before discovery answers.
    known: Mutex<BTreeSet<String>>,
}

impl Advertiser {
    /// Loads the key and starts a new instance.
    pub fn new(config: ServiceConfig) -> Result<Self, AdvertiseError> {
        let clock = system();
        let signer = match config.protocol {
            Protocol::Skein => Signer::Skein(Identity::new(
                &config.name,
                config.kind,
                clock.now_ms(),
                keys::load(&config.key)?,
            )),
            Protocol::Pelican => Signer::Pelican(PelicanSigner::new(
                crate::eckey::load(&config.key)?,
                clock.now_ms(),
                &config.key,
            )?),
        };
        let client = Client::new(Duration::from_secs(5), config.ca_bundle.as_deref())?;
        let known = Mutex::new(
            config
                .directors
                .iter()
                .map(|d| crate::peers::normalize(d))
                .collect(),
        );
        Ok(Self {
            config,
            signer,
            client,
            clock,
            known,
        })
    }

    /// The public JWKS of the advertise-token key (`protocol = "pelican"` only).
    pub fn public_jwks(&self) -> Option<serde_json::Value> {
        match &self.signer {
            Signer::Pelican(signer) => Some(signer.public_jwks()),
            Signer::Skein(_) => None,
        }
    }

    /// The next signed ad (`None` with `protocol = "pelican"`: see [`Advertiser::body`]).
    pub fn sign(&self, status: AdStatus) -> Option<SignedAd> {
        match &self.signer {
            Signer::Skein(identity) => Some(self.sign_skein(identity, status)),
            Signer::Pelican(_) => None,
        }
    }

    /// The next ad as the exact JSON body POSTed (pretty-printed, fields in wire order):
    /// Skein's signed ad, or Pelican's `OriginAdvertise` (whose token is per director and
    /// sent as a header).
    pub fn body(&self, status: AdStatus) -> String {
        match self.payload(status) {
            Payload::Skein(ad) => serde_json::to_string_pretty(&ad),
            Payload::Pelican(ad) => serde_json::to_string_pretty(&ad),
        }
        .unwrap_or_default()
    }

    fn payload(&self, status: AdStatus) -> Payload {
        match &self.signer {
            Signer::Skein(identity) => Payload::Skein(Box::new(self.sign_skein(identity, status))),
            Signer::Pelican(signer) => Payload::Pelican(Box::new(signer.ad(
                &self.config,
                status,
                self.clock.now_ms(),
            ))),
        }
    }

    fn sign_skein(&self, identity: &Identity, status: AdStatus) -> SignedAd {
        let namespaces = self
            .config
            .namespaces
            .iter()
            .map(|ns| NamespaceAd {
                path: ns.path.clone(),
                caps: ns.capabilities(),
                issuers: ns
                    .all_issuers()
                    .map(|url| TokenIssuer {
                        issuer_url: url.clone(),
                        base_paths: vec![ns.path.clone()],
                    })
                    .collect(),
                generation: vec![],
            })
            .collect();
        identity.sign(
            AdBody {
                data_url: self.config.data_url.clone(),
                web_url: self.config.web_url.clone(),
                namespaces,
                status,
                location: self.config.location,
            },
            self.clock.now_ms() + self.config.lifetime.as_millis() as u64,
        )
    }

    /// Every director currently discoverable.
    pub async fn directors(&self) -> Vec<String> {
        discover_directors(
            &self.client,
            self.config.federation.as_deref(),
            &self.config.directors,
        )
        .await
    }

    /// Signs one ad and sends it to every director: at once to those already known, and
    /// to each one discovery adds as soon as it is found. Every send has its own timeout,
    /// so a dead or hung director delays nobody else.
    pub async fn advertise_once(&self, status: AdStatus) -> Vec<Delivery> {
        let ad = self.payload(status);
        let sent = Mutex::new(BTreeSet::new());
        let deliveries = Mutex::new(Vec::new());
        let first_wave: Vec<String> = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let discovered = async {
            let found = self.directors().await;
            self.send_to_new(&ad, &found, &sent, &deliveries).await;
            found
        };
        let (_, found) = futures::join!(
            self.send_to_new(&ad, &first_wave, &sent, &deliveries),
            discovered
        );
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(found);
        let deliveries = deliveries.into_inner().unwrap_or_else(|e| e.into_inner());
        for d in &deliveries {
            match &d.result {
                Ok(status) if status == "stale" => tracing::warn!(
                    director = %d.director,
                    "director holds a newer ad for this server: is another instance running, or did the clock go back?"
                ),
                Ok(status) => tracing::debug!(director = %d.director, %status, "advertised"),
                Err(error) => tracing::warn!(director = %d.director, %error, "advertise failed"),
            }
        }
        deliveries
    }

    async fn send_to_new(
        &self,
        ad: &Payload,
        directors: &[String],
        sent: &Mutex<BTreeSet<String>>,
        out: &Mutex<Vec<Delivery>>,
    ) {
        let fresh: Vec<&String> = {
            let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            directors
                .iter()
                .filter(|d| sent.insert((*d).clone()))
                .collect()
        };
        let results = join_all(fresh.iter().map(|d| self.send(d, ad))).await;
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        for (director, result) in fresh.into_iter().zip(results) {
            out.push(Delivery {
                director: director.clone(),
                result,
            });
        }
    }

    /// Sends `ad` to one director; Pelican ads get a token minted for that director.
    async fn send(&self, director: &str, ad: &Payload) -> Result<String, ClientError> {
        match (ad, &self.signer) {
            (Payload::Skein(ad), _) => self.client.register(director, ad).await.map(|r| r.status),
            (Payload::Pelican(ad), Signer::Pelican(signer)) => {
                let token = signer
                    .token(&self.config, director, self.clock.now_ms())
                    .ok_or_else(|| ClientError::Transport {
                        url: director.to_string(),
                        message: "could not mint an advertise token for this URL".into(),
                    })?;
                self.client
                    .register_pelican(director, self.config.kind, ad, &token)
                    .await
            }
            (Payload::Pelican(_), Signer::Skein(_)) => Err(ClientError::Transport {
                url: director.to_string(),
                message: "a Pelican ad needs a Pelican signer".into(),
            }),
        }
    }

    /// Advertises every `interval` until `cancel`, then withdraws (status `shutting down`).
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            let deliveries = self.advertise_once(AdStatus::Ok).await;
            let held = deliveries.iter().filter(|d| d.held()).count();
            tracing::info!(held, directors = deliveries.len(), "advertised");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
        let deliveries = self.advertise_once(AdStatus::ShuttingDown).await;
        let held = deliveries.iter().filter(|d| d.held()).count();
        tracing::info!(
            held,
            directors = deliveries.len(),
            "withdrew this server's ad"
        );
    }
}

/// Why a service could not advertise.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    /// Key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Client problem (CA bundle).
    #[error(transparent)]
    Client(#[from] ClientError),
}
