//! Skein: a highly-available director cluster for Pelican-style data federations.
//!
//! Start with [`director::Director`] (one director) and `docs/replication.md` (the cluster).

pub mod ad;
pub mod advertiser;
pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
pub mod coord;
pub mod director;
pub mod discovery;
pub mod eckey;
pub mod expiry;
#[doc(hidden)]
pub mod fixtures;
pub mod flight;
pub mod geo;
pub mod http;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod names;
pub mod paths;
pub mod peers;
pub mod pelican;
pub mod preflight;
pub mod probe;
pub mod reload;
pub mod replication;
pub mod route_class;
pub mod routing;
pub mod scitokens;
pub mod servers;
pub mod store;
pub mod striped;
pub mod telemetry;
pub mod trust;
pub mod wire;
