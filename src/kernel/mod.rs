//! The kernel layer: everything that talks to the kernel, in small modules
//! that each own one kind of kernel object and know nothing of pods, the
//! agent or the plugin, and what every kernel access shares. Nothing here
//! imports a module above it.
//!
//! - [`netlink`]: the one netlink transport (socket per protocol, optionally
//!   opened inside a network namespace, sequence numbers, acks, errors,
//!   multi-part dumps, nfnetlink batches, a receive timeout on every socket),
//!   unit-tested against a fake wire that [`rtnl`] and [`nft`] take too.
//! - [`rtnl`]: links, addresses, routes, neighbours and devconf over
//!   rtnetlink (`Handle`); [`tc`]: clsact qdiscs and BPF filters on it.
//! - [`nft`]: nf_tables tables, sets, chains, rules and elements (the
//!   attribute encoder and decoder; no `nft` binary).
//! - [`mroute`]: IPv4 multicast routing (MRT_* on a raw IGMP socket) behind
//!   the `Mroute` trait, whose fake lives with the routing logic in
//!   `crate::mroute`.
//! - [`bpf`]: loading BPF programs (bpf(BPF_PROG_LOAD)).
//! - [`packet`]: packet sockets (open, bind, the RTPS BPF filter);
//!   [`mmsg`]: batched datagram calls (recvmmsg, sendmmsg) and the
//!   accounting of a partial sendmmsg.
//! - [`netns`]: network namespaces by path, and running code inside one on a
//!   thread of its own; [`sysctl`]: /proc/sys reads.
//! - [`Error`]: the one error of a kernel operation. It keeps what was asked
//!   ("add route 10.0.0.5/32 dev #7"; rtnetlink and tc add the link's name
//!   on failure), the errno the kernel answered and the kernel's extended-ack
//!   text if it sent one, so callers decide on [`Error::is_not_found`] /
//!   [`Error::is_exists`] / [`Error::errno`], never on message text.

pub mod bpf;
pub mod mmsg;
pub mod mroute;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod packet;
pub mod rtnl;
pub mod sysctl;
pub mod tc;

use std::io;
use std::time::Duration;

/// A failed kernel operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel answered the request with an error (an errno), and, where
    /// the kernel explained it (netlink extended ack), its message.
    #[error("{op}: {source}{}{}", said(detail), missing_feature(op, source.raw_os_error()))]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
        detail: Option<String>,
    },
    /// The socket itself failed (open, bind, send, receive).
    #[error("{op}: netlink socket: {source}")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer within the socket's receive timeout.
    #[error("{op}: no answer from the kernel within {}s", timeout.as_secs_f32())]
    Timeout { op: String, timeout: Duration },
    /// The kernel's answer could not be decoded.
    #[error("{op}: cannot decode the kernel's answer: {msg}")]
    Decode { op: String, msg: String },
    /// A network namespace could not be opened or entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What a refusal of an operation the kernel does not support means for
/// ros2-cni: the kernel option missing, what ros2-cni does without it, and
/// what the user loses. Matched on the operation and the errno the kernel
/// answers for an unknown link kind, qdisc, filter or nf_tables family.
fn missing_feature(op: &str, errno: Option<i32>) -> String {
    let unsupported = matches!(
        errno,
        Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) | Some(libc::ENOENT)
    );
    if !unsupported {
        return String::new();
    }
    let hint = if op.starts_with("create bridge") && errno == Some(libc::EOPNOTSUPP) {
        "this kernel has no bridge (CONFIG_BRIDGE): routed mode cannot run here; macvlan mode (wired LANs) needs no bridge"
    } else if op.starts_with("create veth") && errno == Some(libc::EOPNOTSUPP) {
        "this kernel has no veth pairs (CONFIG_VETH): routed mode cannot run here; macvlan mode (wired LANs) needs none"
    } else if op.starts_with("create macvlan") && errno == Some(libc::EOPNOTSUPP) {
        "this kernel has no macvlan (CONFIG_MACVLAN): macvlan mode cannot run here; use routed mode"
    } else if op.starts_with("add clsact qdisc") {
        "this kernel has no clsact qdisc (CONFIG_NET_SCH_INGRESS): no fast path; pods use the normal routed path, complete but slower"
    } else if op.starts_with("attach BPF filter") {
        "this kernel has no tc BPF classifier (CONFIG_NET_CLS_BPF) or refuses BPF (CONFIG_BPF_SYSCALL, CAP_BPF): no fast path; pods use the normal routed path, complete but slower"
    } else if op.starts_with("nftables") && errno == Some(libc::EAFNOSUPPORT) {
        "this kernel lacks an nf_tables family ros2-cni needs (CONFIG_NF_TABLES_BRIDGE for the pods' anti-spoofing table, CONFIG_NF_TABLES_IPV4 for the node's tables)"
    } else {
        return String::new();
    };
    format!(" ({hint})")
}

