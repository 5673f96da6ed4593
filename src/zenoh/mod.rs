//! Zenoh routers for rmw_zenoh's stock layout (docs/zenoh.md).
//!
//! rmw_zenoh makes every ROS process a peer that connects to a router at
//! `tcp/localhost:7447`, listens on `tcp/localhost:0`, and connects directly
//! to the other peers the router gossips about. In a pod, localhost is the
//! pod's own: no router is there, and a peer of another pod is unreachable
//! at the `127.0.0.1` address it advertises.
//!
//! A node router reached from every pod (a DNAT of `localhost:7447`) is not
//! enough: Zenoh (1.x) puts all the peers of a router into one region and
//! assumes they are connected to each other, so it never forwards between
//! two peers of the same node (measured: 0 samples between two pods of one
//! node, whatever `peers_failover_brokering` and gossip say). So ros2-cni
//! gives each opted-in pod what a ROS computer has: a router of its own at
//! the pod's `localhost:7447` ([`routers`], run by the agent inside the
//! pod's network namespace), which connects to the node's router
//! (`zenohRouter`); the node routers connect to each other and to the LAN
//! hosts' routers listed as `peers` ([`node_router_config`]). Peers of one
//! pod reach each other directly, as on one computer; everything else goes
//! router to router.

pub mod routers;
pub mod scout;

use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Where rmw_zenoh's sessions look for their router: `tcp/localhost:7447`.
pub const POD_ROUTER_PORT: u16 = 7447;

/// The configuration of the router in a pod: listens on the pod's loopback
/// only (not on `ros0`: the pod's router is the pod's, as a computer's is
/// the computer's), connects to the node's router, no multicast scouting
/// (the node routers know each other by configuration). `loopback6`: the
/// pod's `lo` has `::1` (rmw_zenoh resolves `localhost`, which may give it).
pub fn pod_router_config(node_router: SocketAddrV4, loopback6: bool) -> Value {
    let mut listen = vec![format!("tcp/127.0.0.1:{POD_ROUTER_PORT}")];
    if loopback6 {
        listen.push(format!("tcp/[::1]:{POD_ROUTER_PORT}"));
    }
    json!({
        "mode": "router",
        "listen": { "endpoints": listen },
        "connect": { "endpoints": [format!("tcp/{node_router}")] },
        "scouting": {
            "multicast": { "enabled": false },
            "gossip": { "enabled": true },
        },
    })
}

/// The configuration of a node's router: listens on `port` on every
/// address (pods' routers reach it at the node's LAN address, the other
/// nodes' routers too), connects to the routers of `peers` (the other
/// nodes' addresses and the configured `peers`: LAN hosts running a
/// router), no multicast scouting.
pub fn node_router_config(port: u16, peers: &[Ipv4Addr]) -> Value {
    let connect: Vec<String> = peers.iter().map(|p| format!("tcp/{p}:{port}")).collect();
    json!({
        "mode": "router",
        "listen": { "endpoints": [format!("tcp/0.0.0.0:{port}")] },
        "connect": { "endpoints": connect },
        "scouting": {
            "multicast": { "enabled": false },
            "gossip": { "enabled": true },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_router_listens_on_its_loopback_and_connects_to_the_node() {
        let node = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 11), 7448);
        let c = pod_router_config(node, false);
        assert_eq!(c["mode"], "router");
        assert_eq!(c["listen"]["endpoints"], json!(["tcp/127.0.0.1:7447"]));
        assert_eq!(c["connect"]["endpoints"], json!(["tcp/192.168.1.11:7448"]));
        assert_eq!(c["scouting"]["multicast"]["enabled"], false);
        let c6 = pod_router_config(node, true);
        assert_eq!(
            c6["listen"]["endpoints"],
            json!(["tcp/127.0.0.1:7447", "tcp/[::1]:7447"])
        );
    }

    #[test]
    fn a_nodes_router_connects_to_every_peer_on_the_same_port() {
        let c = node_router_config(
            7447,
            &[Ipv4Addr::new(192, 168, 1, 12), Ipv4Addr::new(10, 0, 0, 5)],
        );
        assert_eq!(c["listen"]["endpoints"], json!(["tcp/0.0.0.0:7447"]));
        assert_eq!(
            c["connect"]["endpoints"],
            json!(["tcp/192.168.1.12:7447", "tcp/10.0.0.5:7447"])
        );
        assert_eq!(
            node_router_config(7447, &[])["connect"]["endpoints"],
            json!([])
        );
    }
}
