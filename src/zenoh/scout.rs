//! Zenoh's scouting messages, as far as the agent reads them: the SCOUT a
//! session multicasts (to 224.0.0.224:7446 by default) to find routers and
//! peers. HELLO answers go back by unicast, so the agent's capture of the
//! discovery groups sees only SCOUTs.
//!
//! Wire format (Zenoh protocol 0x09, zenoh 1.x; on UDP a scouting message
//! is the whole datagram, without the 16-bit length prefix of streams):
//!
//! ```text
//! byte 0   |Z|X|X| 0x01  |   message id SCOUT; Z: extensions follow
//! byte 1   version
//! byte 2   |zid_len|I|what|  what: bitmap of the kinds sought (router 1,
//!                            peer 2, client 4); I: a Zenoh ID follows, of
//!                            1 + zid_len bytes
//! ```
//!
//! Sessions of zenoh 1.x send no ID in their SCOUT (measured with
//! eclipse-zenoh 1.x: `01 09 07`), so a scouting session is known by its
//! source address and port. Hand-written: the zenoh-protocol crate brings
//! the whole Zenoh runtime's dependencies for three bytes.

use std::fmt;

/// The message id of SCOUT in the low five bits of the header.
const SCOUT: u8 = 0x01;
const FLAG_Z: u8 = 0x80;
const FLAG_I: u8 = 0x08;

/// A SCOUT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scout {
    /// The Zenoh protocol version (0x09 for zenoh 1.x).
    pub version: u8,
    /// What the session looks for: a bitmap of [`Whatami`] bits.
    pub what: u8,
    /// The scouting session's Zenoh ID, when sent (1–16 bytes, as on the wire).
    pub zid: Option<Vec<u8>>,
}

/// Why a datagram is not a SCOUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAScout {
    Empty,
    OtherMessage(u8),
    Truncated,
    /// `what` is zero: a scout looking for nothing.
    NothingSought,
    /// Bytes after the message without the extensions flag.
    Trailing(usize),
}

impl fmt::Display for NotAScout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAScout::Empty => write!(f, "empty datagram"),
            NotAScout::OtherMessage(id) => write!(f, "message id {id:#04x}, not SCOUT"),
            NotAScout::Truncated => write!(f, "truncated SCOUT"),
            NotAScout::NothingSought => write!(f, "SCOUT looking for nothing (what = 0)"),
            NotAScout::Trailing(n) => write!(f, "{n} byte(s) after the SCOUT"),
        }
    }
}

/// Parses one datagram as a SCOUT. Strict about length, so that other
/// traffic to a watched group is not taken for one.
pub fn parse_scout(b: &[u8]) -> Result<Scout, NotAScout> {
    let (&header, rest) = b.split_first().ok_or(NotAScout::Empty)?;
    if header & 0x1f != SCOUT {
        return Err(NotAScout::OtherMessage(header & 0x1f));
    }
    let [version, flags, rest @ ..] = rest else {
        return Err(NotAScout::Truncated);
    };
    let what = flags & 0b111;
    if what == 0 {
        return Err(NotAScout::NothingSought);
    }
    let (zid, rest) = if flags & FLAG_I != 0 {
        let len = 1 + (flags >> 4) as usize;
        if rest.len() < len {
            return Err(NotAScout::Truncated);
        }
        (Some(rest[..len].to_vec()), &rest[len..])
    } else {
        (None, rest)
    };
    // extensions are skipped unread; without them nothing may follow
    if header & FLAG_Z == 0 && !rest.is_empty() {
        return Err(NotAScout::Trailing(rest.len()));
    }
    Ok(Scout {
        version: *version,
        what,
        zid,
    })
}

/// The kinds of Zenoh node a scout can look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whatami {
    Router = 1,
    Peer = 2,
    Client = 4,
}

impl Whatami {
    pub fn name(self) -> &'static str {
        match self {
            Whatami::Router => "router",
            Whatami::Peer => "peer",
            Whatami::Client => "client",
        }
    }
}

impl Scout {
    /// The kinds sought, by name, in the order router, peer, client.
    pub fn looks_for(&self) -> Vec<&'static str> {
        [Whatami::Router, Whatami::Peer, Whatami::Client]
            .into_iter()
            .filter(|w| self.what & *w as u8 != 0)
            .map(Whatami::name)
            .collect()
    }

    /// The Zenoh ID in hex, as on the wire.
    pub fn zid_hex(&self) -> Option<String> {
        self.zid
            .as_ref()
            .map(|z| z.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Encodes (tests, the lab's probes).
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = self.what & 0b111;
        let mut out = vec![SCOUT, self.version, 0];
        if let Some(z) = &self.zid {
            assert!((1..=16).contains(&z.len()), "a Zenoh ID has 1 to 16 bytes");
            flags |= FLAG_I | (((z.len() - 1) as u8) << 4);
            out.extend_from_slice(z);
        }
        out[2] = flags;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zenoh_1x_session_s_scout_parses() {
        // captured from eclipse-zenoh 1.x (zenoh.open(zenoh.Config()))
        let s = parse_scout(&[0x01, 0x09, 0x07]).unwrap();
        assert_eq!(s.version, 9);
        assert_eq!(s.looks_for(), ["router", "peer", "client"]);
        assert_eq!(s.zid, None);
    }

    #[test]
    fn an_id_round_trips_and_extensions_may_follow() {
        let s = Scout {
            version: 9,
            what: Whatami::Router as u8,
            zid: Some(vec![0xab; 16]),
        };
        let b = s.encode();
        assert_eq!(b.len(), 3 + 16);
        assert_eq!(parse_scout(&b).unwrap(), s);
        assert_eq!(s.zid_hex().unwrap(), "ab".repeat(16));
        let mut ext = b.clone();
        ext[0] |= FLAG_Z;
        ext.extend_from_slice(&[0x01, 0x00]);
        assert_eq!(parse_scout(&ext).unwrap(), s);
    }

    #[test]
    fn other_traffic_is_not_a_scout() {
        assert_eq!(parse_scout(b""), Err(NotAScout::Empty));
        assert_eq!(
            parse_scout(b"RTPS\x02\x03"),
            Err(NotAScout::OtherMessage(0x12))
        );
        // a HELLO
        assert_eq!(
            parse_scout(&[0x02, 0x09, 0x01]),
            Err(NotAScout::OtherMessage(2))
        );
        assert_eq!(parse_scout(&[0x01, 0x09]), Err(NotAScout::Truncated));
        assert_eq!(
            parse_scout(&[0x01, 0x09, 0x00]),
            Err(NotAScout::NothingSought)
        );
        // an ID announced longer than the datagram
        assert_eq!(
            parse_scout(&[0x01, 0x09, 0xf9, 1, 2]),
            Err(NotAScout::Truncated)
        );
        assert_eq!(
            parse_scout(&[0x01, 0x09, 0x03, 0]),
            Err(NotAScout::Trailing(1))
        );
    }

    #[test]
    fn no_input_panics() {
        for len in 0..24 {
            for seed in 0..=255u8 {
                let b: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
                    .collect();
                let _ = parse_scout(&b);
            }
        }
    }
}
