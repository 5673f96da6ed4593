//! `ros2-cni install` and `ros2-cni uninstall`: put the binary and the
//! conflist entry in place on this node, or take them out again.

use anyhow::Context;
use clap::Args;
use ros2_cni::install::{self, Change, Entry, Target, Uninstall};
use std::path::PathBuf;

#[derive(Args)]
pub struct InstallArgs {
    /// The CNI bin dir (MicroK8s: /var/snap/microk8s/current/opt/cni/bin).
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: PathBuf,
    /// The CNI conf dir the container runtime reads (MicroK8s:
    /// /var/snap/microk8s/current/args/cni-network).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: PathBuf,
    /// The cluster config (JSON, cluster form with "nodes"; see docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's name in "nodes" (default: nodeName, then $NODE_NAME, then the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Use this file in the conf dir instead of the lexically first one (e.g.
    /// the conflist Multus delegates to).
    #[arg(long, value_name = "NAME")]
    pub conf_file: Option<String>,
}

#[derive(Args)]
pub struct UninstallArgs {
    /// The CNI bin dir to remove `ros2-cni` from.
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: PathBuf,
    /// The CNI conf dir whose conflists lose their ros2-cni entry.
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: PathBuf,
    /// Where install kept its backup (default: the entry's dataDir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub fn install(a: InstallArgs) -> anyhow::Result<i32> {
    let entry = Entry::from_config_file(&a.config, a.node.as_deref())?;
    let cfg = entry.config.clone();
    let mut target = Target::new(&a.cni_conf_dir, entry);
    target.conf_file = a.conf_file;
    // everything that can refuse runs before anything changes
    install::check(&target)?;
    for w in install::check_host(&cfg)? {
        tracing::warn!("{w}");
    }
    let exe = std::env::current_exe().context("cannot find the running binary")?;
    let copied = install::install_binary(&a.cni_bin_dir, &exe)?;
    tracing::info!(
        dest = %a.cni_bin_dir.join(install::BINARY_NAME).display(),
        "binary {}",
        if copied { "installed" } else { "already up to date" }
    );
    let applied = install::apply(&target)?;
    let what = match applied.change {
        Change::Inserted => "entry added",
        Change::Updated => "entry updated",
        Change::Unchanged => "entry already up to date",
    };
    tracing::info!(
        file = %applied.file.display(),
        node = %target.entry.node,
        backup = %target.state_dir.display(),
        "{what}"
    );
    Ok(0)
}

pub fn uninstall(a: UninstallArgs) -> anyhow::Result<i32> {
    let r = install::uninstall(&Uninstall {
        conf_dir: a.cni_conf_dir.clone(),
        bin_dir: Some(a.cni_bin_dir.clone()),
        data_dir: a.data_dir,
    })?;
    for w in &r.warnings {
        tracing::warn!("{w}");
    }
    if r.files.is_empty() {
        tracing::info!(conf_dir = %a.cni_conf_dir.display(), "no ros2-cni entry found");
    }
    for (f, restored) in &r.files {
        tracing::info!(
            file = %f.display(),
            "entry removed ({})",
            if *restored {
                "original bytes restored from the backup"
            } else {
                "file changed since install: only the entry was cut out"
            }
        );
    }
    tracing::info!(
        dest = %a.cni_bin_dir.join(install::BINARY_NAME).display(),
        "binary {}",
        if r.binary_removed { "removed" } else { "was not there" }
    );
    Ok(0)
}
