//! BPF programs into the kernel: bpf(BPF_PROG_LOAD), by hand (one syscall
//! with a fixed attr layout; the crates that wrap it bring a loader for ELF
//! objects we do not need). The programs themselves are built by
//! `crate::fastpath::asm`; attaching them is tc's job ([`super::tc`]).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;

/// A program the kernel refused: the errno of bpf(BPF_PROG_LOAD) and the
/// tail of the verifier's log.
#[derive(Debug, thiserror::Error)]
#[error("loading BPF program {name}: {source}; verifier: {verifier}")]
pub struct LoadError {
    pub name: String,
    #[source]
    pub source: io::Error,
    pub verifier: String,
}

/// Loads a program (`insns`: its `struct bpf_insn`s, encoded); on failure the verifier's log is in the error.
pub fn load(prog_type: u32, insns: &[[u8; 8]], name: &str) -> Result<OwnedFd, LoadError> {
    let bytes: Vec<u8> = insns.concat();
    // the programs are ours; the helpers they call (fib lookup) need a GPL-compatible declaration
    let license = b"Dual MIT/GPL\0";
    let attempt = |log: Option<&mut Vec<u8>>| -> i64 {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
        attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(bytes.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        if let Some(log) = &log {
            attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
            attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
            attr[32..40].copy_from_slice(&(log.as_ptr() as u64).to_ne_bytes());
        }
        let n = name.as_bytes();
        let n = &n[..n.len().min(15)];
        attr[48..48 + n.len()].copy_from_slice(n);
        // SAFETY: bpf(BPF_PROG_LOAD) with a zero-padded attr that points at
        // `bytes`, `license` and `log`, all alive for the call.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                attr.as_ptr(),
                attr.len() as u32,
            )
        }
    };
    let fd = attempt(None);
    if fd >= 0 {
        // SAFETY: a new descriptor from the kernel, owned by us.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let err = io::Error::last_os_error();
    let mut log = vec![0u8; 64 * 1024];
    let _ = attempt(Some(&mut log));
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    Err(LoadError {
        name: name.to_owned(),
        source: err,
        verifier: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
    })
}
