//! The embedded lab: robot computers from network namespaces.

pub mod interrupt;
pub mod matrix;
pub mod probe;
pub mod probers;
pub mod run;
pub mod spdp_probe;
pub mod testbed;
