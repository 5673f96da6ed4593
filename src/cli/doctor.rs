//! `ros2-cni doctor`: agent health, conflist entry, pods, routes, participants, findings.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Config file: the agent's (node or cluster form), a conflist (its
    /// ros2-cni entry is used) or a ros2-cni plugin entry. Default: the
    /// ros2-cni entry of the conflist in the CNI conf dir.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name in the cluster form (default: $NODE_NAME, then the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The CNI conf dir to check for the entry (default: MicroK8s', else /etc/cni/net.d).
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also draw the node's view of discovery into FILE (SVG, laid out by
    /// ros2-cni itself: no Graphviz needed) and the same graph as Graphviz
    /// DOT beside it (FILE with .dot instead of .svg).
    #[arg(long, value_name = "FILE.svg")]
    pub graph: Option<PathBuf>,
}

const CONF_DIRS: &[&str] = &[
    "/var/snap/microk8s/current/args/cni-network",
    "/etc/cni/net.d",
];

fn entry_from_conf_dir(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let file = ros2_cni::install::choose_conf(dir, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    ros2_cni::doctor::conflist_entry(&v).with_context(|| {
        format!(
            "{} has no ros2-cni entry; pass --config FILE",
            file.display()
        )
    })
}

/// Where the DOT goes: FILE.svg -> FILE.dot, anything else -> FILE.dot appended.
pub fn dot_path(svg: &Path) -> PathBuf {
    if svg.extension().is_some_and(|e| e == "svg") {
        svg.with_extension("dot")
    } else {
        let mut s = svg.as_os_str().to_owned();
        s.push(".dot");
        PathBuf::from(s)
    }
}

/// Exit codes: 0 no error findings, 1 error findings, 2 doctor could not run.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let conf_dir = a
        .cni_conf_dir
        .clone()
        .or_else(|| CONF_DIRS.iter().map(PathBuf::from).find(|d| d.is_dir()));
    let cfg = match &a.config {
        Some(path) => ros2_cni::doctor::config_from_file(path, a.node.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        None => {
            let Some(dir) = &conf_dir else {
                bail!(
                    "no --config given and no CNI conf dir found (looked in {})",
                    CONF_DIRS.join(", ")
                );
            };
            let entry = entry_from_conf_dir(dir)?;
            ros2_cni::config::Config::from_value(&entry, true, a.node.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let inputs = ros2_cni::doctor::gather(&cfg, conf_dir.as_deref());
    let mut graph_note = None;
    if let Some(svg) = &a.graph {
        let g = ros2_cni::graph::node_view(&inputs);
        let dot = dot_path(svg);
        std::fs::write(svg, g.to_svg()).with_context(|| format!("writing {}", svg.display()))?;
        std::fs::write(&dot, g.to_dot()).with_context(|| format!("writing {}", dot.display()))?;
        graph_note = Some(format!(
            "graph: {} ({} nodes, {} edges; drawn by ros2-cni, no Graphviz needed), and as DOT {} \
             (Graphviz's layout: dot -Tsvg {} -o FILE.svg)",
            svg.display(),
            g.nodes.len(),
            g.edges.len(),
            dot.display(),
            dot.display()
        ));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&ros2_cni::doctor::report(&inputs))?
        );
        if let Some(n) = &graph_note {
            eprintln!("{n}");
        }
    } else {
        print!("{}", ros2_cni::doctor::render(&inputs));
        if let Some(n) = &graph_note {
            println!("{n}");
        }
    }
    let errors = ros2_cni::doctor::findings(&inputs)
        .iter()
        .any(|f| f.severity == ros2_cni::doctor::Severity::Error);
    Ok(i32::from(errors))
}

#[cfg(test)]
mod tests {
    use super::dot_path;
    use std::path::Path;

    #[test]
    fn the_dot_goes_beside_the_svg() {
        assert_eq!(dot_path(Path::new("/x/n1.svg")), Path::new("/x/n1.dot"));
        assert_eq!(
            dot_path(Path::new("n1.picture")),
            Path::new("n1.picture.dot")
        );
        assert_eq!(dot_path(Path::new("n1")), Path::new("n1.dot"));
    }
}
