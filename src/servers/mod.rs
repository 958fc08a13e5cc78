//! Small real origin and cache servers for the demo federation and tests.

pub mod cache;
pub mod origin;
