//! `ros2-cni agent`: the node daemon.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file: node form or cluster form (see docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's name in the cluster form's "nodes" (default: $NODE_NAME, then the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let cfg = ros2_cni::agent::load_config(&a.config, a.node.as_deref())
        .with_context(|| format!("loading {}", a.config.display()))?;
    ros2_cni::logging::init_stderr(cfg.log_format, &cfg.log_level);
    let opts = ros2_cni::agent::Options {
        config: a.config,
        node: a.node,
        period: None,
    };
    ros2_cni::agent::run(opts)?;
    Ok(0)
}
