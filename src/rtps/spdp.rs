//! SPDP: the participant announcements every DDS participant multicasts to
//! 239.255.0.1:7400+250·domain, read into [`ParticipantData`] and built from one.
//!
//! Only unfragmented announcements are decoded (SPDP sent as DATA_FRAG, e.g.
//! with kilobytes of user data, is not reassembled).

use super::message::{flag, id, Message, SubmessageKind, HEADER_LEN};
use super::params::{write_param, Parameter, ParameterIter, PID_SENTINEL};
use super::wire::{Result, Writer};
use super::{
    ports, Endian, EntityId, ErrorKind, Guid, GuidPrefix, Locator, LocatorKind, ParseError,
    ProtocolVersion, Time, VendorId,
};

/// Parameter ids used in SPDP.
pub mod pid {
    pub const PARTICIPANT_LEASE_DURATION: u16 = 0x0002;
    pub const DOMAIN_ID: u16 = 0x000f;
    pub const PROTOCOL_VERSION: u16 = 0x0015;
    pub const VENDORID: u16 = 0x0016;
    pub const DEFAULT_UNICAST_LOCATOR: u16 = 0x0031;
    pub const METATRAFFIC_UNICAST_LOCATOR: u16 = 0x0032;
    pub const METATRAFFIC_MULTICAST_LOCATOR: u16 = 0x0033;
    pub const DEFAULT_MULTICAST_LOCATOR: u16 = 0x0048;
    pub const PARTICIPANT_GUID: u16 = 0x0050;
    pub const BUILTIN_ENDPOINT_SET: u16 = 0x0058;
    pub const ENTITY_NAME: u16 = 0x0062;
    pub const KEY_HASH: u16 = 0x0070;
    pub const STATUS_INFO: u16 = 0x0071;
    pub const DOMAIN_TAG: u16 = 0x4014;
}

/// Serialized payload encapsulation ids.
pub const PL_CDR_BE: u16 = 0x0002;
pub const PL_CDR_LE: u16 = 0x0003;

/// BuiltinEndpointSet bits.
pub mod builtin {
    pub const PARTICIPANT_ANNOUNCER: u32 = 1 << 0;
    pub const PARTICIPANT_DETECTOR: u32 = 1 << 1;
    pub const PUBLICATIONS_ANNOUNCER: u32 = 1 << 2;
    pub const PUBLICATIONS_DETECTOR: u32 = 1 << 3;
    pub const SUBSCRIPTIONS_ANNOUNCER: u32 = 1 << 4;
    pub const SUBSCRIPTIONS_DETECTOR: u32 = 1 << 5;
    pub const PARTICIPANT_MESSAGE_WRITER: u32 = 1 << 10;
    pub const PARTICIPANT_MESSAGE_READER: u32 = 1 << 11;
    /// SPDP + SEDP publications/subscriptions + participant messages.
    pub const DEFAULT: u32 = PARTICIPANT_ANNOUNCER
        | PARTICIPANT_DETECTOR
        | PUBLICATIONS_ANNOUNCER
        | PUBLICATIONS_DETECTOR
        | SUBSCRIPTIONS_ANNOUNCER
        | SUBSCRIPTIONS_DETECTOR
        | PARTICIPANT_MESSAGE_WRITER
        | PARTICIPANT_MESSAGE_READER;
}

/// What a participant says about itself in SPDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantData {
    /// From PID_PARTICIPANT_GUID, else the message's source prefix.
    pub guid_prefix: GuidPrefix,
    /// From PID_VENDORID, else the message header.
    pub vendor_id: VendorId,
    /// From PID_PROTOCOL_VERSION, else the message header.
    pub protocol_version: ProtocolVersion,
    /// PID_DOMAIN_ID; Fast DDS 2.9 omits it (see [`ParticipantData::domain`]).
    pub domain_id: Option<u32>,
    /// PID_DOMAIN_TAG.
    pub domain_tag: Option<String>,
    /// PID_ENTITY_NAME (ROS 2 leaves it empty or sets the enclave/node name).
    pub entity_name: Option<String>,
    pub default_unicast_locators: Vec<Locator>,
    pub default_multicast_locators: Vec<Locator>,
    pub metatraffic_unicast_locators: Vec<Locator>,
    pub metatraffic_multicast_locators: Vec<Locator>,
    pub lease_duration: Option<Time>,
    /// PID_BUILTIN_ENDPOINT_SET (see [`builtin`]).
    pub builtin_endpoints: Option<u32>,
}

