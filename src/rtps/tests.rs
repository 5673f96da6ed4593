//! Unit and property tests of the RTPS parser and SPDP builder.

use super::message::{flag, id};
use super::spdp::{self, pid, ParticipantData};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const PREFIX: [u8; 12] = [1, 0x10, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 1, 2, 3, 4];

fn header(vendor: u16) -> Vec<u8> {
    let mut m = b"RTPS".to_vec();
    m.extend_from_slice(&[2, 3]);
    m.extend_from_slice(&vendor.to_be_bytes());
    m.extend_from_slice(&PREFIX);
    m
}

fn le(flags: u8) -> bool {
    flags & 1 != 0
}

fn u16b(v: u16, little: bool) -> [u8; 2] {
    if little {
        v.to_le_bytes()
    } else {
        v.to_be_bytes()
    }
}

fn u32b(v: u32, little: bool) -> [u8; 4] {
    if little {
        v.to_le_bytes()
    } else {
        v.to_be_bytes()
    }
}

fn sn(v: i64, little: bool) -> Vec<u8> {
    let mut o = u32b((v >> 32) as u32, little).to_vec();
    o.extend_from_slice(&u32b(v as u32, little));
    o
}

/// A submessage with octetsToNextHeader = body length (or `len` if given).
fn sm(m: &mut Vec<u8>, sid: u8, flags: u8, body: &[u8], len: Option<u16>) {
    m.push(sid);
    m.push(flags);
    m.extend_from_slice(&u16b(len.unwrap_or(body.len() as u16), le(flags)));
    m.extend_from_slice(body);
}

fn param(out: &mut Vec<u8>, pid: u16, value: &[u8], little: bool) {
    out.extend_from_slice(&u16b(pid, little));
    out.extend_from_slice(&u16b(value.len() as u16, little));
    out.extend_from_slice(value);
}

fn sentinel(out: &mut Vec<u8>, little: bool) {
    out.extend_from_slice(&u16b(1, little));
    out.extend_from_slice(&[0, 0]);
}

fn data_body(flags: u8, writer: EntityId, inline: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let l = le(flags);
    let mut b = vec![0, 0];
    b.extend_from_slice(&u16b(16, l));
    b.extend_from_slice(&EntityId::SPDP_READER.0);
    b.extend_from_slice(&writer.0);
    b.extend_from_slice(&sn(0x1_0000_0002, l));
    if let Some(q) = inline {
        b.extend_from_slice(q);
    }
    b.extend_from_slice(payload);
    b
}

/// An SPDP payload written by hand, independent of `spdp::announce`.
fn spdp_payload(little: bool) -> Vec<u8> {
    let mut p = if little {
        vec![0, 3, 0, 0]
    } else {
        vec![0, 2, 0, 0]
    };
    param(&mut p, pid::PROTOCOL_VERSION, &[2, 1, 0, 0], little);
    param(&mut p, pid::VENDORID, &[1, 0x0f, 0, 0], little);
    let mut guid = PREFIX.to_vec();
    guid[0] = 0x42;
    guid.extend_from_slice(&[0, 0, 1, 0xc1]);
    param(&mut p, pid::PARTICIPANT_GUID, &guid, little);
    // Vendor-specific: garbage that would be an invalid locator.
    param(&mut p, 0x8031, &[9, 9, 9, 9], little);
    // Unknown standard PID: ignored.
    param(&mut p, 0x0059, &[0; 8], little);
    param(&mut p, pid::DOMAIN_ID, &u32b(42, little), little);
    let mut loc = u32b(1, little).to_vec();
    loc.extend_from_slice(&u32b(7410, little));
    loc.extend_from_slice(&[0; 12]);
    loc.extend_from_slice(&[10, 99, 0, 1]);
    param(&mut p, pid::METATRAFFIC_UNICAST_LOCATOR, &loc, little);
    let mut loc6 = u32b(2, little).to_vec();
    loc6.extend_from_slice(&u32b(7411, little));
    loc6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
    param(&mut p, pid::DEFAULT_UNICAST_LOCATOR, &loc6, little);
    let mut mc = u32b(1, little).to_vec();
    mc.extend_from_slice(&u32b(7400, little));
    mc.extend_from_slice(&[0; 12]);
    mc.extend_from_slice(&[239, 255, 0, 1]);
    param(&mut p, pid::METATRAFFIC_MULTICAST_LOCATOR, &mc, little);
    let mut shm = u32b(16, little).to_vec();
    shm.extend_from_slice(&u32b(1234, little));
    shm.extend_from_slice(&[7; 16]);
    param(&mut p, pid::DEFAULT_MULTICAST_LOCATOR, &shm, little);
    let mut lease = u32b(20, little).to_vec();
    lease.extend_from_slice(&u32b(0x8000_0000, little));
    param(&mut p, pid::PARTICIPANT_LEASE_DURATION, &lease, little);
    param(
        &mut p,
        pid::BUILTIN_ENDPOINT_SET,
        &u32b(0xc3f, little),
        little,
    );
    let mut name = u32b(6, little).to_vec();
    name.extend_from_slice(b"talk\xffr\0\0");
    param(&mut p, pid::ENTITY_NAME, &name, little);
    let mut tag = u32b(4, little).to_vec();
    tag.extend_from_slice(b"abc\0");
    param(&mut p, pid::DOMAIN_TAG, &tag, little);
    // PID_PAD is skipped.
    param(&mut p, 0x0000, &[0; 4], little);
    sentinel(&mut p, little);
    p
}

