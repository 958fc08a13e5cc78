//! A point on Earth and the great-circle distance between two points: pure data.

use serde::{Deserialize, Serialize};

/// Mean Earth radius, kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0;

/// A point on Earth, degrees. Made by [`Coord::new`] it is finite and in range; one read
/// from an ad is checked before use (`ledger::sanity`).
///
/// Equality is bit for bit (as the signed bytes are), so it is total: `Eq` holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Coord {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

impl PartialEq for Coord {
    fn eq(&self, other: &Self) -> bool {
        self.lat.to_bits() == other.lat.to_bits() && self.lon.to_bits() == other.lon.to_bits()
    }
}

impl Eq for Coord {}

impl Coord {
    /// A coordinate if both values are finite and in range.
    pub fn new(lat: f64, lon: f64) -> Option<Self> {
        let coord = Self { lat, lon };
        coord.is_valid().then_some(coord)
    }

    /// True if both values are finite and in range.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    /// Great-circle distance to `other`, kilometres (haversine, mean radius).
    pub fn distance_km(&self, other: &Coord) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}
