//! Pelican compatibility: Pelican servers' own advertisements, on the wire and verified.

pub mod wire;