#[test]
fn vendor_names() {
    assert_eq!(vendor_name(0x0110), "Eclipse Cyclone DDS");
    assert_eq!(vendor_name(0x010f), "eProsima Fast DDS");
    assert_eq!(vendor_name(0x0101), "RTI Connext");
    assert_eq!(vendor_name(0x0102), "OpenSplice");
    assert_eq!(vendor_name(0x0103), "OpenDDS");
    assert_eq!(vendor_name(0x0112), "RustDDS");
    assert_eq!(vendor_name(0xabcd), "unknown");
    assert_eq!(
        VendorId::CYCLONE.to_string(),
        "0x0110 (Eclipse Cyclone DDS)"
    );
}

#[test]
fn header_only() {
    let m = header(0x0110);
    let msg = parse_message(&m).unwrap();
    assert_eq!(msg.header.version, ProtocolVersion { major: 2, minor: 3 });
    assert_eq!(msg.header.vendor_id, VendorId::CYCLONE);
    assert_eq!(msg.header.guid_prefix, GuidPrefix(PREFIX));
    assert!(msg.submessages().is_empty());
    assert_eq!(
        msg.header.guid_prefix.to_string(),
        "0110aabbccddeeff01020304"
    );
}

#[test]
fn bad_header() {
    let e = parse_message(b"RTPX\x02\x03\x01\x10").unwrap_err();
    assert_eq!(e.offset, 0);
    assert!(matches!(e.kind, ErrorKind::BadMagic(_)), "{e}");
    let e = parse_message(&header(0x0110)[..15]).unwrap_err();
    assert_eq!(e.offset, 8);
    assert!(
        matches!(
            e.kind,
            ErrorKind::Truncated {
                what: "guid prefix",
                need: 12,
                have: 7
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("offset 8"), "{e}");
    assert!(parse_message(&[]).is_err());
}

fn control_message(flags_le: u8) -> Vec<u8> {
    let l = le(flags_le);
    let mut m = header(0x010f);
    // INFO_DST
    let dst = [9u8; 12];
    sm(&mut m, id::INFO_DST, flags_le, &dst, None);
    // HEARTBEAT, final + liveliness
    let mut hb = EntityId::SEDP_PUBLICATIONS_READER.0.to_vec();
    hb.extend_from_slice(&EntityId::SEDP_PUBLICATIONS_WRITER.0);
    hb.extend_from_slice(&sn(1, l));
    hb.extend_from_slice(&sn(0x2_0000_0005, l));
    hb.extend_from_slice(&u32b(7, l));
    sm(
        &mut m,
        id::HEARTBEAT,
        flags_le | flag::FINAL | flag::LIVELINESS,
        &hb,
        None,
    );
    // vendor-specific submessage: skipped
    sm(&mut m, 0x80, flags_le, &[1, 2, 3, 4, 5, 6, 7, 8], None);
    // PAD with a body
    sm(&mut m, id::PAD, flags_le, &[0; 4], None);
    // ACKNACK: base 3, 40 bits (2 words), bits 0 and 33 set
    let mut an = EntityId::SEDP_SUBSCRIPTIONS_READER.0.to_vec();
    an.extend_from_slice(&EntityId::SEDP_SUBSCRIPTIONS_WRITER.0);
    an.extend_from_slice(&sn(3, l));
    an.extend_from_slice(&u32b(40, l));
    an.extend_from_slice(&u32b(0x8000_0000, l));
    an.extend_from_slice(&u32b(0x4000_0000, l));
    an.extend_from_slice(&u32b(11, l));
    sm(&mut m, id::ACKNACK, flags_le, &an, None);
    // GAP
    let mut gap = EntityId::UNKNOWN.0.to_vec();
    gap.extend_from_slice(&EntityId::P2P_MESSAGE_WRITER.0);
    gap.extend_from_slice(&sn(4, l));
    gap.extend_from_slice(&sn(6, l));
    gap.extend_from_slice(&u32b(0, l));
    sm(&mut m, id::GAP, flags_le, &gap, None);
    m
}

fn check_control(m: &[u8]) {
    let msg = parse_message(m).unwrap();
    let s = msg.submessages();
    assert_eq!(s.len(), 6);
    assert_eq!(s[0].offset, 20);
    assert_eq!(s[0].kind, SubmessageKind::InfoDst(GuidPrefix([9; 12])));
    let SubmessageKind::Heartbeat(hb) = s[1].kind else {
        panic!("{:?}", s[1])
    };
    assert_eq!(hb.reader_id, EntityId::SEDP_PUBLICATIONS_READER);
    assert_eq!(hb.writer_id, EntityId::SEDP_PUBLICATIONS_WRITER);
    assert_eq!((hb.first_sn, hb.last_sn, hb.count), (1, 0x2_0000_0005, 7));
    assert!(hb.is_final && hb.liveliness);
    assert_eq!((s[2].id, &s[2].kind), (0x80, &SubmessageKind::Other));
    assert_eq!(s[2].body, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(s[3].kind, SubmessageKind::Pad);
    let SubmessageKind::AckNack(an) = s[4].kind else {
        panic!("{:?}", s[4])
    };
    assert_eq!(an.reader_sn_state.base, 3);
    assert_eq!(an.reader_sn_state.num_bits, 40);
    assert_eq!(an.reader_sn_state.iter().collect::<Vec<_>>(), vec![3, 36]);
    assert_eq!(an.count, 11);
    assert!(!an.is_final);
    let SubmessageKind::Gap(g) = s[5].kind else {
        panic!("{:?}", s[5])
    };
    assert_eq!(
        (g.gap_start, g.gap_list.base, g.gap_list.num_bits),
        (4, 6, 0)
    );
}

#[test]
fn control_submessages_little_endian() {
    check_control(&control_message(1));
}

#[test]
fn control_submessages_big_endian() {
    let m = control_message(0);
    check_control(&m);
    assert_eq!(
        parse_message(&m).unwrap().submessages()[1].endian(),
        Endian::Big
    );
}

#[test]
fn mixed_endianness_in_one_message() {
    let mut a = control_message(1);
    let b = control_message(0);
    a.extend_from_slice(&b[20..]);
    let msg = parse_message(&a).unwrap();
    assert_eq!(msg.submessages().len(), 12);
    assert_eq!(msg.submessages()[7].endian(), Endian::Big);
}

#[test]
fn info_ts_valid_and_invalidated() {
    for f in [0u8, 1] {
        let l = le(f);
        let mut m = header(0x0110);
        let mut t = u32b(1_700_000_000, l).to_vec();
        t.extend_from_slice(&u32b(0x4000_0000, l));
        sm(&mut m, id::INFO_TS, f, &t, None);
        // Invalidated INFO_TS with octetsToNextHeader 0: NOT the last submessage.
        sm(&mut m, id::INFO_TS, f | flag::INVALIDATE, &[], Some(0));
        sm(&mut m, id::INFO_DST, f, &[0; 12], None);
        let msg = parse_message(&m).unwrap();
        let s = msg.submessages();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].kind,
            SubmessageKind::InfoTs(Some(Time {
                seconds: 1_700_000_000,
                fraction: 0x4000_0000
            }))
        );
        assert_eq!(s[1].kind, SubmessageKind::InfoTs(None));
        assert_eq!(s[2].kind, SubmessageKind::InfoDst(GuidPrefix([0; 12])));
    }
}

#[test]
fn octets_to_next_header_zero_runs_to_end() {
    for f in [0u8, 1] {
        let payload = spdp_payload(le(f));
        let body = data_body(f | flag::DATA, EntityId::SPDP_WRITER, None, &payload);
        let mut m = header(0x010f);
        sm(&mut m, id::DATA, f | flag::DATA, &body, Some(0));
        let msg = parse_message(&m).unwrap();
        assert_eq!(msg.submessages().len(), 1);
        assert_eq!(msg.submessages()[0].octets_to_next_header, 0);
        assert_eq!(msg.submessages()[0].body.len(), body.len());
        let p = spdp::parse_participant(&msg).unwrap().unwrap();
        assert_eq!(p.domain_id, Some(42));
    }
}

#[test]
fn submessage_overrun_is_an_error_with_offset() {
    let mut m = header(0x0110);
    sm(&mut m, id::INFO_DST, 1, &[0; 12], None);
    sm(&mut m, id::HEARTBEAT, 1, &[0; 8], Some(28));
    let e = parse_message(&m).unwrap_err();
    assert_eq!(e.offset, 36);
    assert_eq!(
        e.kind,
        ErrorKind::SubmessageOverrun {
            id: id::HEARTBEAT,
            claimed: 28,
            have: 8
        }
    );
    // A truncated submessage header.
    let mut m = header(0x0110);
    m.extend_from_slice(&[id::DATA, 1, 4]);
    assert!(matches!(
        parse_message(&m).unwrap_err(),
        ParseError {
            offset: 22,
            kind: ErrorKind::Truncated { .. }
        }
    ));
}

#[test]
fn known_submessage_too_short() {
    let mut m = header(0x0110);
    sm(&mut m, id::HEARTBEAT, 1, &[0; 20], None);
    let e = parse_message(&m).unwrap_err();
    assert_eq!(e.offset, 24);
    assert!(matches!(
        e.kind,
        ErrorKind::SubmessageTooShort {
            id: 0x07,
            len: 20,
            need: 28
        }
    ));
}

#[test]
fn acknack_bitmap_too_large() {
    let mut m = header(0x0110);
    let mut an = vec![0; 8];
    an.extend_from_slice(&sn(1, true));
    an.extend_from_slice(&u32b(1000, true));
    an.extend_from_slice(&[0; 8]);
    sm(&mut m, id::ACKNACK, 1, &an, None);
    let e = parse_message(&m).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadBitmapSize(1000));
    assert_eq!(e.offset, 24 + 16);
}

