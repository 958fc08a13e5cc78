//! Pelican compatibility: Pelican servers' own advertisements, verified as Pelican's
//! director verifies them, attested for the cluster, and answered as Pelican answers.

pub mod attest;
pub mod convert;
pub mod gate;
pub mod jwks;
pub mod keys;
pub mod registry;
pub mod token;
pub mod wire;

pub use attest::{Attestation, KeySource};
pub use gate::{Gate, Refusal};
pub use keys::{PelicanEntry, PelicanKeys};
