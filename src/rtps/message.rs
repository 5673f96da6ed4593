//! The RTPS message: header and submessages.

use super::params::{list_len, ParameterIter};
use super::wire::{Reader, Result};
use super::{Endian, EntityId, ErrorKind, GuidPrefix, ParseError, ProtocolVersion, Time, VendorId};

/// Submessage ids.
pub mod id {
    pub const PAD: u8 = 0x01;
    pub const ACKNACK: u8 = 0x06;
    pub const HEARTBEAT: u8 = 0x07;
    pub const GAP: u8 = 0x08;
    pub const INFO_TS: u8 = 0x09;
    pub const INFO_SRC: u8 = 0x0c;
    pub const INFO_REPLY_IP4: u8 = 0x0d;
    pub const INFO_DST: u8 = 0x0e;
    pub const INFO_REPLY: u8 = 0x0f;
    pub const NACK_FRAG: u8 = 0x12;
    pub const HEARTBEAT_FRAG: u8 = 0x13;
    pub const DATA: u8 = 0x15;
    pub const DATA_FRAG: u8 = 0x16;
}

/// Submessage flag bits.
pub mod flag {
    /// Every submessage: little endian.
    pub const ENDIANNESS: u8 = 0x01;
    /// INFO_TS: no timestamp follows.
    pub const INVALIDATE: u8 = 0x02;
    /// DATA / DATA_FRAG: inline QoS present.
    pub const INLINE_QOS: u8 = 0x02;
    /// DATA: serialized data present.
    pub const DATA: u8 = 0x04;
    /// DATA: serialized key present.
    pub const KEY: u8 = 0x08;
    /// DATA_FRAG: the fragments carry a key.
    pub const FRAG_KEY: u8 = 0x04;
    /// HEARTBEAT / ACKNACK: final.
    pub const FINAL: u8 = 0x02;
    /// HEARTBEAT: liveliness.
    pub const LIVELINESS: u8 = 0x04;
}

/// The fixed 20-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: ProtocolVersion,
    pub vendor_id: VendorId,
    pub guid_prefix: GuidPrefix,
}

pub const HEADER_LEN: usize = 20;

/// A parsed message; borrows the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    submessages: Vec<Submessage<'a>>,
}

impl<'a> Message<'a> {
    pub fn submessages(&self) -> &[Submessage<'a>] {
        &self.submessages
    }
}

/// One submessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submessage<'a> {
    /// Offset of the submessage header in the message.
    pub offset: usize,
    pub id: u8,
    pub flags: u8,
    /// As on the wire (0 = up to the end of the message, for most kinds).
    pub octets_to_next_header: u16,
    /// The body (after the 4-byte submessage header).
    pub body: &'a [u8],
    pub kind: SubmessageKind<'a>,
}

impl Submessage<'_> {
    pub fn endian(&self) -> Endian {
        endian_of(self.flags)
    }
}

fn endian_of(flags: u8) -> Endian {
    if flags & flag::ENDIANNESS != 0 {
        Endian::Little
    } else {
        Endian::Big
    }
}

/// The decoded body of a submessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmessageKind<'a> {
    Pad,
    /// INFO_TS; `None` when the invalidate flag is set.
    InfoTs(Option<Time>),
    InfoSrc(InfoSrc),
    /// INFO_DST: the following submessages are for this participant
    /// (all zeros: for everyone).
    InfoDst(GuidPrefix),
    Data(Data<'a>),
    DataFrag(DataFrag<'a>),
    Heartbeat(Heartbeat),
    AckNack(AckNack),
    Gap(Gap),
    /// Any other id (INFO_REPLY, NACK_FRAG, vendor-specific 0x80.., ...): skipped.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoSrc {
    pub version: ProtocolVersion,
    pub vendor_id: VendorId,
    pub guid_prefix: GuidPrefix,
}

/// Inline QoS of a DATA or DATA_FRAG: a ParameterList in the submessage's byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineQos<'a> {
    pub offset: usize,
    /// The list, through its sentinel.
    pub bytes: &'a [u8],
    pub endian: Endian,
}

