//! One director: opens its store, serves HTTP, and runs its workers until cancelled.
//!
//! The library never binds sockets or catches signals: [`Director::start`] takes a bound
//! listener and a cancellation token, so tests can run several directors in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ad::{AdStatus, ServerKind, SigningKey};
use crate::client::{Client, ClientError, Faults};
use crate::clock::{SharedClock, system};
use crate::config::DirectorConfig;
use crate::http::serve::{ServeOptions, TlsError, load_tls, serve};
use crate::http::{AppState, BudgetLimits, HttpLimits, router};
use crate::identity::{AdBody, Identity, next_start_time};
use crate::keys::{self, KeyError};
use crate::ledger::{AdLimits, Ledger};
use crate::metrics::Metrics;
use crate::peers::{PeerTiming, SelfInfo, Source};
use crate::pelican::Gate;
use crate::pelican::registry::{Registry, RegistrySettings};
use crate::probe::Probes;
use crate::reload::{self, ReloadError, ReloadReport, SelfEntry, TrustReloader};
use crate::replication::Replicator;
use crate::store::{Store, StoreError};
use crate::trust::{Trust, TrustFileError};
use crate::{discovery, expiry};

/// Why a director could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity key is missing, exposed or malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The trust file is missing or invalid.
    #[error(transparent)]
    Trust(#[from] TrustFileError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built (CA bundle).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The GeoIP database is missing or malformed (and not optional).
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(std::io::Error),
}

/// Overrides for embedding and tests.
#[derive(Default)]
pub struct Options {
    /// Wall clock (default: the system clock).
    pub clock: Option<SharedClock>,
    /// Trust (default: loaded from `federation.trust`).
    pub trust: Option<Trust>,
    /// Signing key (default: loaded from `identity.key`).
    pub key: Option<SigningKey>,
    /// Fault injection for outgoing peer requests.
    pub faults: Faults,
}

/// Settings that `reload_config` (SIGHUP) puts in force without a restart.
pub const LIVE_SETTINGS: &[&str] = &[
    "federation.trust",
    "ads.max_lifetime",
    "ads.max_clock_skew",
    "log.level",
    "log.access",
    "routing.sort",
    "routing.geoip_db",
    "routing.geoip_optional",
    "routing.trusted_proxies",
    "routing.geoip_override",
    "routing.server_location",
];

/// `base` with the [`LIVE_SETTINGS`] of `from`.
fn with_live_settings(base: &DirectorConfig, from: &DirectorConfig) -> DirectorConfig {
    let mut out = base.clone();
    out.federation.trust = from.federation.trust.clone();
    out.ads.max_lifetime = from.ads.max_lifetime;
    out.ads.max_clock_skew = from.ads.max_clock_skew;
    out.log.level = from.log.level.clone();
    out.log.access = from.log.access;
    let (routing, new) = (&mut out.routing, &from.routing);
    routing.sort = new.sort;
    routing.geoip_db = new.geoip_db.clone();
    routing.geoip_optional = new.geoip_optional;
    routing.trusted_proxies = new.trusted_proxies.clone();
    routing.geoip_overrides = new.geoip_overrides.clone();
    routing.server_locations = new.server_locations.clone();
    out
}

/// The sections of `old` that differ from `new` outside [`LIVE_SETTINGS`].
fn restart_only_changes(old: &DirectorConfig, new: &DirectorConfig) -> Vec<&'static str> {
    let live = with_live_settings(new, old);
    let mut changed = Vec::new();
    let checks: [(&'static str, bool); 12] = [
        ("name", old.name != live.name),
        ("listen", old.listen != live.listen),
        ("advertise_url", old.advertise_url != live.advertise_url),
        ("data_dir", old.data_dir != live.data_dir),
        ("tls", old.tls != live.tls),
        ("identity", old.identity != live.identity),
        ("federation", old.federation != live.federation),
        ("ads", old.ads != live.ads),
        ("peers", old.peers != live.peers),
        ("limits", old.limits != live.limits),
        ("log", old.log != live.log),
        ("routing", old.routing != live.routing),
    ];
    for (key, differs) in checks {
        if differs {
            changed.push(key);
        }
    }
    changed
}

/// What [`DirectorHandle::reload_config`] did.
#[derive(Debug)]
pub struct ConfigReload {
    /// Settings changed in the file that take effect at the next restart.
    pub needs_restart: Vec<&'static str>,
    /// `[routing]`: what is in force, or why the GeoIP database was refused (the one
    /// in force stays; the other routing settings changed).
    pub routing: Result<crate::geo::RoutingReport, crate::geo::GeoError>,
    /// The trust file reload.
    pub trust: Result<ReloadReport, ReloadError>,
}

/// Starts directors.
pub struct Director;

