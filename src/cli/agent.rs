//! `ros2-cni agent`: the node daemon.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file: node form or cluster form (see docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's name in the cluster form's "nodes" (default: the key nodeName, then $NODE_NAME, then the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Keep the ros2-cni entry in the conflist of this directory (re-applied
    /// within 2 s whenever another writer, e.g. calico-node, replaces the file).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Keep the binary installed in this CNI bin directory as well.
    #[arg(long, value_name = "DIR", requires = "cni_conf_dir")]
    pub cni_bin_dir: Option<PathBuf>,
    /// On SIGTERM, remove the entry and the binary (a DaemonSet being deleted).
    #[arg(long, requires = "cni_conf_dir")]
    pub uninstall_on_exit: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let cfg = ros2_cni::agent::load_config(&a.config, a.node.as_deref())
        .with_context(|| format!("loading {}", a.config.display()))?;
    ros2_cni::logging::init_stderr(cfg.log_format, &cfg.log_level);
    let opts = ros2_cni::agent::Options {
        config: a.config,
        node: a.node,
        period: None,
        install: a.cni_conf_dir.map(|conf_dir| ros2_cni::agent::InstallHook {
            conf_dir,
            bin_dir: a.cni_bin_dir,
            uninstall_on_exit: a.uninstall_on_exit,
        }),
    };
    ros2_cni::agent::run(opts)?;
    Ok(0)
}