impl ParticipantData {
    /// A participant with no locators and the usual defaults
    /// (RTPS 2.3, 20 s lease, the default built-in endpoints).
    pub fn new(guid_prefix: GuidPrefix, vendor_id: VendorId) -> ParticipantData {
        ParticipantData {
            guid_prefix,
            vendor_id,
            protocol_version: ProtocolVersion::V2_3,
            domain_id: None,
            domain_tag: None,
            entity_name: None,
            default_unicast_locators: Vec::new(),
            default_multicast_locators: Vec::new(),
            metatraffic_unicast_locators: Vec::new(),
            metatraffic_multicast_locators: Vec::new(),
            lease_duration: Some(Time {
                seconds: 20,
                fraction: 0,
            }),
            builtin_endpoints: Some(builtin::DEFAULT),
        }
    }

    pub fn guid(&self) -> Guid {
        Guid {
            prefix: self.guid_prefix,
            entity: EntityId::PARTICIPANT,
        }
    }

    /// The domain: PID_DOMAIN_ID if present (Cyclone DDS sends it, Fast DDS
    /// 2.9 does not), else derived from where the announcement was sent when
    /// that is a multicast group on port 7400+250d
    /// ([`ports::domain_from_destination`]); `None` otherwise.
    pub fn domain(&self, dst: std::net::SocketAddr) -> Option<u32> {
        self.domain_id
            .or_else(|| ports::domain_from_destination(dst))
    }

    /// Every locator, with the list it came from.
    pub fn locators(&self) -> impl Iterator<Item = (u16, &Locator)> + '_ {
        fn l(p: u16, v: &[Locator]) -> impl Iterator<Item = (u16, &Locator)> + '_ {
            v.iter().map(move |x| (p, x))
        }
        l(
            pid::METATRAFFIC_UNICAST_LOCATOR,
            &self.metatraffic_unicast_locators,
        )
        .chain(l(
            pid::METATRAFFIC_MULTICAST_LOCATOR,
            &self.metatraffic_multicast_locators,
        ))
        .chain(l(
            pid::DEFAULT_UNICAST_LOCATOR,
            &self.default_unicast_locators,
        ))
        .chain(l(
            pid::DEFAULT_MULTICAST_LOCATOR,
            &self.default_multicast_locators,
        ))
    }
}

/// The SPDP announcements in a message: every DATA from the SPDP writer that
/// carries serialized data. Source prefixes follow INFO_SRC.
pub fn participants<'m>(
    msg: &'m Message<'_>,
) -> impl Iterator<Item = Result<ParticipantData>> + 'm {
    let mut src = (
        msg.header.guid_prefix,
        msg.header.vendor_id,
        msg.header.version,
    );
    msg.submessages()
        .iter()
        .filter_map(move |sm| match &sm.kind {
            SubmessageKind::InfoSrc(i) => {
                src = (i.guid_prefix, i.vendor_id, i.version);
                None
            }
            SubmessageKind::Data(d) if d.writer_id == EntityId::SPDP_WRITER && !d.key => {
                let payload = d.payload?;
                Some(parse_payload(
                    payload,
                    d.payload_offset,
                    src.0,
                    src.1,
                    src.2,
                ))
            }
            _ => None,
        })
}

/// The first SPDP announcement in a message, if any.
pub fn parse_participant(msg: &Message<'_>) -> Option<Result<ParticipantData>> {
    participants(msg).next()
}

/// Participants that a message says are gone: SPDP DATA whose inline
/// PID_STATUS_INFO has the disposed or unregistered bit, identified by
/// PID_KEY_HASH (or the message's source prefix).
pub fn departed(msg: &Message<'_>) -> Vec<GuidPrefix> {
    let mut out = Vec::new();
    let mut src = msg.header.guid_prefix;
    for sm in msg.submessages() {
        match &sm.kind {
            SubmessageKind::InfoSrc(i) => src = i.guid_prefix,
            SubmessageKind::Data(d) if d.writer_id == EntityId::SPDP_WRITER => {
                let Some(q) = d.inline_qos else { continue };
                if q.status_info().is_some_and(|s| s & 0x3 != 0) {
                    let prefix = q.key_hash().map_or(src, |k| {
                        let mut p = [0; 12];
                        p.copy_from_slice(&k[..12]);
                        GuidPrefix(p)
                    });
                    out.push(prefix);
                }
            }
            _ => {}
        }
    }
    out
}