/// How often a failed commit (a full disk) is retried, or the last one confirmed.
const STORE_UPKEEP: Duration = Duration::from_secs(1);

/// The clock this life uses: never earlier than what the previous life recorded (its
/// start, and the last time it committed), so that a clock set back across a restart
/// cannot make this director refuse its own ad or sign ads its peers find expired.
fn floor_clock(clock: SharedClock, previous_start: Option<u64>, high_water: u64) -> SharedClock {
    let floor = previous_start.unwrap_or(0).max(high_water);
    let now = clock.now_ms();
    if floor > now {
        tracing::warn!(
            behind_ms = floor - now,
            "the clock reads earlier than this director's previous life recorded; keeping time from that record"
        );
    }
    crate::clock::Floor::new(clock, floor)
}

/// A running director.
pub struct DirectorHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    server: JoinHandle<()>,
    faults: Faults,
    forward_timeout: Duration,
    max_lifetime: Duration,
    started_in: Duration,
    reloader: Arc<TrustReloader>,
    /// The configuration in force (settings that change live are updated in it).
    config: std::sync::Mutex<DirectorConfig>,
}

impl Director {
    /// Starts a director with keys and trust from the files its config names.
    pub async fn start(
        config: DirectorConfig,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<DirectorHandle, StartError> {
        Self::start_with(config, Options::default(), listener, cancel).await
    }

    /// Starts a director with overrides.
    pub async fn start_with(
        config: DirectorConfig,
        options: Options,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<DirectorHandle, StartError> {
        let began = Instant::now();
        let clock = options.clock.unwrap_or_else(system);
        let key = match options.key {
            Some(key) => key,
            None => keys::load(&config.identity.key)?,
        };
        let mut trust = match options.trust {
            Some(trust) => trust,
            None => Trust::load(&config.federation.trust)?,
        };
        let tls = match &config.tls {
            Some(tls) => Some(load_tls(&tls.cert, &tls.key)?),
            None => None,
        };
        let addr = listener.local_addr().map_err(StartError::Listener)?;
        let geo = Arc::new(crate::geo::from_config(&config.routing)?);

        let data_dir = config.data_dir.clone();
        let now = clock.now_ms();
        let (store, damage) =
            tokio::task::spawn_blocking(move || Store::open_or_recover(&data_dir, now))
                .await
                .map_err(|e| StoreError::Database {
                    path: config.data_dir.clone(),
                    message: e.to_string(),
                })??;
        let previous_start = store.last_started_at()?;
        let clock = floor_clock(clock, previous_start, store.clock_high_water());
        let started_at = next_start_time(clock.now_ms(), previous_start);
        store.set_last_started_at(started_at)?;

        let limits = AdLimits {
            max_lifetime: config.ads.max_lifetime,
            max_clock_skew: config.ads.max_clock_skew,
        };
        if config.pelican.use_registry {
            let registry_client = Client::new(
                config.pelican.registry_timeout,
                config.federation.ca_bundle.as_deref(),
            )?;
            let settings = RegistrySettings {
                url: config.pelican.registry_url.clone(),
                discovery_url: config.federation.discovery_url.clone(),
                key_ttl: config.pelican.key_ttl,
                refresh_min_interval: config.pelican.refresh_min_interval,
                burst: crate::pelican::registry::DEFAULT_BURST,
                rate_per_sec: crate::pelican::registry::DEFAULT_RATE_PER_SEC,
            };
            trust.pelican_mut().set_registry(Registry::new(
                registry_client,
                settings,
                clock.clone(),
            ));
        }
        let gate = Arc::new(Gate::new(
            &config.name,
            key.clone(),
            trust.pelican().clone(),
            clock.clone(),
            config.pelican.token_leeway.as_secs(),
            config
                .pelican
                .audiences
                .iter()
                .cloned()
                .chain([config.advertise_url.clone()])
                .chain(config.federation.discovery_url.clone())
                .collect(),
        ));
        let (ledger, quarantined) = Ledger::open(store.clone(), trust, clock.clone(), limits)?;
        if quarantined > 0 {
            tracing::error!(
                quarantined,
                "damaged ads were moved to quarantine; peers will resend them"
            );
        }
        let ledger = Arc::new(ledger);
        let metrics = Arc::new(Metrics::default());
        let reloader = Arc::new(TrustReloader::new(
            ledger.clone(),
            metrics.clone(),
            SelfEntry {
                name: config.name.clone(),
                key: key.verifying_key(),
            },
            config.federation.trust.clone(),
        ));
        // Ads stored under an older trust file must not route under this one.
        reloader.check_held().await?;
        let identity = Arc::new(Identity::new(
            &config.name,
            ServerKind::Director,
            started_at,
            key,
        ));
        let client = Client::new(
            config.peers.forward_timeout,
            config.federation.ca_bundle.as_deref(),
        )?
        .with_faults(options.faults.clone());
        let tracker = TaskTracker::new();
        let workers = cancel.child_token();
        let replicator = Replicator::new(
            ledger.clone(),
            SelfInfo {
                url: config.advertise_url.clone(),
                uuid: identity.instance().uuid,
                name: config.name.clone(),
            },
            PeerTiming {
                poll_interval: config.peers.poll_interval,
                max_candidates: config.peers.max_candidates,
                forget_after: config.peers.forget_after,
                forward_delay: config.peers.forward_delay,
            },
            client,
            metrics.clone(),
            tracker.clone(),
            workers.clone(),
        );
        let peers = replicator.peers().clone();
        reloader.attach_peers(peers.clone());
        for url in &config.federation.directors {
            peers.add(url, Source::Configured);
        }
        if let Some(damage) = damage.or_else(|| store.damage()) {
            // Every ad expires within `ads.max_lifetime` of its receipt: that long after
            // the damage, the servers have sent again all that the lost store held.
            let found_at = store.damage_found_at().unwrap_or(now);
            let renewed_at = found_at.saturating_add(config.ads.max_lifetime.as_millis() as u64);
            let wait = renewed_at.saturating_sub(clock.now_ms());
            if wait == 0 {
                tracing::info!(
                    found_at,
                    "the store's recorded damage is older than ads.max_lifetime: every server has advertised again since"
                );
                ledger.forget_damage().await;
            } else {
                let peers_known = !peers.urls().is_empty() || !peers.candidates().is_empty();
                ledger.recovery().damaged(damage, peers_known);
                tracker.spawn(
                    ledger
                        .clone()
                        .renew_after(Duration::from_millis(wait), workers.clone()),
                );
            }
        }
        let probes = Probes::start(
            &config.health,
            &config.presence,
            config.federation.ca_bundle.as_deref(),
            ledger.clone(),
            &tracker,
            workers.clone(),
        )?;
        let state = Arc::new(AppState {
            name: config.name.clone(),
            advertise_url: peers.self_url().to_string(),
            replicator: replicator.clone(),
            ledger: ledger.clone(),
            peers: peers.clone(),
            metrics: metrics.clone(),
            identity: identity.clone(),
            signals: probes.clone(),
            probes,
            geo: geo.clone(),
            ready: AtomicBool::new(true),
            pelican: gate,
            access_log: AtomicBool::new(config.log.access),
        });
        let limits = HttpLimits {
            max_body: config.limits.max_body as usize,
            request_timeout: config.limits.request_timeout,
            budgets: BudgetLimits {
                redirect: config.limits.max_concurrent,
                ingest: config.limits.max_concurrent_ingest,
                bulk: config.limits.max_concurrent_bulk,
                ingest_per_client: config.limits.max_ingest_per_client,
            },
        };
        let app = router(state.clone(), limits);
        let serve_options = ServeOptions {
            tls,
            header_timeout: config.limits.request_timeout,
            idle_timeout: config.limits.idle_timeout,
            drain_timeout: config.limits.request_timeout + Duration::from_secs(1),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        };
        if config.limits.idle_timeout <= crate::client::POOL_IDLE_TIMEOUT {
            tracing::warn!(
                idle_timeout = ?config.limits.idle_timeout,
                client_pool_idle = ?crate::client::POOL_IDLE_TIMEOUT,
                "limits.idle_timeout is not longer than Skein clients keep idle connections; \
                 some requests will meet a closing connection and be retried"
            );
        }
        let server = tokio::spawn(serve(listener, app, serve_options, cancel.clone()));
        let started_in = began.elapsed();
        tracing::info!(
            name = %config.name,
            %addr,
            advertise_url = %state.advertise_url,
            ads = ledger.view().len(),
            peers = peers.urls().len(),
            started_in_ms = started_in.as_millis() as u64,
            "director ready"
        );

        tracker.spawn(expiry::run(
            ledger.clone(),
            metrics.clone(),
            config.ads.prune_interval,
            workers.clone(),
        ));
        tracker.spawn(crate::store::upkeep::run(
            store.clone(),
            STORE_UPKEEP,
            workers.clone(),
        ));
        tracker.spawn(crate::geo::servers::run(
            geo,
            ledger.clone(),
            workers.clone(),
            config.routing.locate_interval,
            config.routing.dns_refresh,
        ));
        tracker.spawn(reload::watch(
            reloader.clone(),
            config.federation.trust_poll_interval,
            workers.clone(),
        ));
        tracker.spawn(discovery::run(
            replicator.clone(),
            config.federation.discovery_url.clone(),
            config.peers.poll_interval,
            workers.clone(),
        ));
        let interval = config.peers.announce_interval;
        let handle = DirectorHandle {
            addr,
            state,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            server,
            faults: options.faults,
            forward_timeout: config.peers.forward_timeout,
            max_lifetime: config.ads.max_lifetime,
            started_in,
            reloader,
            config: std::sync::Mutex::new(config),
        };
        handle.announce(AdStatus::Ok).await;
        let announcer = handle.announcer();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = workers.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {
                        announcer.announce(AdStatus::Ok).await;
                    }
                }
            }
        });
        Ok(handle)
    }
}

