//! ADD: read and validate everything (the pod's interfaces, leftovers of an
//! earlier attachment, the record), plan (pure, [`dataplane::plan::add`]),
//! then apply the plan with undo in reverse on failure.

use super::{check_pod_netns, init_logging, open_netns, opted_in, Output};
use crate::cni::{CniError, Code, Env, Interface, PrevResult, Result, Version};
use crate::config::{Config, Mode, Pool};
use crate::dataplane::{
    self, host_veth_name, pod_mac, pod_mac_ip, undo_all, AddFacts, AddPlan, AddRequest, Dataplane,
    Kernel, Step,
};
use crate::ipam::{attachment_key, lock_timeout, Attachment, AttachmentLock, Store};
use crate::kernel::netns::Netns;
use crate::kernel::rtnl::{format_mac, Handle};
use serde_json::Value;

pub(super) fn add(cfg: &Config, env: &Env, raw: &Value, version: Version) -> Result<Output> {
    let prev_v = raw.get("prevResult").filter(|v| !v.is_null()).ok_or_else(|| {
        CniError::invalid_config(
            "prevResult: missing; ros2-cni is a chained plugin and must follow the primary plugin (e.g. calico) in a conflist",
        )
    })?;
    let mut prev = PrevResult::parse(prev_v)?;
    if !opted_in(cfg, env, raw) {
        // not ours: hand the chain's result on untouched
        return Ok(Output::Json(prev_v.clone()));
    }
    init_logging(cfg);
    // read: validate everything before changing anything
    let mut read = AddRead::read(cfg, env)?;
    // plan: pure
    let plan = dataplane::plan::add(read.dp, &read.facts);
    // apply, with undo in reverse on failure
    let att = read.apply(cfg, env, &prev, &plan)?;
    // best effort, never undone: the agent adds what this misses
    add_domain_rules(cfg, &att, &mut read.k);
    tracing::info!(
        container = %env.container_id,
        pod = %format!("{}/{}", att.pod_namespace, att.pod_name),
        ip = %att.ip,
        "attached {} via {}",
        att.pod_if,
        att.host_if
    );
    let net = ipnet::IpNet::V4(ipnet::Ipv4Net::new(att.ip, att.prefix_len).expect("valid prefix"));
    prev.push_attachment(
        &Interface {
            name: att.pod_if.clone(),
            mac: att.mac.clone(),
            sandbox: env.netns.clone(),
        },
        net,
    );
    Ok(Output::Json(prev.to_version(version)))
}

/// What ADD read and validated before changing anything: the handles it
/// goes on with, and the kernel's state its plan depends on.
struct AddRead {
    dp: &'static dyn Dataplane,
    pool: Pool,
    netns: Netns,
    k: Kernel,
    uplink: String,
    pod: Handle,
    store: Store,
    key: String,
    /// Held until ADD returns: a second ADD of this container (a runtime
    /// retrying after its own timeout) waits, then finds the record.
    _busy: AttachmentLock,
    /// Whether PrimaryMulticastOff will clear the flag: recorded with the
    /// address, so the record written at allocation is usually final.
    clears_multicast: bool,
    facts: AddFacts,
}

impl AddRead {
    fn read(cfg: &Config, env: &Env) -> Result<AddRead> {
        if cfg.if_name == env.ifname {
            return Err(CniError::invalid_config(format!(
                "ifName: \"{}\" is the chain's CNI_IFNAME (the primary interface); choose another name",
                cfg.if_name
            )));
        }
        let pool = cfg.pool()?;
        check_pod_netns(&env.netns)?;
        let netns = open_netns(&env.netns)?;
        let dp = dataplane::for_mode(cfg.mode);
        let mut k = Kernel::new();
        let uplink = dp.preflight(&mut k, cfg)?;
        let mut pod = Handle::open_in(&netns)?;
        let store = Store::new(&cfg.data_dir);
        store.init()?;
        let key = attachment_key(&env.container_id, &env.ifname);
        let busy = store.lock_attachment(&key, lock_timeout())?;
        let leftover_pod_link = leftover_pod_link(cfg, env, &mut pod, &store, &key)?;
        let clears_multicast = primary_clears_multicast(cfg, env, &mut pod)?;
        if store.get(&key)?.is_some() {
            return Err(CniError::new(
                Code::AlreadyAttached,
                format!(
                    "container {} ({}) is already attached; DEL it first",
                    env.container_id, env.ifname
                ),
            ));
        }
        // a host end without a record: left by a DEL whose link deletion the
        // agent has not run yet; the name is this attachment's, so take it back
        let leftover_host_link = match cfg.mode {
            Mode::Routed => {
                let host_if = host_veth_name(&env.container_id, &env.ifname);
                k.node()?
                    .link_by_name(&host_if)?
                    .map(|l| (host_if, l.index))
            }
            Mode::Macvlan => None,
        };
        Ok(AddRead {
            dp,
            pool,
            netns,
            k,
            uplink,
            pod,
            store,
            key,
            _busy: busy,
            clears_multicast,
            facts: AddFacts {
                leftover_pod_link,
                leftover_host_link,
            },
        })
    }

