//! Tests on real network namespaces: robot computers, a LAN switch, pods and a
//! laptop, with the real `ros2-cni` binary run as a container runtime runs it.
//! They need root (CI runs as root).

mod addon;
mod agent;
mod agent_faults;
mod antispoof;
mod common;
mod dds;
mod doctor;
mod domains;
mod hostile;
mod image;
mod install;
mod kernel;
mod lab;
mod libcni;
mod limits;
mod macvlan;
mod plugin;
mod prometheus;
mod relay;
mod reliability;
mod rtps;
mod zenoh;
