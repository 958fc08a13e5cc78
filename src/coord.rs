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

    /// Great-circle distance to `other`, kilometres (mean radius).
    pub fn distance_km(&self, other: &Coord) -> f64 {
        self.point().distance_km(&other.point())
    }

    /// The coordinate as a point on the unit sphere.
    pub fn point(&self) -> Point {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        Point {
            x: lat.cos() * lon.cos(),
            y: lat.cos() * lon.sin(),
            z: lat.sin(),
        }
    }
}

/// A coordinate on the unit sphere, worked out once per place: the distance between two
/// points then costs one square root and one arcsine, where from degrees it costs four
/// more sines and cosines (each redirect measures every candidate's distance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    x: f64,
    y: f64,
    z: f64,
}

impl Point {
    /// Great-circle distance to `other`, kilometres (mean radius): the arc spanned by the
    /// chord between the two points, accurate near and far.
    pub fn distance_km(&self, other: &Point) -> f64 {
        let (dx, dy, dz) = (self.x - other.x, self.y - other.y, self.z - other.z);
        let chord = (dx * dx + dy * dy + dz * dz).sqrt();
        2.0 * EARTH_RADIUS_KM * (chord / 2.0).min(1.0).asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The haversine formula, the textbook reference.
    fn haversine_km(a: &Coord, b: &Coord) -> f64 {
        let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
        let dl = (b.lon - a.lon).to_radians();
        let h = ((p2 - p1) / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }

    #[test]
    fn the_chord_distance_is_the_haversine_distance() {
        let mut places = vec![
            (0.0, 0.0),
            (90.0, 0.0),
            (-90.0, 180.0),
            (0.0, 180.0),
            (0.0, -180.0),
        ];
        for i in 0..200 {
            places.push((
                f64::from(i * 37 % 181) - 90.0,
                f64::from(i * 97 % 361) - 180.0,
            ));
        }
        for a in &places {
            for b in &places {
                let (a, b) = (Coord::new(a.0, a.1).unwrap(), Coord::new(b.0, b.1).unwrap());
                let (chord, reference) = (a.distance_km(&b), haversine_km(&a, &b));
                assert!(
                    (chord - reference).abs() < 1e-6,
                    "{a:?} {b:?}: {chord} vs {reference}"
                );
            }
        }
        let here = Coord::new(43.07, -89.40).unwrap();
        assert_eq!(here.distance_km(&here), 0.0);
    }
}
