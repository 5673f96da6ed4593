//! RTPS (DDS-RTPS 2.x) wire format: enough of it to see discovery.
//!
//! - [`parse_message`] reads one UDP payload: the 20-byte header and every
//!   submessage, in either endianness (flags bit 0), honouring
//!   `octetsToNextHeader == 0` ("up to the end of the message"). INFO_TS,
//!   INFO_SRC, INFO_DST, DATA, DATA_FRAG (headers), HEARTBEAT, ACKNACK, GAP and
//!   PAD are decoded; any other submessage is kept as [`SubmessageKind::Other`]
//!   and skipped.
//! - [`spdp`] turns the SPDP writer's DATA into a [`spdp::ParticipantData`] and
//!   builds SPDP announcements from one ([`spdp::announce`]).
//! - [`ports`] maps domain/participant ids to the well-known UDP ports and back.
//! - [`pcap`] reads classic pcap captures (tests, fixtures, offline checks).
//!
//! Hostile input never panics and never makes the parser allocate more than a
//! small multiple of the input's own size; errors ([`ParseError`]) name what is
//! wrong and the byte offset (from the start of the message) where it is.

#[doc(hidden)]
pub mod fuzzing;
pub mod message;
mod params;
pub mod pcap;
pub mod ports;
pub mod spdp;
mod wire;

pub use message::{
    parse_message, AckNack, Data, DataFrag, Gap, Header, Heartbeat, InfoSrc, InlineQos, Message,
    SequenceNumberSet, Submessage, SubmessageKind,
};
pub use params::{Parameter, ParameterIter};

use std::fmt;

/// Byte order of a submessage or a CDR encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    Little,
    Big,
}

/// What is wrong with a message, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTPS parse error at offset {offset}: {kind}")]
pub struct ParseError {
    /// Byte offset from the start of the message (or capture file, for pcap).
    pub offset: usize,
    pub kind: ErrorKind,
}

/// The kinds of [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("truncated {what}: needs {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("not an RTPS message (magic {0:02x?}, expected \"RTPS\")")]
    BadMagic([u8; 4]),
    #[error("submessage 0x{id:02x} claims {claimed} bytes but only {have} remain")]
    SubmessageOverrun { id: u8, claimed: usize, have: usize },
    #[error("submessage 0x{id:02x} body is {len} bytes, shorter than its fixed part of {need}")]
    SubmessageTooShort { id: u8, len: usize, need: usize },
    #[error(
        "octetsToInlineQos {value} is invalid (minimum {min}, {have} bytes in the submessage)"
    )]
    BadInlineQosOffset { value: u16, min: usize, have: usize },
    #[error("sequence number set has numBits {0}, more than 256")]
    BadBitmapSize(u32),
    #[error("parameter list ends without PID_SENTINEL")]
    MissingSentinel,
    #[error("parameter 0x{pid:04x} has length {len} but only {have} bytes remain")]
    ParameterOverrun { pid: u16, len: usize, have: usize },
    #[error("parameter 0x{pid:04x} has length {len}, expected {expected}")]
    BadParameterLength {
        pid: u16,
        len: usize,
        expected: &'static str,
    },
    #[error("serialized payload encapsulation 0x{0:04x} is not PL_CDR_LE (0x0003) or PL_CDR_BE (0x0002)")]
    BadEncapsulation(u16),
    #[error("bad string in {what}: {why}")]
    BadString {
        what: &'static str,
        why: &'static str,
    },
    #[error("not a capture: {0}")]
    BadCapture(&'static str),
}

impl ParseError {
    pub(crate) fn new(offset: usize, kind: ErrorKind) -> ParseError {
        ParseError { offset, kind }
    }
}

/// RTPS protocol version (`major.minor`, 2.1 to 2.5 in the wild).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    pub major: u8,
    pub minor: u8,
}

impl ProtocolVersion {
    pub const V2_1: ProtocolVersion = ProtocolVersion { major: 2, minor: 1 };
    pub const V2_3: ProtocolVersion = ProtocolVersion { major: 2, minor: 3 };
    pub const V2_4: ProtocolVersion = ProtocolVersion { major: 2, minor: 4 };
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A DDS vendor id, as two octets read big-endian (0x0110 = Cyclone DDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VendorId(pub u16);

impl VendorId {
    pub const UNKNOWN: VendorId = VendorId(0x0000);
    pub const CONNEXT: VendorId = VendorId(0x0101);
    pub const OPENSPLICE: VendorId = VendorId(0x0102);
    pub const OPENDDS: VendorId = VendorId(0x0103);
    pub const FAST_DDS: VendorId = VendorId(0x010f);
    pub const CYCLONE: VendorId = VendorId(0x0110);
    pub const RUSTDDS: VendorId = VendorId(0x0112);

    /// The product's usual name, or `"unknown"`.
    pub fn name(self) -> &'static str {
        vendor_name(self.0)
    }

    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x} ({})", self.0, self.name())
    }
}

/// The product behind an RTPS vendor id (OMG's list), or `"unknown"`.
pub fn vendor_name(id: u16) -> &'static str {
    match id {
        0x0101 => "RTI Connext",
        0x0102 => "OpenSplice",
        0x0103 => "OpenDDS",
        0x0104 => "MilSoft",
        0x0105 => "Gallium InterCOM",
        0x0106 => "TwinOaks CoreDX",
        0x0107 => "Lakota",
        0x0108 => "ICOUP",
        0x0109 => "ETRI",
        0x010a => "RTI Connext Micro",
        0x010b => "Vortex Cafe",
        0x010c => "PrismTech",
        0x010d => "Vortex Lite",
        0x010e => "Technicolor Qeo",
        0x010f => "eProsima Fast DDS",
        0x0110 => "Eclipse Cyclone DDS",
        0x0111 => "GurumDDS",
        0x0112 => "RustDDS",
        _ => "unknown",
    }
}