impl<'a> InlineQos<'a> {
    pub fn parameters(&self) -> ParameterIter<'a> {
        ParameterIter::new(self.bytes, self.offset, self.endian)
    }

    /// PID_STATUS_INFO (0x0071): bit 0 disposed, bit 1 unregistered. Its
    /// value is four octets, the flags in the last one.
    pub fn status_info(&self) -> Option<u32> {
        self.parameters()
            .filter_map(|p| p.ok())
            .find(|p| p.pid == 0x0071 && p.value.len() >= 4)
            .map(|p| u32::from_be_bytes([p.value[0], p.value[1], p.value[2], p.value[3]]))
    }

    /// PID_KEY_HASH (0x0070).
    pub fn key_hash(&self) -> Option<[u8; 16]> {
        let p = self
            .parameters()
            .filter_map(|p| p.ok())
            .find(|p| p.pid == 0x0070 && p.value.len() >= 16)?;
        let mut k = [0; 16];
        k.copy_from_slice(&p.value[..16]);
        Some(k)
    }
}

/// DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data<'a> {
    pub extra_flags: u16,
    pub reader_id: EntityId,
    pub writer_id: EntityId,
    pub writer_sn: i64,
    pub inline_qos: Option<InlineQos<'a>>,
    /// Serialized data or key (see `key`), starting with its 4-byte
    /// encapsulation header; `None` when neither D nor K is set.
    pub payload: Option<&'a [u8]>,
    /// Offset of `payload` in the message.
    pub payload_offset: usize,
    /// The payload is a serialized key (K flag), not data.
    pub key: bool,
}

/// DATA_FRAG (headers and the fragment bytes; no reassembly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrag<'a> {
    pub extra_flags: u16,
    pub reader_id: EntityId,
    pub writer_id: EntityId,
    pub writer_sn: i64,
    /// 1-based number of the first fragment in this submessage.
    pub fragment_starting_num: u32,
    pub fragments_in_submessage: u16,
    pub fragment_size: u16,
    pub sample_size: u32,
    pub inline_qos: Option<InlineQos<'a>>,
    pub fragments: &'a [u8],
    pub fragments_offset: usize,
    pub key: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub reader_id: EntityId,
    pub writer_id: EntityId,
    pub first_sn: i64,
    pub last_sn: i64,
    pub count: u32,
    pub is_final: bool,
    pub liveliness: bool,
}

/// SequenceNumberSet: a base and up to 256 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceNumberSet {
    pub base: i64,
    pub num_bits: u32,
    /// Only the first `(num_bits + 31) / 32` words are meaningful.
    pub bitmap: [u32; 8],
}

impl SequenceNumberSet {
    /// Sequence numbers in the set.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.num_bits.min(256)).filter_map(move |i| {
            let word = self.bitmap[(i / 32) as usize];
            (word & (0x8000_0000 >> (i % 32)) != 0).then(|| self.base.saturating_add(i64::from(i)))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckNack {
    pub reader_id: EntityId,
    pub writer_id: EntityId,
    pub reader_sn_state: SequenceNumberSet,
    pub count: u32,
    pub is_final: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub reader_id: EntityId,
    pub writer_id: EntityId,
    pub gap_start: i64,
    pub gap_list: SequenceNumberSet,
}

/// Parses one RTPS message (one UDP payload).
///
/// Fails on a bad header, a submessage header that overruns the message, or a
/// known submessage whose fixed part does not fit its length. Unknown
/// submessage ids are kept as [`SubmessageKind::Other`].
pub fn parse_message(bytes: &[u8]) -> Result<Message<'_>> {
    let mut r = Reader::new(bytes, 0, Endian::Big);
    let magic: [u8; 4] = r.array("message header")?;
    if &magic != b"RTPS" {
        return Err(ParseError::new(0, ErrorKind::BadMagic(magic)));
    }
    let [major, minor] = r.array("protocol version")?;
    let vendor = r.u16("vendor id")?;
    let guid_prefix = GuidPrefix(r.array("guid prefix")?);
    let header = Header {
        version: ProtocolVersion { major, minor },
        vendor_id: VendorId(vendor),
        guid_prefix,
    };
    let mut submessages = Vec::new();
    while r.remaining() > 0 {
        let offset = r.offset();
        let sm_id = r.u8("submessage header")?;
        let flags = r.u8("submessage header")?;
        r.endian = endian_of(flags);
        let octets = r.u16("submessage header")?;
        let len = if octets == 0 && sm_id != id::PAD && sm_id != id::INFO_TS {
            // The last submessage, up to the end of the message.
            r.remaining()
        } else {
            usize::from(octets)
        };
        let have = r.remaining();
        let body_offset = r.offset();
        let body = r.take(len, "submessage").map_err(|_| {
            ParseError::new(
                offset,
                ErrorKind::SubmessageOverrun {
                    id: sm_id,
                    claimed: len,
                    have,
                },
            )
        })?;
        let kind = parse_body(sm_id, flags, body, body_offset)?;
        submessages.push(Submessage {
            offset,
            id: sm_id,
            flags,
            octets_to_next_header: octets,
            body,
            kind,
        });
    }
    Ok(Message {
        header,
        submessages,
    })
}