/// Decodes a serialized SPDP payload (encapsulation header + ParameterList).
/// `offset` is where the payload sits in the message; the `fallback_*` values
/// fill in fields whose PIDs are absent (normally the message header's).
pub fn parse_payload(
    payload: &[u8],
    offset: usize,
    fallback_prefix: GuidPrefix,
    fallback_vendor: VendorId,
    fallback_version: ProtocolVersion,
) -> Result<ParticipantData> {
    if payload.len() < 4 {
        return Err(ParseError::new(
            offset,
            ErrorKind::Truncated {
                what: "encapsulation header",
                need: 4,
                have: payload.len(),
            },
        ));
    }
    let encap = u16::from_be_bytes([payload[0], payload[1]]);
    let endian = match encap {
        PL_CDR_LE => Endian::Little,
        PL_CDR_BE => Endian::Big,
        other => return Err(ParseError::new(offset, ErrorKind::BadEncapsulation(other))),
    };
    let mut p = ParticipantData::new(fallback_prefix, fallback_vendor);
    p.protocol_version = fallback_version;
    p.lease_duration = None;
    p.builtin_endpoints = None;
    for param in ParameterIter::new(&payload[4..], offset + 4, endian) {
        let param = param?;
        if param.is_vendor_specific() {
            continue;
        }
        apply(&mut p, &param)?;
    }
    Ok(p)
}

fn apply(p: &mut ParticipantData, param: &Parameter<'_>) -> Result<()> {
    let mut r = param.reader();
    let need = |n: usize, expected: &'static str| {
        if param.value.len() < n {
            Err(param.bad_length(expected))
        } else {
            Ok(())
        }
    };
    match param.pid {
        pid::PROTOCOL_VERSION => {
            need(2, "at least 2 (major, minor)")?;
            p.protocol_version = ProtocolVersion {
                major: param.value[0],
                minor: param.value[1],
            };
        }
        pid::VENDORID => {
            need(2, "at least 2")?;
            p.vendor_id = VendorId(u16::from_be_bytes([param.value[0], param.value[1]]));
        }
        pid::PARTICIPANT_GUID => {
            need(16, "16 (GUID)")?;
            p.guid_prefix = GuidPrefix(r.array("guid prefix")?);
        }
        pid::DOMAIN_ID => {
            need(4, "4 (u32)")?;
            p.domain_id = Some(r.u32("domain id")?);
        }
        pid::BUILTIN_ENDPOINT_SET => {
            need(4, "4 (u32)")?;
            p.builtin_endpoints = Some(r.u32("builtin endpoint set")?);
        }
        pid::PARTICIPANT_LEASE_DURATION => {
            need(8, "8 (Duration_t)")?;
            let seconds = r.i32("lease duration")?;
            let fraction = r.u32("lease duration")?;
            p.lease_duration = Some(Time { seconds, fraction });
        }
        pid::ENTITY_NAME => p.entity_name = Some(string(param, "PID_ENTITY_NAME")?),
        pid::DOMAIN_TAG => p.domain_tag = Some(string(param, "PID_DOMAIN_TAG")?),
        pid::DEFAULT_UNICAST_LOCATOR => p.default_unicast_locators.push(locator(param)?),
        pid::DEFAULT_MULTICAST_LOCATOR => p.default_multicast_locators.push(locator(param)?),
        pid::METATRAFFIC_UNICAST_LOCATOR => p.metatraffic_unicast_locators.push(locator(param)?),
        pid::METATRAFFIC_MULTICAST_LOCATOR => {
            p.metatraffic_multicast_locators.push(locator(param)?)
        }
        _ => {}
    }
    Ok(())
}

fn locator(param: &Parameter<'_>) -> Result<Locator> {
    if param.value.len() < 24 {
        return Err(param.bad_length("24 (Locator_t)"));
    }
    let mut r = param.reader();
    let kind = LocatorKind::from(r.i32("locator kind")?);
    let port = r.u32("locator port")?;
    let address = r.array("locator address")?;
    Ok(Locator {
        kind,
        port,
        address,
    })
}