#[test]
fn data_with_inline_qos_is_skipped_correctly() {
    for f in [0u8, 1] {
        let l = le(f);
        let mut q = Vec::new();
        param(&mut q, pid::KEY_HASH, &[0x42; 16], l);
        param(&mut q, pid::STATUS_INFO, &[0, 0, 0, 0], l);
        // a sentinel with a non-zero length: the length is ignored
        q.extend_from_slice(&u16b(1, l));
        q.extend_from_slice(&u16b(4, l));
        let payload = spdp_payload(!l); // encapsulation endianness differs from the submessage's
        let flags = f | flag::DATA | flag::INLINE_QOS;
        let body = data_body(flags, EntityId::SPDP_WRITER, Some(&q), &payload);
        let mut m = header(0x010f);
        sm(&mut m, id::INFO_TS, f | flag::INVALIDATE, &[], None);
        sm(&mut m, id::DATA, flags, &body, None);
        let msg = parse_message(&m).unwrap();
        let SubmessageKind::Data(d) = &msg.submessages()[1].kind else {
            panic!()
        };
        let qos = d.inline_qos.unwrap();
        assert_eq!(qos.bytes.len(), q.len());
        assert_eq!(qos.key_hash(), Some([0x42; 16]));
        assert_eq!(qos.status_info(), Some(0));
        assert_eq!(d.writer_sn, 0x1_0000_0002);
        assert_eq!(d.payload.unwrap(), &payload[..]);
        assert_eq!(d.payload_offset, 20 + 4 + 4 + 20 + q.len());
        let p = spdp::parse_participant(&msg).unwrap().unwrap();
        assert_eq!(p.entity_name.as_deref(), Some("talk\u{fffd}r"));
        assert!(spdp::departed(&msg).is_empty());
    }
}

