//! `ros2-cni`: the CNI plugin when CNI_COMMAND is set, a command-line tool otherwise.

mod cli;

fn main() {
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(ros2_cni::plugin::main());
    }
    std::process::exit(cli::main());
}