    /// Carries out `plan`: the preparations, the address, then the steps;
    /// on a failure, undoes the steps done in reverse and releases the address.
    fn apply(
        &mut self,
        cfg: &Config,
        env: &Env,
        prev: &PrevResult,
        plan: &AddPlan,
    ) -> Result<Attachment> {
        for p in &plan.prepare {
            p.apply(&mut self.k, &mut self.pod, cfg, &self.uplink)?;
        }
        let mut att = self.allocate(cfg, env, prev)?;
        let recorded = att.clone();
        let req = AddRequest {
            cfg,
            netns: &self.netns,
            primary_if: &env.ifname,
        };
        let (done, failed) =
            dataplane::apply_all(&mut self.k, &mut self.pod, &req, &mut att, &plan.steps);
        let mut failure = failed.map(|(step, e)| (step, CniError::from(e)));
        // rewrite the record only if a step changed it (the MULTICAST flag
        // changed between validation and the step): a rewrite is a file create
        // and a rename over the old record, whose blocks are freed
        if failure.is_none() && att != recorded {
            let rewritten = self
                .store
                .lock(lock_timeout())
                .and_then(|_lock| self.store.write_attachment(&self.key, &att));
            if let Err(e) = rewritten {
                failure = Some((Step::Guard, e.into()));
            }
        }
        match failure {
            None => Ok(att),
            Some((step, err)) => Err(self.roll_back(&att, &done, step, err)),
        }
    }

    /// Leases an address and writes the record (taking back leases left by
    /// killed invocations if the pool is full).
    fn allocate(&self, cfg: &Config, env: &Env, prev: &PrevResult) -> Result<Attachment> {
        let make = |ip| {
            new_attachment(
                cfg,
                env,
                self.dp,
                &self.uplink,
                prev,
                self.clears_multicast,
                ip,
            )
        };
        let lock = self.store.lock(lock_timeout())?;
        let allocated = match self
            .store
            .allocate(&lock, &self.pool, &cfg.subnet, &self.key, make)
        {
            // leases left by killed invocations are taken back, then it is tried once more
            Err(crate::ipam::Error::Exhausted { .. }) if !self.store.reclaim(&lock)?.is_empty() => {
                self.store
                    .allocate(&lock, &self.pool, &cfg.subnet, &self.key, make)
            }
            r => r,
        };
        drop(lock);
        Ok(allocated?)
    }

    /// Undoes `done` in reverse and releases the address; returns `err`.
    fn roll_back(
        &mut self,
        att: &Attachment,
        done: &[Step],
        step: Step,
        err: CniError,
    ) -> CniError {
        tracing::warn!(
            step = step.name(),
            "ADD failed, undoing {} step(s): {err}",
            done.len()
        );
        if let Err(u) = undo_all(&mut self.k, Some(&mut self.pod), att, done) {
            tracing::error!("rollback incomplete: {u}");
        }
        if let Ok(lock) = self.store.lock(lock_timeout()) {
            let _ = self.store.release(&lock, &self.key, Some(att.ip));
        }
        err
    }
}