#[test]
fn bad_octets_to_inline_qos() {
    let mut body = data_body(
        1 | flag::DATA,
        EntityId::SPDP_WRITER,
        None,
        &spdp_payload(true),
    );
    body[2..4].copy_from_slice(&8u16.to_le_bytes());
    let mut m = header(0x010f);
    sm(&mut m, id::DATA, 1 | flag::DATA, &body, None);
    let e = parse_message(&m).unwrap_err();
    assert_eq!(e.offset, 26);
    assert!(matches!(
        e.kind,
        ErrorKind::BadInlineQosOffset {
            value: 8,
            min: 16,
            ..
        }
    ));
    // Pointing past the end.
    body[2..4].copy_from_slice(&5000u16.to_le_bytes());
    let mut m = header(0x010f);
    sm(&mut m, id::DATA, 1 | flag::DATA, &body, None);
    assert!(matches!(
        parse_message(&m).unwrap_err().kind,
        ErrorKind::BadInlineQosOffset { value: 5000, .. }
    ));
    // A larger but valid octetsToInlineQos skips unknown extra fields.
    let mut body = data_body(1 | flag::DATA, EntityId::SPDP_WRITER, None, &[]);
    body[2..4].copy_from_slice(&20u16.to_le_bytes());
    body.extend_from_slice(&[0xee; 4]);
    body.extend_from_slice(&spdp_payload(true));
    let mut m = header(0x010f);
    sm(&mut m, id::DATA, 1 | flag::DATA, &body, None);
    let msg = parse_message(&m).unwrap();
    assert_eq!(
        spdp::parse_participant(&msg).unwrap().unwrap().domain_id,
        Some(42)
    );
}

#[test]
fn inline_qos_without_sentinel() {
    let mut q = Vec::new();
    param(&mut q, pid::KEY_HASH, &[0x42; 16], true);
    let flags = 1 | flag::INLINE_QOS;
    let body = data_body(flags, EntityId::SPDP_WRITER, Some(&q), &[]);
    let mut m = header(0x010f);
    sm(&mut m, id::DATA, flags, &body, None);
    let e = parse_message(&m).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MissingSentinel);
    assert_eq!(e.offset, 20 + 4 + 20 + 20);
}