/// Signs and spreads this director's own ad.
#[derive(Clone)]
struct Announcer {
    state: Arc<AppState>,
    max_lifetime: Duration,
}

impl Announcer {
    async fn announce(&self, status: AdStatus) -> Option<crate::ad::SignedAd> {
        let now = self.state.ledger.clock().now_ms();
        let signed = self.state.identity.sign(
            AdBody {
                data_url: self.state.advertise_url.clone(),
                web_url: self.state.advertise_url.clone(),
                namespaces: vec![],
                status,
                location: None,
            },
            now + self.max_lifetime.as_millis() as u64,
        );
        match self.state.replicator.accept(signed.clone(), None).await {
            Ok(_) => Some(signed),
            Err(error) => {
                tracing::error!(%error, "could not accept this director's own ad (is it in the trust file as a director?)");
                None
            }
        }
    }
}

impl DirectorHandle {
    fn announcer(&self) -> Announcer {
        Announcer {
            state: self.state.clone(),
            max_lifetime: self.max_lifetime,
        }
    }

    async fn announce(&self, status: AdStatus) -> Option<crate::ad::SignedAd> {
        self.announcer().announce(status).await
    }

    /// Re-reads the trust file and puts it in force: ads it no longer admits stop
    /// routing at once and leave the store. A file that does not parse is refused and
    /// the trust in force stays. (`skein serve` calls this on SIGHUP.)
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload().await
    }

    /// Applies a re-read configuration: the settings that can change live take effect
    /// (see [`LIVE_SETTINGS`]; the GeoIP database is read again), the others are kept
    /// and returned by key (they need a restart); then the trust file it names is
    /// reloaded. A part that fails (a bad trust file, a bad GeoIP file) keeps what was in
    /// force for that part only.
    pub async fn reload_config(&self, new: DirectorConfig) -> ConfigReload {
        let needs_restart = {
            let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
            let needs_restart = restart_only_changes(&config, &new);
            *config = with_live_settings(&config, &new);
            self.state
                .access_log
                .store(new.log.access, Ordering::Relaxed);
            needs_restart
        };
        for key in &needs_restart {
            tracing::warn!(
                key,
                "setting changed in the config file; it takes effect at the next restart"
            );
        }
        self.state.ledger.set_limits(AdLimits {
            max_lifetime: new.ads.max_lifetime,
            max_clock_skew: new.ads.max_clock_skew,
        });
        let routing = self.state.geo.apply(&new.routing).await;
        self.reloader.set_path(new.federation.trust);
        ConfigReload {
            needs_restart,
            routing,
            trust: self.reload().await,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The advertise URL.
    pub fn url(&self) -> &str {
        &self.state.advertise_url
    }

    /// Handler state (view, peers, metrics) for inspection.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Fault injection for this director's outgoing peer requests.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Time from `start` being called to serving with the view loaded.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Graceful stop: withdraw this director's ad from its peers (and from configured or
    /// discovered directors not verified yet), all at once and each for at most
    /// `peers.forward_timeout`; stop accepting, drain requests, stop workers, flush the
    /// store.
    pub async fn shutdown(self) {
        if let Some(withdrawal) = self.announce(AdStatus::ShuttingDown).await {
            let client = self.state.replicator.client().clone();
            let from = self.state.advertise_url.clone();
            let sends = self
                .state
                .peers
                .withdrawal_targets()
                .into_iter()
                .map(|peer| {
                    let client = client.clone();
                    let ad = withdrawal.clone();
                    let from = from.clone();
                    async move {
                        tokio::time::timeout(
                            self.forward_timeout,
                            client.forward(&peer, &ad, &from),
                        )
                        .await
                    }
                });
            join_all(sends).await;
        }
        self.state.ready.store(false, Ordering::SeqCst);
        self.cancel.cancel();
        let _ = self.server.await;
        self.tracker.close();
        self.tracker.wait().await;
        if let Err(error) = self.state.ledger.store().flush_blocking() {
            tracing::error!(%error, "final flush failed");
        }
    }

    /// Abrupt stop, as close to `kill -9` as one process allows: no withdrawal ad and no
    /// final flush (acknowledged ads are already durable). Connections are closed so
    /// that the store is released and the director can be restarted in this process.
    pub async fn crash(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        self.tracker.close();
        self.tracker.wait().await;
    }
}