/// One submessage's body, where it is in the message, and its flags.
struct Body<'a> {
    id: u8,
    flags: u8,
    bytes: &'a [u8],
    /// Offset of `bytes` in the message, for error positions.
    offset: usize,
}

impl<'a> Body<'a> {
    /// A reader over the body once it holds the `need` octets of the
    /// submessage's fixed fields; a shorter body is an error, so the reads
    /// of the fixed fields that follow cannot run past it.
    fn fixed(&self, need: usize) -> Result<Reader<'a>> {
        if self.bytes.len() < need {
            return Err(ParseError::new(
                self.offset,
                ErrorKind::SubmessageTooShort {
                    id: self.id,
                    len: self.bytes.len(),
                    need,
                },
            ));
        }
        Ok(Reader::new(self.bytes, self.offset, endian_of(self.flags)))
    }

    fn flag(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

fn entity(r: &mut Reader<'_>, what: &'static str) -> Result<EntityId> {
    r.array(what).map(EntityId)
}

/// Parses a submessage's body by its id; ids this parser does not know are
/// [`SubmessageKind::Other`], not errors.
fn parse_body(sm_id: u8, flags: u8, body: &[u8], offset: usize) -> Result<SubmessageKind<'_>> {
    let b = Body {
        id: sm_id,
        flags,
        bytes: body,
        offset,
    };
    Ok(match sm_id {
        id::PAD => SubmessageKind::Pad,
        id::INFO_TS => SubmessageKind::InfoTs(info_ts(&b)?),
        id::INFO_DST => SubmessageKind::InfoDst(GuidPrefix(b.fixed(12)?.array("guid prefix")?)),
        id::INFO_SRC => SubmessageKind::InfoSrc(info_src(&b)?),
        id::HEARTBEAT => SubmessageKind::Heartbeat(heartbeat(&b)?),
        id::ACKNACK => SubmessageKind::AckNack(acknack(&b)?),
        id::GAP => SubmessageKind::Gap(gap(&b)?),
        id::DATA => SubmessageKind::Data(data(&b)?),
        id::DATA_FRAG => SubmessageKind::DataFrag(data_frag(&b)?),
        _ => SubmessageKind::Other,
    })
}

/// INFO_TS: a timestamp, or none when the invalidate flag is set (then the
/// body may be empty).
fn info_ts(b: &Body) -> Result<Option<Time>> {
    if b.flag(flag::INVALIDATE) {
        return Ok(None);
    }
    let mut r = b.fixed(8)?;
    let seconds = r.i32("timestamp")?;
    let fraction = r.u32("timestamp")?;
    Ok(Some(Time { seconds, fraction }))
}

fn info_src(b: &Body) -> Result<InfoSrc> {
    let mut r = b.fixed(20)?;
    r.skip(4, "unused")?;
    let [major, minor] = r.array("protocol version")?;
    let vendor: [u8; 2] = r.array("vendor id")?;
    Ok(InfoSrc {
        version: ProtocolVersion { major, minor },
        vendor_id: VendorId(u16::from_be_bytes(vendor)),
        guid_prefix: GuidPrefix(r.array("guid prefix")?),
    })
}

fn heartbeat(b: &Body) -> Result<Heartbeat> {
    let mut r = b.fixed(28)?;
    Ok(Heartbeat {
        reader_id: entity(&mut r, "readerId")?,
        writer_id: entity(&mut r, "writerId")?,
        first_sn: r.sequence_number("firstSN")?,
        last_sn: r.sequence_number("lastSN")?,
        count: r.u32("count")?,
        is_final: b.flag(flag::FINAL),
        liveliness: b.flag(flag::LIVELINESS),
    })
}

fn acknack(b: &Body) -> Result<AckNack> {
    let mut r = b.fixed(24)?;
    let reader_id = entity(&mut r, "readerId")?;
    let writer_id = entity(&mut r, "writerId")?;
    let reader_sn_state = sn_set(&mut r)?;
    Ok(AckNack {
        reader_id,
        writer_id,
        reader_sn_state,
        count: r.u32("count")?,
        is_final: b.flag(flag::FINAL),
    })
}

fn gap(b: &Body) -> Result<Gap> {
    let mut r = b.fixed(28)?;
    Ok(Gap {
        reader_id: entity(&mut r, "readerId")?,
        writer_id: entity(&mut r, "writerId")?,
        gap_start: r.sequence_number("gapStart")?,
        gap_list: sn_set(&mut r)?,
    })
}