#[test]
fn data_frag_headers() {
    for f in [0u8, 1] {
        let l = le(f);
        let mut b = vec![0, 0];
        b.extend_from_slice(&u16b(28, l));
        b.extend_from_slice(&EntityId::UNKNOWN.0);
        b.extend_from_slice(&EntityId::SPDP_WRITER.0);
        b.extend_from_slice(&sn(9, l));
        b.extend_from_slice(&u32b(3, l));
        b.extend_from_slice(&u16b(2, l));
        b.extend_from_slice(&u16b(1024, l));
        b.extend_from_slice(&u32b(5000, l));
        b.extend_from_slice(&[0xab; 2048]);
        let mut m = header(0x0101);
        sm(&mut m, id::DATA_FRAG, f, &b, None);
        let msg = parse_message(&m).unwrap();
        let SubmessageKind::DataFrag(d) = &msg.submessages()[0].kind else {
            panic!()
        };
        assert_eq!(d.writer_id, EntityId::SPDP_WRITER);
        assert_eq!(d.writer_sn, 9);
        assert_eq!(
            (
                d.fragment_starting_num,
                d.fragments_in_submessage,
                d.fragment_size,
                d.sample_size
            ),
            (3, 2, 1024, 5000)
        );
        assert_eq!(d.fragments.len(), 2048);
        assert_eq!(d.fragments_offset, 20 + 4 + 32);
        // SPDP sent as fragments is not decoded.
        assert!(spdp::parse_participant(&msg).is_none());
    }
}

fn expected_participant() -> ParticipantData {
    let mut prefix = PREFIX;
    prefix[0] = 0x42;
    let mut mcshm = Locator {
        kind: LocatorKind::Other(16),
        port: 1234,
        address: [7; 16],
    };
    mcshm.kind = LocatorKind::from(16);
    ParticipantData {
        guid_prefix: GuidPrefix(prefix),
        vendor_id: VendorId::FAST_DDS,
        protocol_version: ProtocolVersion::V2_1,
        domain_id: Some(42),
        domain_tag: Some("abc".into()),
        entity_name: Some("talk\u{fffd}r".into()),
        default_unicast_locators: vec![Locator::udp_v6("fd00::1".parse().unwrap(), 7411)],
        default_multicast_locators: vec![mcshm],
        metatraffic_unicast_locators: vec![Locator::udp_v4(Ipv4Addr::new(10, 99, 0, 1), 7410)],
        metatraffic_multicast_locators: vec![Locator::udp_v4(Ipv4Addr::new(239, 255, 0, 1), 7400)],
        lease_duration: Some(Time {
            seconds: 20,
            fraction: 0x8000_0000,
        }),
        builtin_endpoints: Some(0xc3f),
    }
}

#[test]
fn spdp_hand_written_both_endiannesses() {
    for f in [0u8, 1] {
        let payload = spdp_payload(le(f));
        let flags = f | flag::DATA;
        let body = data_body(flags, EntityId::SPDP_WRITER, None, &payload);
        let mut m = header(0x0110); // header says Cyclone; PID_VENDORID wins
        sm(&mut m, id::DATA, flags, &body, None);
        let msg = parse_message(&m).unwrap();
        let p = spdp::parse_participant(&msg).unwrap().unwrap();
        assert_eq!(p, expected_participant());
        assert_eq!(
            p.metatraffic_unicast_locators[0].socket_addr(),
            Some("10.99.0.1:7410".parse().unwrap())
        );
        assert_eq!(p.default_multicast_locators[0].ip(), None);
        assert_eq!(
            p.lease_duration.unwrap().to_std(),
            Some(std::time::Duration::from_millis(20_500))
        );
        assert_eq!(p.guid().to_string(), "4210aabbccddeeff01020304:000001c1");
    }
}

#[test]
fn spdp_fallbacks_from_header() {
    let mut payload = vec![0, 3, 0, 0];
    sentinel(&mut payload, true);
    let body = data_body(1 | flag::DATA, EntityId::SPDP_WRITER, None, &payload);
    let mut m = header(0x0110);
    sm(&mut m, id::DATA, 1 | flag::DATA, &body, None);
    let msg = parse_message(&m).unwrap();
    let p = spdp::parse_participant(&msg).unwrap().unwrap();
    assert_eq!(p.guid_prefix, GuidPrefix(PREFIX));
    assert_eq!(p.vendor_id, VendorId::CYCLONE);
    assert_eq!(p.protocol_version, ProtocolVersion { major: 2, minor: 3 });
    assert_eq!(p.domain_id, None);
    let mc = |port: u16| std::net::SocketAddr::from(([239, 255, 0, 1], port));
    let uc = |port: u16| std::net::SocketAddr::from(([10, 99, 0, 1], port));
    assert_eq!(p.domain(mc(7400 + 250 * 3)), Some(3));
    assert_eq!(p.domain(uc(7400 + 250 * 3)), None);
    assert_eq!(p.domain(uc(7410 + 250 * 3 + 4)), None);
    assert_eq!(p.domain(mc(7411)), None);
    let mut with_pid = p.clone();
    with_pid.domain_id = Some(8);
    assert_eq!(with_pid.domain(uc(44864)), Some(8));
    assert_eq!(p.lease_duration, None);
}

