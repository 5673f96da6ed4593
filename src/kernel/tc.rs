//! tc over rtnetlink: a clsact qdisc and direct-action BPF filters on ingress.

use super::rtnl::Handle;
use crate::kernel::netlink::Wire;
use crate::kernel::Result;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::os::fd::{AsRawFd, BorrowedFd};

/// ETH_P_ALL in network byte order, as tc wants the filter protocol.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();

fn ingress() -> TcHandle {
    TcHandle {
        major: TcHandle::CLSACT.major,
        minor: TcHandle::MIN_INGRESS,
    }
}

/// A BPF filter on a link's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub prio: u16,
    pub name: String,
}

impl<W: Wire> Handle<W> {
    /// Adds the clsact qdisc to link `index` unless it has one.
    pub fn ensure_clsact(&mut self, index: u32) -> Result<()> {
        let mut m = TcMessage::default();
        m.header = TcHeader {
            index: index as i32,
            handle: TcHandle {
                major: 0xffff,
                minor: 0,
            },
            parent: TcHandle::CLSACT,
            ..m.header
        };
        m.attributes.push(TcAttribute::Kind("clsact".into()));
        match self.request(
            &format!("add clsact qdisc to link #{index}"),
            RouteNetlinkMessage::NewQueueDiscipline(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.is_exists() => Ok(()),
            r => r,
        }
    }

    /// Puts the BPF program `prog` as a direct-action filter on link `index`'s
    /// ingress at priority `prio`, replacing what had that priority.
    pub fn attach_ingress_bpf(
        &mut self,
        index: u32,
        prio: u16,
        prog: BorrowedFd<'_>,
        name: &str,
    ) -> Result<()> {
        let mut m = TcMessage::default();
        m.header = TcHeader {
            index: index as i32,
            handle: TcHandle { major: 0, minor: 1 },
            parent: ingress(),
            info: ((prio as u32) << 16) | ETH_P_ALL_BE as u32,
            ..m.header
        };
        m.attributes.push(TcAttribute::Kind("bpf".into()));
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]));
        self.request(
            &format!("attach BPF filter {name} to link #{index}"),
            RouteNetlinkMessage::NewTrafficFilter(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// The BPF filters on link `index`'s ingress.
    pub fn ingress_bpf_filters(&mut self, index: u32) -> Result<Vec<BpfFilter>> {
        let mut m = TcMessage::default();
        m.header = TcHeader {
            index: index as i32,
            parent: ingress(),
            ..m.header
        };
        let answers = match self.dump(
            &format!("list filters of link #{index}"),
            RouteNetlinkMessage::GetTrafficFilter(m),
        ) {
            Ok(a) => a,
            // no clsact qdisc: no filters
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                return Ok(vec![])
            }
            Err(e) => return Err(e),
        };
        let mut out = vec![];
        for a in answers {
            let RouteNetlinkMessage::NewTrafficFilter(f) = a else {
                continue;
            };
            let mut name = None;
            for attr in &f.attributes {
                if let TcAttribute::Options(opts) = attr {
                    for o in opts {
                        if let TcOption::Bpf(TcFilterBpfOption::ProgName(n)) = o {
                            name = Some(n.clone());
                        }
                    }
                }
            }
            if let Some(name) = name {
                let prio = (f.header.info >> 16) as u16;
                if !out.iter().any(|b: &BpfFilter| b.prio == prio) {
                    out.push(BpfFilter { prio, name });
                }
            }
        }
        Ok(out)
    }

    /// Removes the ingress filter of priority `prio` from link `index`.
    pub fn delete_ingress_filter(&mut self, index: u32, prio: u16) -> Result<bool> {
        let mut m = TcMessage::default();
        m.header = TcHeader {
            index: index as i32,
            parent: ingress(),
            info: ((prio as u32) << 16) | ETH_P_ALL_BE as u32,
            ..m.header
        };
        match self.request(
            &format!("delete filter {prio} of link #{index}"),
            RouteNetlinkMessage::DelTrafficFilter(m),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
