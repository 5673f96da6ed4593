//! Timed process invocations inside a node's namespace, the way a container
//! runtime runs a CNI plugin: CNI_* environment, JSON on stdin, result on stdout.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the process gets into the node's namespace.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// `ip netns exec <ns> <program>`: what the numbers were measured
    /// with (it also unshares a mount namespace and remounts /sys).
    IpNetnsExec(&'a str),
    /// fork, `setns(fd, CLONE_NEWNET)` in the child, exec: only the
    /// program's own start-up and work on top of fork/exec.
    Setns(&'a File),
}

/// One finished invocation.
#[derive(Debug, Clone)]
pub struct Run {
    /// From just before fork to just after the exit was reaped.
    pub wall: Duration,
    /// utime + stime of the process (getrusage of the reaped child).
    pub cpu: Duration,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn wall_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    pub fn cpu_ms(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Runs `program` with exactly `env` (plus PATH) and `stdin`, timed.
pub fn run(via: Via, program: &Path, env: &[(&str, &str)], stdin: &[u8]) -> std::io::Result<Run> {
    run_args(via, program, &[], env, stdin)
}

/// Like [`run`], with arguments.
pub fn run_args(
    via: Via,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> std::io::Result<Run> {
    let mut cmd = match via {
        Via::IpNetnsExec(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        Via::Setns(f) => {
            let fd = f.as_raw_fd();
            let mut c = Command::new(program);
            // SAFETY: setns(2) is a plain system call, safe between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c
        }
    };
    cmd.args(args);
    cmd.env_clear();
    cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    {
        let mut i = child.stdin.take().expect("piped");
        // a plugin that exits without reading (VERSION) closes the pipe: fine
        let _ = i.write_all(stdin);
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    // plugins print a few hundred bytes at most, well below a pipe's buffer
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)?;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; std's Child does not reap it on drop.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t0.elapsed();
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Run {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout,
        stderr,
    })
}

/// The CNI environment of one invocation.
pub fn cni_env<'a>(
    cmd: &'a str,
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", container_id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_ARGS", args),
    ]
}

/// Opens a namespace file for `Via::Setns`.
pub fn ns_file(ns: &str) -> File {
    File::open(format!("/var/run/netns/{ns}")).expect("open netns file")
}