#[test]
fn spdp_info_src_changes_the_source() {
    let mut payload = vec![0, 3, 0, 0];
    sentinel(&mut payload, true);
    let body = data_body(1 | flag::DATA, EntityId::SPDP_WRITER, None, &payload);
    let mut m = header(0x0110);
    let mut src = vec![0; 4];
    src.extend_from_slice(&[2, 4, 1, 0x0f]);
    src.extend_from_slice(&[0x77; 12]);
    sm(&mut m, id::INFO_SRC, 1, &src, None);
    sm(&mut m, id::DATA, 1 | flag::DATA, &body, None);
    let msg = parse_message(&m).unwrap();
    let p = spdp::parse_participant(&msg).unwrap().unwrap();
    assert_eq!(p.guid_prefix, GuidPrefix([0x77; 12]));
    assert_eq!(p.vendor_id, VendorId::FAST_DDS);
    assert_eq!(p.protocol_version, ProtocolVersion::V2_4);
}

#[test]
fn spdp_errors() {
    let wrap = |payload: &[u8]| {
        let body = data_body(1 | flag::DATA, EntityId::SPDP_WRITER, None, payload);
        let mut m = header(0x0110);
        sm(&mut m, id::DATA, 1 | flag::DATA, &body, None);
        m
    };
    let payload_at = 20 + 4 + 20;
    // CDR_LE (not a parameter list)
    let m = wrap(&[0, 1, 0, 0, 1, 2, 3, 4]);
    let e = spdp::parse_participant(&parse_message(&m).unwrap())
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (e.offset, e.kind),
        (payload_at, ErrorKind::BadEncapsulation(1))
    );
    // No sentinel
    let mut p = spdp_payload(true);
    p.truncate(p.len() - 4);
    let m = wrap(&p);
    let e = spdp::parse_participant(&parse_message(&m).unwrap())
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (e.offset, e.kind),
        (payload_at + p.len(), ErrorKind::MissingSentinel)
    );
    // A parameter longer than what is left
    let mut p = vec![0, 3, 0, 0];
    param(&mut p, pid::DOMAIN_ID, &[0; 4], true);
    p.extend_from_slice(&pid::ENTITY_NAME.to_le_bytes());
    p.extend_from_slice(&400u16.to_le_bytes());
    p.extend_from_slice(&[0; 8]);
    let e = spdp::parse_participant(&parse_message(&wrap(&p)).unwrap())
        .unwrap()
        .unwrap_err();
    assert_eq!(e.offset, payload_at + 12);
    assert_eq!(
        e.kind,
        ErrorKind::ParameterOverrun {
            pid: pid::ENTITY_NAME,
            len: 400,
            have: 8
        }
    );
    // A locator of the wrong size
    let mut p = vec![0, 3, 0, 0];
    param(&mut p, pid::DEFAULT_UNICAST_LOCATOR, &[0; 20], true);
    sentinel(&mut p, true);
    let e = spdp::parse_participant(&parse_message(&wrap(&p)).unwrap())
        .unwrap()
        .unwrap_err();
    assert_eq!(e.offset, payload_at + 4);
    assert!(matches!(
        e.kind,
        ErrorKind::BadParameterLength {
            pid: 0x31,
            len: 20,
            ..
        }
    ));
    // A string whose length runs past its parameter
    let mut p = vec![0, 3, 0, 0];
    let mut s = 100u32.to_le_bytes().to_vec();
    s.extend_from_slice(b"abc\0");
    param(&mut p, pid::ENTITY_NAME, &s, true);
    sentinel(&mut p, true);
    let e = spdp::parse_participant(&parse_message(&wrap(&p)).unwrap())
        .unwrap()
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadString { .. }), "{e}");
    // Too short for an encapsulation header
    let e = spdp::parse_participant(&parse_message(&wrap(&[0, 3])).unwrap())
        .unwrap()
        .unwrap_err();
    assert_eq!(e.offset, payload_at);
}

#[test]
fn non_spdp_data_is_not_a_participant() {
    let payload = spdp_payload(true);
    for (writer, flags) in [
        (EntityId::SEDP_PUBLICATIONS_WRITER, 1 | flag::DATA),
        (EntityId::SPDP_WRITER, 1 | flag::KEY),
        (EntityId::SPDP_WRITER, 1),
    ] {
        let body = data_body(flags, writer, None, &payload);
        let mut m = header(0x0110);
        sm(&mut m, id::DATA, flags, &body, None);
        let msg = parse_message(&m).unwrap();
        assert!(
            spdp::parse_participant(&msg).is_none(),
            "{writer} {flags:#x}"
        );
    }
}

#[test]
fn departed_participant() {
    let mut q = Vec::new();
    param(&mut q, pid::KEY_HASH, &[0x33; 16], true);
    param(&mut q, pid::STATUS_INFO, &[0, 0, 0, 3], true);
    sentinel(&mut q, true);
    let flags = 1 | flag::INLINE_QOS | flag::KEY;
    let body = data_body(
        flags,
        EntityId::SPDP_WRITER,
        Some(&q),
        &[0, 3, 0, 0, 1, 0, 0, 0],
    );
    let mut m = header(0x010f);
    sm(&mut m, id::DATA, flags, &body, None);
    let msg = parse_message(&m).unwrap();
    assert_eq!(spdp::departed(&msg), vec![GuidPrefix([0x33; 12])]);
    assert!(spdp::parse_participant(&msg).is_none());
}