/// The kernel's own explanation, as iproute2 shows it ("Error: ...").
fn said(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!("; the kernel says: {d}"))
        .unwrap_or_default()
}

impl Error {
    /// The kernel's answer: its errno and its extended-ack message, if any.
    pub(crate) fn kernel(op: &str, errno: i32, detail: Option<String>) -> Error {
        Error::Kernel {
            op: op.to_owned(),
            source: io::Error::from_raw_os_error(errno),
            detail,
        }
    }

    /// The kernel's own explanation of its answer (netlink extended ack).
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Kernel { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The errno the kernel answered, if this is the kernel's answer.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The object asked for (link, route, neighbour, table, set, element) is
    /// not there.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
        )
    }

    /// The object to create is already there.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The same error with its operation's text rewritten by `f`.
    pub(crate) fn map_op(mut self, f: impl FnOnce(&str) -> String) -> Error {
        match &mut self {
            Error::Kernel { op, .. }
            | Error::Socket { op, .. }
            | Error::Timeout { op, .. }
            | Error::Decode { op, .. } => *op = f(op),
            Error::Netns { .. } => {}
        }
        self
    }

    /// What was asked of the kernel, when known.
    pub fn op(&self) -> Option<&str> {
        match self {
            Error::Kernel { op, .. }
            | Error::Socket { op, .. }
            | Error::Timeout { op, .. }
            | Error::Decode { op, .. } => Some(op),
            Error::Netns { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_helpers_read_only_the_kernels_answer() {
        let e = Error::kernel("delete route 10.0.0.5/32 dev #7", libc::ESRCH, None);
        assert_eq!(e.errno(), Some(libc::ESRCH));
        assert!(e.is_not_found());
        assert!(!e.is_exists());
        assert_eq!(e.op(), Some("delete route 10.0.0.5/32 dev #7"));
        assert!(e
            .to_string()
            .starts_with("delete route 10.0.0.5/32 dev #7: "));
        assert!(Error::kernel("create bridge b", libc::EEXIST, None).is_exists());
        // a socket failing with ENOENT is no answer about the object
        let s = Error::Socket {
            op: "open".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(s.errno(), None);
        assert!(!s.is_not_found());
    }

    #[test]
    fn a_missing_kernel_feature_is_named_with_what_it_costs() {
        for (op, errno, option, loses) in [
            (
                "create bridge ros2br0",
                libc::EOPNOTSUPP,
                "CONFIG_BRIDGE",
                "routed mode",
            ),
            (
                "create veth r2c1 (peer ros0)",
                libc::EOPNOTSUPP,
                "CONFIG_VETH",
                "routed mode",
            ),
            (
                "create macvlan ros2shim",
                libc::EOPNOTSUPP,
                "CONFIG_MACVLAN",
                "macvlan mode",
            ),
            (
                "attach BPF filter r2c_lan to link #2",
                libc::ENOENT,
                "CONFIG_NET_CLS_BPF",
                "no fast path",
            ),
            (
                "add clsact qdisc to link #2",
                libc::EOPNOTSUPP,
                "CONFIG_NET_SCH_INGRESS",
                "no fast path",
            ),
            (
                "nftables apply table ros2_cni",
                libc::EAFNOSUPPORT,
                "CONFIG_NF_TABLES_BRIDGE",
                "anti-spoofing",
            ),
        ] {
            let m = Error::kernel(op, errno, None).to_string();
            assert!(m.contains(option) && m.contains(loses), "{m}");
        }
        // other answers are not blamed on the kernel's build
        for (op, errno) in [
            ("create bridge ros2br0", libc::EEXIST),
            ("create bridge ros2br0", libc::EPERM),
            ("delete route 10.0.0.5/32 dev #7", libc::ENOENT),
        ] {
            assert!(!Error::kernel(op, errno, None)
                .to_string()
                .contains("CONFIG_"));
        }
    }
}
