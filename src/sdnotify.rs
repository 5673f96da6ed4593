//! systemd's notify protocol (sd_notify(3)), for `Type=notify` and
//! `WatchdogSec=`: one datagram per message to `$NOTIFY_SOCKET`. A path, or
//! an abstract socket when it starts with `@`. Without the variable nothing
//! is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

#[derive(Debug, Clone)]
pub struct Notifier {
    addr: String,
}

impl Notifier {
    /// The notifier systemd asked for, if any.
    pub fn from_env() -> Option<Notifier> {
        std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .map(|addr| Notifier { addr })
    }

    fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        match self.addr.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(&self.addr),
        }
    }

    /// Sends `msg` (e.g. `READY=1`, `WATCHDOG=1`); failures are logged only.
    pub fn send(&self, msg: &str) {
        let sent = UnixDatagram::unbound()
            .and_then(|s| s.send_to_addr(msg.as_bytes(), &self.socket_addr()?));
        if let Err(e) = sent {
            tracing::debug!("sd_notify {msg} to {}: {e}", self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path() {
        let dir = std::env::temp_dir().join(format!("r2c-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            addr: path.to_str().unwrap().into(),
        };
        n.send("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