#[test]
fn announce_round_trip_both_endiannesses() {
    let p = expected_participant();
    for e in [Endian::Little, Endian::Big] {
        let t = Time {
            seconds: 1_700_000_000,
            fraction: 5,
        };
        let bytes = spdp::announce_with(&p, e, t, 7);
        let msg = parse_message(&bytes).unwrap();
        assert_eq!(msg.header.guid_prefix, p.guid_prefix);
        assert_eq!(msg.header.vendor_id, p.vendor_id);
        let s = msg.submessages();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, SubmessageKind::InfoTs(Some(t)));
        assert_eq!(s[1].endian(), e);
        let SubmessageKind::Data(d) = &s[1].kind else {
            panic!()
        };
        assert_eq!(
            (d.reader_id, d.writer_id, d.writer_sn),
            (EntityId::SPDP_READER, EntityId::SPDP_WRITER, 7)
        );
        assert_eq!(
            d.payload.unwrap()[..2],
            if e == Endian::Little { [0, 3] } else { [0, 2] }
        );
        assert_eq!(spdp::parse_participant(&msg).unwrap().unwrap(), p);
        assert_eq!(bytes.len() % 4, 0);
    }
    // Minimal data round-trips too.
    let mut min = ParticipantData::new(GuidPrefix([5; 12]), VendorId(0x01aa));
    min.lease_duration = None;
    min.builtin_endpoints = None;
    let bytes = spdp::announce(&min, Endian::Big);
    assert_eq!(
        spdp::parse_participant(&parse_message(&bytes).unwrap())
            .unwrap()
            .unwrap(),
        min
    );
}

#[test]
fn announce_long_name_is_cut_not_broken() {
    let mut p = ParticipantData::new(GuidPrefix([5; 12]), VendorId::CYCLONE);
    p.entity_name = Some("é".repeat(40_000));
    let bytes = spdp::announce(&p, Endian::Little);
    let got = spdp::parse_participant(&parse_message(&bytes).unwrap())
        .unwrap()
        .unwrap();
    let name = got.entity_name.unwrap();
    assert!(name.len() <= 65_000 && name.len() > 60_000);
    assert!(name.chars().all(|c| c == 'é'));
}

#[test]
fn ports() {
    use super::ports::*;
    assert_eq!(spdp_multicast_port(0), Some(7400));
    assert_eq!(spdp_multicast_port(1), Some(7650));
    assert_eq!(spdp_multicast_port(232), Some(65400));
    assert_eq!(spdp_multicast_port(233), None);
    assert_eq!(user_multicast_port(0), Some(7401));
    assert_eq!(spdp_unicast_port(0, 0), Some(7410));
    assert_eq!(spdp_unicast_port(2, 3), Some(7400 + 500 + 10 + 6));
    assert_eq!(user_unicast_port(2, 3), Some(7400 + 500 + 11 + 6));
    assert_eq!(spdp_unicast_port(0, 120), None);
    assert_eq!(domain_from_spdp_port(7400), Some(0));
    assert_eq!(domain_from_spdp_port(7650), Some(1));
    assert_eq!(domain_from_spdp_port(7400 + 250 * 42), Some(42));
    // Unicast SPDP ports are not used to derive the domain.
    assert_eq!(domain_from_spdp_port(7400 + 250 * 42 + 12), None);
    assert_eq!(
        domain_from_destination("239.255.0.1:7650".parse().unwrap()),
        Some(1)
    );
    assert_eq!(
        domain_from_destination("[ff02::ffff:efff:1]:7650".parse().unwrap()),
        Some(1)
    );
    assert_eq!(
        domain_from_destination("10.0.0.1:7650".parse().unwrap()),
        None
    );
    assert_eq!(domain_from_spdp_port(7401), None);
    assert_eq!(domain_from_spdp_port(7411), None);
    assert_eq!(domain_from_spdp_port(7405), None);
    assert_eq!(domain_from_spdp_port(7399), None);
    assert_eq!(domain_from_spdp_port(53), None);
    assert_eq!(
        classify_port(7413),
        Some(PortRole::UserUnicast {
            domain: 0,
            participant: 1
        })
    );
    assert_eq!(
        classify_port(7412),
        Some(PortRole::SpdpUnicast {
            domain: 0,
            participant: 1
        })
    );
    for d in 0..=232 {
        assert_eq!(
            domain_from_spdp_port(spdp_multicast_port(d).unwrap()),
            Some(d)
        );
        for p in 0..5 {
            if let Some(port) = spdp_unicast_port(d, p) {
                assert_eq!(
                    classify_port(port),
                    Some(PortRole::SpdpUnicast {
                        domain: d,
                        participant: p
                    })
                );
            }
        }
    }
}