/// The fields DATA and DATA_FRAG both start with.
struct DataHead {
    extra_flags: u16,
    /// octetsToInlineQos, see [`inline_qos`].
    otiq: u16,
    reader_id: EntityId,
    writer_id: EntityId,
    writer_sn: i64,
}

impl DataHead {
    fn read(r: &mut Reader<'_>) -> Result<DataHead> {
        Ok(DataHead {
            extra_flags: r.u16("extraFlags")?,
            otiq: r.u16("octetsToInlineQos")?,
            reader_id: entity(r, "readerId")?,
            writer_id: entity(r, "writerId")?,
            writer_sn: r.sequence_number("writerSN")?,
        })
    }
}

/// DATA: 16 octets of fixed fields after octetsToInlineQos, then the
/// inline QoS (if flagged), then the payload (if the DATA or KEY flag says
/// there is one).
fn data<'a>(b: &Body<'a>) -> Result<Data<'a>> {
    let mut r = b.fixed(20)?;
    let h = DataHead::read(&mut r)?;
    let (inline_qos, rest, rest_offset) = inline_qos(b.flags, b.bytes, b.offset, h.otiq, 16)?;
    let has_payload = b.flag(flag::DATA | flag::KEY);
    Ok(Data {
        extra_flags: h.extra_flags,
        reader_id: h.reader_id,
        writer_id: h.writer_id,
        writer_sn: h.writer_sn,
        inline_qos,
        payload: has_payload.then_some(rest),
        payload_offset: rest_offset,
        key: b.flag(flag::KEY),
    })
}

/// DATA_FRAG: 28 octets of fixed fields after octetsToInlineQos, then the
/// inline QoS (if flagged), then the fragments.
fn data_frag<'a>(b: &Body<'a>) -> Result<DataFrag<'a>> {
    let mut r = b.fixed(32)?;
    let h = DataHead::read(&mut r)?;
    let fragment_starting_num = r.u32("fragmentStartingNum")?;
    let fragments_in_submessage = r.u16("fragmentsInSubmessage")?;
    let fragment_size = r.u16("fragmentSize")?;
    let sample_size = r.u32("sampleSize")?;
    let (inline_qos, rest, rest_offset) = inline_qos(b.flags, b.bytes, b.offset, h.otiq, 28)?;
    Ok(DataFrag {
        extra_flags: h.extra_flags,
        reader_id: h.reader_id,
        writer_id: h.writer_id,
        writer_sn: h.writer_sn,
        fragment_starting_num,
        fragments_in_submessage,
        fragment_size,
        sample_size,
        inline_qos,
        fragments: rest,
        fragments_offset: rest_offset,
        key: b.flag(flag::FRAG_KEY),
    })
}

/// Finds the inline QoS (if flagged) and what follows it. `otiq` counts from
/// the end of the octetsToInlineQos field (body offset 4); `min` is the size
/// of the fixed fields it must skip over.
fn inline_qos<'a>(
    flags: u8,
    body: &'a [u8],
    offset: usize,
    otiq: u16,
    min: usize,
) -> Result<(Option<InlineQos<'a>>, &'a [u8], usize)> {
    let start = 4 + usize::from(otiq);
    if usize::from(otiq) < min || start > body.len() {
        return Err(ParseError::new(
            offset + 2,
            ErrorKind::BadInlineQosOffset {
                value: otiq,
                min,
                have: body.len(),
            },
        ));
    }
    let mut rest = &body[start..];
    let mut rest_offset = offset + start;
    let mut qos = None;
    if flags & flag::INLINE_QOS != 0 {
        let endian = endian_of(flags);
        let n = list_len(rest, rest_offset, endian)?;
        qos = Some(InlineQos {
            offset: rest_offset,
            bytes: &rest[..n],
            endian,
        });
        rest = &rest[n..];
        rest_offset += n;
    }
    Ok((qos, rest, rest_offset))
}

fn sn_set(r: &mut Reader<'_>) -> Result<SequenceNumberSet> {
    let base = r.sequence_number("bitmapBase")?;
    let at = r.offset();
    let num_bits = r.u32("numBits")?;
    if num_bits > 256 {
        return Err(ParseError::new(at, ErrorKind::BadBitmapSize(num_bits)));
    }
    let mut bitmap = [0u32; 8];
    for w in bitmap.iter_mut().take(num_bits.div_ceil(32) as usize) {
        *w = r.u32("bitmap")?;
    }
    Ok(SequenceNumberSet {
        base,
        num_bits,
        bitmap,
    })
}
