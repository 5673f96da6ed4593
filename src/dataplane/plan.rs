//! Pure plans: what ADD and DEL will do, computed from what was read (the
//! request, the record, the kernel's state) before anything changes. No
//! kernel access here, so every plan is unit-tested without root.

use super::{Dataplane, Kernel, Result, Step};
use crate::config::Config;
use crate::kernel::rtnl::Handle;

/// Work ADD does before the attachment's own steps. None of it is undone on
/// failure: a leftover stays removed, and node-wide state serves every pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepare {
    /// A leftover pod interface (our MAC, no live attachment holds it),
    /// left by a DEL whose link deletion the agent has not run yet: deleted
    /// by index.
    RemovePodLink { index: u32 },
    /// A host end without a record, by this attachment's name (same
    /// cause): deleted by index.
    RemoveHostLink { name: String, index: u32 },
    /// The node bridge and the sysctls routed mode relies on, if missing.
    Bridge,
    /// The node's macvlan shim, if missing.
    Shim,
}

impl Prepare {
    pub fn apply(
        &self,
        k: &mut Kernel,
        pod: &mut Handle,
        cfg: &Config,
        uplink: &str,
    ) -> Result<()> {
        match self {
            Prepare::RemovePodLink { index } => {
                tracing::warn!(
                    "removing a leftover {} from an earlier attachment",
                    cfg.if_name
                );
                Ok(pod.delete_link(*index)?)
            }
            Prepare::RemoveHostLink { name, index } => {
                tracing::warn!("removing leftover link {name} from an earlier attachment");
                Ok(k.node()?.delete_link(*index)?)
            }
            Prepare::Bridge => super::routed::ensure_node(k, cfg, uplink),
            Prepare::Shim => super::macvlan::ensure_node(k, uplink),
        }
    }
}

/// What ADD's checks found in the kernel that the plan depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddFacts {
    /// Index of a leftover pod interface to take back.
    pub leftover_pod_link: Option<u32>,
    /// A host end by this attachment's name without a record.
    pub leftover_host_link: Option<(String, u32)>,
}

/// ADD's plan: `prepare` in order, then the address, then `steps` in order
/// (each recorded when done, undone in reverse on a later failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPlan {
    pub prepare: Vec<Prepare>,
    pub steps: Vec<Step>,
}

pub fn add(dp: &dyn Dataplane, facts: &AddFacts) -> AddPlan {
    let mut prepare = vec![];
    if let Some(index) = facts.leftover_pod_link {
        prepare.push(Prepare::RemovePodLink { index });
    }
    if let Some((name, index)) = &facts.leftover_host_link {
        prepare.push(Prepare::RemoveHostLink {
            name: name.clone(),
            index: *index,
        });
    }
    prepare.push(dp.node_setup());
    AddPlan {
        prepare,
        steps: dp.steps().to_vec(),
    }
}

/// DEL's (and GC's) plan: `fast` undone in reverse here, then the link and
/// the element (`slow`) handed to the agent, or undone in reverse here when
/// no agent takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownPlan {
    pub fast: Vec<Step>,
    pub slow: Vec<Step>,
}

/// `address_reused`: the address is leased to another pod now (an earlier
/// DEL released it and was cut short before removing this record), so the
/// node's entries keyed by the address are the new pod's and stay.
pub fn teardown(dp: &dyn Dataplane, address_reused: bool) -> TeardownPlan {
    let (slow, mut fast): (Vec<Step>, Vec<Step>) =
        dp.steps().iter().copied().partition(|s| s.is_slow());
    if address_reused {
        fast.retain(|s| !s.is_address_keyed());
    }
    TeardownPlan { fast, slow }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::dataplane::for_mode;
    use Step::*;

    #[test]
    fn fresh_routed_add_plans_the_bridge_then_every_step_in_order() {
        let p = add(for_mode(Mode::Routed), &AddFacts::default());
        assert_eq!(p.prepare, vec![Prepare::Bridge]);
        assert_eq!(
            p.steps,
            vec![
                VethPair,
                HostPort,
                PodConfig,
                PrimaryMulticastOff,
                HostRoute,
                HostNeigh,
                ProxyNeigh,
                Guard
            ]
        );
    }

    #[test]
    fn macvlan_plans_the_shim_and_no_bridge_port_proxy_or_guard() {
        let p = add(for_mode(Mode::Macvlan), &AddFacts::default());
        assert_eq!(p.prepare, vec![Prepare::Shim]);
        assert_eq!(
            p.steps,
            vec![
                MacvlanChild,
                PodConfig,
                PrimaryMulticastOff,
                HostRoute,
                HostNeigh
            ]
        );
    }

    #[test]
    fn leftovers_are_removed_first_pod_then_host() {
        let facts = AddFacts {
            leftover_pod_link: Some(7),
            leftover_host_link: Some(("r2c0123".into(), 9)),
        };
        let p = add(for_mode(Mode::Routed), &facts);
        assert_eq!(
            p.prepare,
            vec![
                Prepare::RemovePodLink { index: 7 },
                Prepare::RemoveHostLink {
                    name: "r2c0123".into(),
                    index: 9
                },
                Prepare::Bridge
            ]
        );
        // the leftovers change nothing of the attachment's own steps
        assert_eq!(p.steps, for_mode(Mode::Routed).steps());
        let p = add(
            for_mode(Mode::Macvlan),
            &AddFacts {
                leftover_pod_link: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(
            p.prepare,
            vec![Prepare::RemovePodLink { index: 3 }, Prepare::Shim]
        );
    }

    #[test]
    fn teardown_hands_the_link_and_element_on_and_keeps_a_reused_address_entries() {
        let p = teardown(for_mode(Mode::Routed), false);
        assert_eq!(p.slow, vec![VethPair, Guard]);
        assert_eq!(
            p.fast,
            vec![
                HostPort,
                PodConfig,
                PrimaryMulticastOff,
                HostRoute,
                HostNeigh,
                ProxyNeigh
            ]
        );
        let p = teardown(for_mode(Mode::Routed), true);
        assert_eq!(p.fast, vec![HostPort, PodConfig, PrimaryMulticastOff]);
        assert_eq!(p.slow, vec![VethPair, Guard]);
        let p = teardown(for_mode(Mode::Macvlan), false);
        assert_eq!(p.slow, vec![MacvlanChild]);
        assert_eq!(
            p.fast,
            vec![PodConfig, PrimaryMulticastOff, HostRoute, HostNeigh]
        );
        let p = teardown(for_mode(Mode::Macvlan), true);
        assert_eq!(p.fast, vec![PodConfig, PrimaryMulticastOff]);
    }

    #[test]
    fn fault_point_names_are_unchanged() {
        // integration/reliability.rs reports kills by these names
        let names: Vec<_> = for_mode(Mode::Routed)
            .steps()
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(
            names,
            [
                "Link",
                "HostPort",
                "PodConfig",
                "PrimaryMulticastOff",
                "HostRoute",
                "HostNeigh",
                "ProxyNeigh",
                "Guard"
            ]
        );
        assert_eq!(MacvlanChild.name(), "Link");
    }
}
