//! Support for the fault tests: the compose federation, load, and the checks.

pub mod checks;
pub mod docker;
pub mod load;
#[path = "../common/tmpfs.rs"]
pub mod tmpfs;

pub use checks::{await_agreement, await_no_lost_acks, wait_serving};
pub use docker::{Federation, docker_available};
pub use load::Load;
