//! The command-line tool (`ros2-cni <subcommand>`). Each subcommand lives in
//! its own module; this file only parses and dispatches.

mod agent;
mod doctor;
mod health;
mod install;
mod lab;
mod zenoh;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ros2-cni",
    version,
    about = "ROS 2 on the robot LAN for Kubernetes pods: a chained CNI plugin (when CNI_COMMAND is set) and a node agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the version and the CNI spec versions supported.
    Version,
    /// Run the node agent: route RTPS multicast between pods, robot computers and the LAN.
    Agent(agent::Args),
    /// Liveness check: exit 0 if this node's agent answers on its status socket, 1 if not.
    Health(health::Args),
    /// Diagnose discovery on this node: agent, conflist entry, pods, routes, participants, findings.
    Doctor(doctor::Args),
    /// Copy the binary into the CNI bin dir and chain a ros2-cni entry into the
    /// conflist the runtime loads (idempotent; refuses layouts it does not understand).
    Install(install::InstallArgs),
    /// Remove the conflist entry (restoring the owner's bytes) and the binary.
    Uninstall(install::UninstallArgs),
    /// Build a lab of robot computers in network namespaces and show who discovers whom.
    Lab(lab::Args),
    /// Print this node's Zenoh router configuration (zenohRouter): it listens
    /// on the port and connects to the other nodes' and the peers' routers.
    ZenohRouterConfig(zenoh::Args),
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::Install(_) | Cmd::Uninstall(_)) {
        ros2_cni::logging::init_stderr(ros2_cni::config::LogFormat::Human, "info");
    }
    let r: anyhow::Result<i32> = match cli.command {
        Cmd::Install(a) => install::install(a),
        Cmd::Uninstall(a) => install::uninstall(a),
        Cmd::Version => {
            println!(
                "ros2-cni {} (CNI {})",
                env!("CARGO_PKG_VERSION"),
                ros2_cni::cni::version::SUPPORTED.join(", ")
            );
            Ok(0)
        }
        Cmd::Agent(a) => agent::run(a),
        Cmd::Health(a) => health::run(a),
        // doctor's own exit codes: 1 means error findings, so a doctor that
        // cannot run at all exits 2
        Cmd::Doctor(a) => match doctor::run(a) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("ros2-cni: doctor: {}", chain(&e));
                return 2;
            }
        },
        Cmd::Lab(a) => lab::run(a),
        Cmd::ZenohRouterConfig(a) => zenoh::run(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ros2-cni: {}", chain(&e));
            1
        }
    }
}

/// An error and its causes on one line, like `{:#}`, but a cause whose text
/// the message already carries is not repeated: the layers' errors include
/// their source in their own text (the plugin's CNI messages need that).
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;
    use anyhow::Context;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let inner = ros2_cni::kernel::Error::Kernel {
            op: "RTM_NEWLINK ros0".into(),
            source: io,
            detail: None,
        };
        let e = Err::<(), _>(inner).context("creating ros0").unwrap_err();
        let text = chain(&e);
        assert_eq!(text.matches("Permission denied").count(), 1, "once: {text}");
        assert!(text.starts_with("creating ros0: "), "{text}");
        // a cause the message does not carry is still shown
        let plain =
            anyhow::anyhow!(std::io::Error::from_raw_os_error(libc::ENOENT)).context("reading /x");
        assert!(chain(&plain).ends_with("No such file or directory (os error 2)"));
    }
}
