//! The kernel layer against a real kernel, inside a node namespace of a
//! testbed: what the kernel says about a refused request reaches the error.

use crate::common::*;
use ros2_cni::kernel::netns::Netns;
use ros2_cni::kernel::rtnl::Handle;
use std::net::Ipv4Addr;

#[test]
fn a_refused_request_carries_the_kernels_own_explanation() {
    let tb = bed(1);
    let ns = Netns::open(format!("/var/run/netns/{}", tb.node(1).ns)).unwrap();
    let mut h = Handle::open_in(&ns).unwrap();
    h.create_bridge("r2tx0", [0x02, 0, 0, 0, 0x7e, 0x01])
        .unwrap();
    let link = h.link_by_name("r2tx0").unwrap().expect("the new bridge");
    assert!(!link.is_up());
    // a route through a link that is down: iproute2 prints the same text as
    // "Error: Device for nexthop is not up."
    let e = h
        .replace_route(Ipv4Addr::new(10, 9, 0, 0), 24, link.index)
        .unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.errno(), Some(libc::ENETDOWN), "{e}");
    let said = e.detail().expect("the kernel's extended ack");
    assert!(said.contains("not up"), "{said}");
    assert!(e.to_string().contains(said), "{e}");
    // and the link by name as well as by number
    assert_eq!(
        e.op().unwrap(),
        format!("add route 10.9.0.0/24 dev r2tx0 (#{})", link.index)
    );
}
