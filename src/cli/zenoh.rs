//! `ros2-cni zenoh-router-config`: the configuration of this node's Zenoh
//! router (`zenohRouter`), for zenohd or rmw_zenohd (docs/zenoh.md).

use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Config file: the agent's (node or cluster form), a conflist or a
    /// ros2-cni plugin entry.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's name in the cluster form (default: $NODE_NAME, then the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Write it to FILE (replaced whole, never half-written) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Prints the node router's configuration (JSON, which is JSON5) on stdout
/// or writes it to `--output`.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let cfg = ros2_cni::doctor::config_from_file(&a.config, a.node.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(port) = cfg.zenoh_router else {
        bail!(
            "zenohRouter is not set in {}: set it to the node router's TCP port (7447 is Zenoh's)",
            a.config.display()
        );
    };
    let v = ros2_cni::zenoh::node_router_config(port, &cfg.peers);
    let text = serde_json::to_string_pretty(&v)? + "\n";
    match &a.output {
        None => print!("{text}"),
        Some(path) => {
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            std::fs::write(&tmp, &text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "ros2-cni: wrote {} (router on port {port}, connecting to {} peer router(s))",
                path.display(),
                cfg.peers.len()
            );
        }
    }
    Ok(0)
}