/// A pod interface named ifName already there: ours (our MACs start 0e:2c)
/// and not live, it is a leftover of a DEL whose link deletion the agent has
/// not run yet (DEL then ADD in one netns), to be removed (its index);
/// anything else is an error.
fn leftover_pod_link(
    cfg: &Config,
    env: &Env,
    pod: &mut Handle,
    store: &Store,
    key: &str,
) -> Result<Option<u32>> {
    let Some(l) = pod.link_by_name(&cfg.if_name)? else {
        return Ok(None);
    };
    let ours = l.mac.and_then(pod_mac_ip);
    // the MAC carries the address: is it leased to another attachment
    // of this very pod (another network)? Then this ros0 is live. (If
    // the address went to another pod since, this one is a leftover.)
    let holder = ours.and_then(|ip| {
        let other = store.leased_to_another(ip, key)?;
        let rec = store.get(&other).ok().flatten()?;
        (rec.netns == env.netns && rec.pod_if == cfg.if_name).then_some(other)
    });
    if let Some(other) = holder {
        Err(CniError::new(
            Code::AlreadyAttached,
            format!(
                "the pod's \"{}\" (ifName) belongs to another live attachment ({other})",
                cfg.if_name
            ),
        ))
    } else if ours.is_some() {
        Ok(Some(l.index))
    } else {
        Err(CniError::new(
            Code::AlreadyAttached,
            format!(
                "the pod already has an interface named \"{}\" (ifName)",
                cfg.if_name
            ),
        ))
    }
}

/// Whether PrimaryMulticastOff will clear the primary interface's flag;
/// the primary interface must exist when the flag is to go.
fn primary_clears_multicast(cfg: &Config, env: &Env, pod: &mut Handle) -> Result<bool> {
    if cfg.primary_multicast {
        return Ok(false);
    }
    match pod.link_by_name(&env.ifname)? {
        None => Err(CniError::env(format!(
            "CNI_IFNAME: the pod has no interface \"{}\"; the primary plugin must run first",
            env.ifname
        ))),
        Some(l) => Ok(l.has_multicast()),
    }
}

/// The record of a new attachment at `ip`.
fn new_attachment(
    cfg: &Config,
    env: &Env,
    dp: &dyn Dataplane,
    uplink: &str,
    prev: &PrevResult,
    clears_multicast: bool,
    ip: std::net::Ipv4Addr,
) -> Attachment {
    Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        pod_if: cfg.if_name.clone(),
        netns: env.netns.clone(),
        ip,
        prefix_len: cfg.prefix_len(),
        mac: format_mac(&pod_mac(ip)),
        host_if: match cfg.mode {
            Mode::Routed => host_veth_name(&env.container_id, &env.ifname),
            Mode::Macvlan => String::new(),
        },
        node_dev: dp.node_dev(cfg).to_owned(),
        uplink: uplink.to_owned(),
        mode: cfg.mode.as_str().into(),
        cleared_multicast: clears_multicast,
        primary_ips: prev
            .find_interface(&env.ifname, &env.netns)
            .map(|i| prev.ips_of(i))
            .unwrap_or_default(),
        pod_namespace: env.pod_namespace().unwrap_or_default().into(),
        pod_name: env.pod_name().unwrap_or_default().into(),
        network: cfg.name.clone().unwrap_or_default(),
    }
}

/// With a domain policy in force (the agent has made its table), the pod's
/// rules, so that it is held to its namespace's domains from its first
/// packet rather than from the agent's next pass (until then its port is
/// unlisted, and the table's default deny drops all its RTPS-range UDP).
/// A failure is only logged: the default deny holds until the agent adds them.
fn add_domain_rules(cfg: &Config, att: &Attachment, k: &mut Kernel) {
    let Some(d) = &cfg.domains else { return };
    if cfg.mode != Mode::Routed || att.host_if.is_empty() {
        return;
    }
    let p = crate::firewall::domains::PodPolicy {
        port: att.host_if.clone(),
        allowed: d.allowed(&att.pod_namespace).map(<[u16]>::to_vec),
    };
    // the invocation's nf_tables socket (the guard step opened it)
    let r = k
        .nf()
        .and_then(|nl| Ok(crate::firewall::domains::add_pod(nl, &p)?));
    match r {
        Ok(true) => {
            tracing::debug!(port = %p.port, allowed = ?p.allowed, "domain policy rules added")
        }
        Ok(false) => tracing::debug!("no domain policy table on this node (agent not running yet)"),
        Err(e) => {
            tracing::warn!(port = %p.port, "domain policy rules (the agent adds them within its next pass): {e}")
        }
    }
}