/// The 12-octet prefix shared by every entity of a participant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GuidPrefix(pub [u8; 12]);

impl fmt::Display for GuidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GuidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuidPrefix({self})")
    }
}

/// An entity id: 3 octets of key and 1 of kind, always in this byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntityId(pub [u8; 4]);

impl EntityId {
    pub const UNKNOWN: EntityId = EntityId([0, 0, 0, 0]);
    pub const PARTICIPANT: EntityId = EntityId([0, 0, 1, 0xc1]);
    pub const SEDP_TOPIC_WRITER: EntityId = EntityId([0, 0, 2, 0xc2]);
    pub const SEDP_PUBLICATIONS_WRITER: EntityId = EntityId([0, 0, 3, 0xc2]);
    pub const SEDP_PUBLICATIONS_READER: EntityId = EntityId([0, 0, 3, 0xc7]);
    pub const SEDP_SUBSCRIPTIONS_WRITER: EntityId = EntityId([0, 0, 4, 0xc2]);
    pub const SEDP_SUBSCRIPTIONS_READER: EntityId = EntityId([0, 0, 4, 0xc7]);
    pub const SPDP_WRITER: EntityId = EntityId([0, 1, 0, 0xc2]);
    pub const SPDP_READER: EntityId = EntityId([0, 1, 0, 0xc7]);
    pub const P2P_MESSAGE_WRITER: EntityId = EntityId([0, 2, 0, 0xc2]);
    pub const P2P_MESSAGE_READER: EntityId = EntityId([0, 2, 0, 0xc7]);

    pub fn as_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    pub fn from_u32(v: u32) -> EntityId {
        EntityId(v.to_be_bytes())
    }

    /// Built-in (discovery) entities have kinds 0xc0..=0xff.
    pub fn is_builtin(self) -> bool {
        self.0[3] & 0xc0 == 0xc0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.as_u32())
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({self})")
    }
}

/// Prefix + entity id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid {
    pub prefix: GuidPrefix,
    pub entity: EntityId,
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:08x}", self.prefix, self.entity.as_u32())
    }
}

/// RTPS Time_t / Duration_t: seconds and 2^-32 fractions of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Time {
    pub seconds: i32,
    pub fraction: u32,
}

impl Time {
    /// Duration_t's "infinite".
    pub const INFINITE: Time = Time {
        seconds: 0x7fff_ffff,
        fraction: 0xffff_ffff,
    };

    pub fn from_std(d: std::time::Duration) -> Time {
        let seconds = i32::try_from(d.as_secs()).unwrap_or(i32::MAX);
        let fraction = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        Time { seconds, fraction }
    }

    /// `None` for negative or infinite values.
    pub fn to_std(self) -> Option<std::time::Duration> {
        if self == Time::INFINITE || self.seconds < 0 {
            return None;
        }
        let nanos = (u64::from(self.fraction) * 1_000_000_000) >> 32;
        Some(std::time::Duration::new(self.seconds as u64, nanos as u32))
    }

    /// Now, since the Unix epoch.
    pub fn now() -> Time {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time::from_std(d)
    }
}

/// Locator kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocatorKind {
    UdpV4,
    UdpV6,
    /// Anything else (TCP, Fast DDS shared memory 16, vendor kinds, invalid -1).
    Other(i32),
}

impl From<i32> for LocatorKind {
    fn from(v: i32) -> LocatorKind {
        match v {
            1 => LocatorKind::UdpV4,
            2 => LocatorKind::UdpV6,
            o => LocatorKind::Other(o),
        }
    }
}

impl From<LocatorKind> for i32 {
    fn from(k: LocatorKind) -> i32 {
        match k {
            LocatorKind::UdpV4 => 1,
            LocatorKind::UdpV6 => 2,
            LocatorKind::Other(o) => o,
        }
    }
}

/// Locator_t: where an endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Locator {
    pub kind: LocatorKind,
    pub port: u32,
    /// IPv4 lives in the last 4 octets.
    pub address: [u8; 16],
}

impl Locator {
    pub fn udp_v4(ip: std::net::Ipv4Addr, port: u16) -> Locator {
        let mut address = [0; 16];
        address[12..].copy_from_slice(&ip.octets());
        Locator {
            kind: LocatorKind::UdpV4,
            port: port.into(),
            address,
        }
    }

    pub fn udp_v6(ip: std::net::Ipv6Addr, port: u16) -> Locator {
        Locator {
            kind: LocatorKind::UdpV6,
            port: port.into(),
            address: ip.octets(),
        }
    }

    /// The IP address of a UDP locator; `None` for other kinds.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self.kind {
            LocatorKind::UdpV4 => {
                let [.., a, b, c, d] = self.address;
                Some(std::net::Ipv4Addr::new(a, b, c, d).into())
            }
            LocatorKind::UdpV6 => Some(std::net::Ipv6Addr::from(self.address).into()),
            LocatorKind::Other(_) => None,
        }
    }

    /// Address and port of a UDP locator whose port fits in 16 bits.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let port = u16::try_from(self.port).ok()?;
        Some(std::net::SocketAddr::new(self.ip()?, port))
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(std::net::IpAddr::V4(ip)) => write!(f, "udpv4://{ip}:{}", self.port),
            Some(std::net::IpAddr::V6(ip)) => write!(f, "udpv6://[{ip}]:{}", self.port),
            None => write!(f, "kind{}:{}", i32::from(self.kind), self.port),
        }
    }
}

#[cfg(test)]
mod tests;
