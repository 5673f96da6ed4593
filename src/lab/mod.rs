//! The embedded lab: robot computers from network namespaces.

pub mod probe;
pub mod testbed;
