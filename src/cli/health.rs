//! `ros2-cni health`: the liveness check of the DaemonSet (and of anyone
//! else): exit 0 when the node's agent answers on its status socket, 1
//! when it does not. Findings about discovery are `doctor`'s business: an
//! agent with problems is alive, an agent that does not answer is not.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The agent's config file (the socket is `dataDir/agent.sock`).
    #[arg(long, value_name = "FILE", required_unless_present = "socket")]
    pub config: Option<PathBuf>,
    /// This node's name in the cluster form's "nodes".
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The status socket itself, instead of --config.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let sock = match (a.socket, a.config) {
        (Some(s), _) => s,
        (None, Some(c)) => ros2_cni::agent::load_config(&c, a.node.as_deref())?.agent_socket(),
        (None, None) => unreachable!("clap requires one of them"),
    };
    // an answer that is not a status (no pid, ...) is an error here too
    match ros2_cni::api::status(&sock) {
        Ok(st) => {
            println!(
                "ok: the agent (pid {}) answers on {}",
                st.pid,
                sock.display()
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("ros2-cni: health: {e}");
            Ok(1)
        }
    }
}