#[test]
fn pcap_write_and_read() {
    let a: std::net::SocketAddr = "10.99.0.1:40000".parse().unwrap();
    let g: std::net::SocketAddr = "239.255.0.1:7400".parse().unwrap();
    let p = spdp::announce(&expected_participant(), Endian::Little);
    let file = pcap::write_ipv4_udp(&[(a, g, 1, &p), (a, g, 32, b"hello")]);
    let pk = pcap::udp_packets(&file).unwrap();
    assert_eq!(pk.len(), 2);
    assert_eq!((pk[0].frame, pk[0].src, pk[0].dst, pk[0].ttl), (1, a, g, 1));
    assert_eq!(pk[0].payload, &p[..]);
    assert!(!pk[0].truncated);
    assert_eq!(
        (pk[1].frame, pk[1].ttl, pk[1].payload),
        (2, 32, &b"hello"[..])
    );
    // Truncated file
    let e = pcap::udp_packets(&file[..file.len() - 3]).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadCapture(_)));
    assert!(pcap::udp_packets(b"\x0a\x0d\x0d\x0a....................").is_err());
    assert!(pcap::udp_packets(b"short").is_err());
}

mod props {
    use super::super::*;
    use super::spdp::{self, ParticipantData};
    use proptest::prelude::*;

    fn locator() -> impl Strategy<Value = Locator> {
        (
            prop_oneof![Just(1i32), Just(2), Just(16), any::<i32>()],
            any::<u32>(),
            any::<[u8; 16]>(),
        )
            .prop_map(|(k, port, address)| Locator {
                kind: LocatorKind::from(k),
                port,
                address,
            })
    }

    fn name() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[^\u{0}]{0,40}")
    }

    prop_compose! {
        fn participant()(
            prefix in any::<[u8; 12]>(),
            vendor in any::<u16>(),
            major in any::<u8>(), minor in any::<u8>(),
            domain_id in proptest::option::of(any::<u32>()),
            domain_tag in name(),
            entity_name in name(),
            du in proptest::collection::vec(locator(), 0..4),
            dm in proptest::collection::vec(locator(), 0..3),
            mu in proptest::collection::vec(locator(), 0..4),
            mm in proptest::collection::vec(locator(), 0..3),
            lease in proptest::option::of((any::<i32>(), any::<u32>())),
            builtin in proptest::option::of(any::<u32>()),
        ) -> ParticipantData {
            ParticipantData {
                guid_prefix: GuidPrefix(prefix),
                vendor_id: VendorId(vendor),
                protocol_version: ProtocolVersion { major, minor },
                domain_id, domain_tag, entity_name,
                default_unicast_locators: du,
                default_multicast_locators: dm,
                metatraffic_unicast_locators: mu,
                metatraffic_multicast_locators: mm,
                lease_duration: lease.map(|(seconds, fraction)| Time { seconds, fraction }),
                builtin_endpoints: builtin,
            }
        }
    }

    /// Everything the parser offers, exercised on one input.
    fn exercise(bytes: &[u8]) {
        super::super::fuzzing::check(bytes);
        if let Ok(msg) = parse_message(bytes) {
            for sm in msg.submessages() {
                assert!(sm.offset + 4 + sm.body.len() <= bytes.len());
                if let SubmessageKind::Data(d) = &sm.kind {
                    if let Some(q) = d.inline_qos {
                        let _ = q.parameters().count();
                        let _ = (q.status_info(), q.key_hash());
                    }
                }
                if let SubmessageKind::AckNack(a) = &sm.kind {
                    assert!(a.reader_sn_state.iter().count() <= 256);
                }
            }
            for p in spdp::participants(&msg).flatten() {
                let _ = p.domain(([239, 255, 0, 1], 7400).into());
                for (_, l) in p.locators() {
                    let _ = l.to_string();
                }
            }
            let _ = spdp::departed(&msg);
        }
        let _ = pcap::udp_packets(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            exercise(&bytes);
        }

        #[test]
        fn random_after_valid_header_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut m = b"RTPS\x02\x03\x01\x10".to_vec();
            m.extend_from_slice(&[0; 12]);
            m.extend_from_slice(&bytes);
            exercise(&m);
        }

        #[test]
        fn announce_parse_round_trip(p in participant(), big in any::<bool>(), sn in any::<i64>()) {
            let e = if big { Endian::Big } else { Endian::Little };
            let bytes = spdp::announce_with(&p, e, Time { seconds: 1, fraction: 2 }, sn);
            let msg = parse_message(&bytes).unwrap();
            let got = spdp::parse_participant(&msg).unwrap().unwrap();
            prop_assert_eq!(got, p);
        }

        #[test]
        fn mutated_valid_messages_never_panic(
            p in participant(),
            big in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        ) {
            let e = if big { Endian::Big } else { Endian::Little };
            let mut bytes = spdp::announce(&p, e);
            for (at, v, op) in edits {
                if bytes.is_empty() { break; }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = v,
                    1 => bytes.truncate(i),
                    2 => bytes.insert(i, v),
                    _ => { bytes.remove(i); }
                }
            }
            exercise(&bytes);
        }
    }
}