/// A CDR string: u32 length (with the NUL), then the bytes. Invalid UTF-8 is
/// replaced; the string ends at the first NUL.
fn string(param: &Parameter<'_>, what: &'static str) -> Result<String> {
    let mut r = param.reader();
    let len = r.u32("string length")? as usize;
    if len > r.remaining() {
        return Err(ParseError::new(
            param.value_offset(),
            ErrorKind::BadString {
                what,
                why: "length runs past the parameter",
            },
        ));
    }
    let bytes = r.take(len, "string")?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// An SPDP announcement (INFO_TS with the current time + DATA, sequence
/// number 1) for `p`, with its submessages and ParameterList in `endian`.
pub fn announce(p: &ParticipantData, endian: Endian) -> Vec<u8> {
    announce_with(p, endian, Time::now(), 1)
}

/// Like [`announce`] with a given timestamp and writer sequence number.
///
/// Strings longer than 65 000 bytes are cut; all other fields round-trip
/// through [`parse_message`](super::parse_message) + [`parse_participant`].
pub fn announce_with(p: &ParticipantData, endian: Endian, timestamp: Time, sn: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"RTPS");
    buf.extend_from_slice(&[p.protocol_version.major, p.protocol_version.minor]);
    buf.extend_from_slice(&p.vendor_id.to_bytes());
    buf.extend_from_slice(&p.guid_prefix.0);
    debug_assert_eq!(buf.len(), HEADER_LEN);
    let e_flag = match endian {
        Endian::Little => flag::ENDIANNESS,
        Endian::Big => 0,
    };

    // INFO_TS
    {
        let mut w = Writer {
            buf: &mut buf,
            endian,
        };
        w.bytes(&[id::INFO_TS, e_flag]);
        w.u16(8);
        w.i32(timestamp.seconds);
        w.u32(timestamp.fraction);
    }

    // DATA body
    let mut body = Vec::with_capacity(256);
    {
        let mut w = Writer {
            buf: &mut body,
            endian,
        };
        w.u16(0); // extraFlags
        w.u16(16); // octetsToInlineQos
        w.bytes(&EntityId::SPDP_READER.0);
        w.bytes(&EntityId::SPDP_WRITER.0);
        w.sequence_number(sn);
        let encap = match endian {
            Endian::Little => PL_CDR_LE,
            Endian::Big => PL_CDR_BE,
        };
        w.bytes(&encap.to_be_bytes());
        w.bytes(&[0, 0]);
        write_params(&mut w, p);
    }
    let mut w = Writer {
        buf: &mut buf,
        endian,
    };
    w.bytes(&[id::DATA, e_flag | flag::DATA]);
    // A body too long for 16 bits is sent as the last submessage with 0.
    w.u16(u16::try_from(body.len()).unwrap_or(0));
    w.bytes(&body);
    buf
}

fn write_params(w: &mut Writer<'_>, p: &ParticipantData) {
    let endian = w.endian;
    let u32v = |v: u32| match endian {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    };
    write_param(
        w,
        pid::PROTOCOL_VERSION,
        &[p.protocol_version.major, p.protocol_version.minor],
    );
    write_param(w, pid::VENDORID, &p.vendor_id.to_bytes());
    let mut guid = [0u8; 16];
    guid[..12].copy_from_slice(&p.guid_prefix.0);
    guid[12..].copy_from_slice(&EntityId::PARTICIPANT.0);
    write_param(w, pid::PARTICIPANT_GUID, &guid);
    if let Some(d) = p.domain_id {
        write_param(w, pid::DOMAIN_ID, &u32v(d));
    }
    if let Some(t) = &p.domain_tag {
        write_param(w, pid::DOMAIN_TAG, &cdr_string(t, endian));
    }
    for (pid, l) in p.locators() {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&u32v(i32::from(l.kind) as u32));
        v.extend_from_slice(&u32v(l.port));
        v.extend_from_slice(&l.address);
        write_param(w, pid, &v);
    }
    if let Some(l) = p.lease_duration {
        let mut v = u32v(l.seconds as u32).to_vec();
        v.extend_from_slice(&u32v(l.fraction));
        write_param(w, pid::PARTICIPANT_LEASE_DURATION, &v);
    }
    if let Some(b) = p.builtin_endpoints {
        write_param(w, pid::BUILTIN_ENDPOINT_SET, &u32v(b));
    }
    if let Some(n) = &p.entity_name {
        write_param(w, pid::ENTITY_NAME, &cdr_string(n, endian));
    }
    w.u16(PID_SENTINEL);
    w.u16(0);
}

fn cdr_string(s: &str, endian: Endian) -> Vec<u8> {
    // Keep the parameter under 64 KiB: cut at a char boundary.
    let mut end = s.len().min(65_000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = &s[..end];
    let n = (s.len() + 1) as u32;
    let mut v = match endian {
        Endian::Little => n.to_le_bytes().to_vec(),
        Endian::Big => n.to_be_bytes().to_vec(),
    };
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}
