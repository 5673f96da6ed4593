//! ros2-cni: a chained CNI plugin that gives opted-in pods a NAT-free
//! interface on the robot LAN, and a node agent that routes RTPS multicast.

pub mod agent;
pub mod api;
pub mod cni;
pub mod config;
pub mod dataplane;
pub mod doctor;
pub mod fastpath;
pub mod faults;
pub mod firewall;
pub mod forward;
pub mod graph;
pub mod ifname;
pub mod install;
pub mod ipam;
pub mod kernel;
pub mod lab;
pub mod logging;
pub mod mroute;
pub mod plugin;
pub mod relay;
pub mod rtps;
pub mod sdnotify;
pub mod zenoh;
