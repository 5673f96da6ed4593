//! The body of the `rtps_message` fuzz target, shared with `cargo test`
//! (which runs it over the committed corpus in `fuzz/corpus/rtps_message`).

use super::{parse_message, pcap, spdp, Endian, SubmessageKind};

/// Parses `bytes` every way the crate can and checks invariants; panics
/// only when an invariant is broken (a bug), never on bad input.
pub fn check(bytes: &[u8]) {
    if let Ok(msg) = parse_message(bytes) {
        let mut end = 20;
        for sm in msg.submessages() {
            assert_eq!(sm.offset, end, "submessages are contiguous");
            end = sm.offset + 4 + sm.body.len();
            assert!(end <= bytes.len());
            match &sm.kind {
                SubmessageKind::Data(d) => {
                    if let Some(p) = d.payload {
                        assert!(d.payload_offset + p.len() <= bytes.len());
                    }
                    if let Some(q) = d.inline_qos {
                        for p in q.parameters().flatten() {
                            assert!(p.value_offset() + p.value.len() <= bytes.len());
                        }
                        let _ = (q.status_info(), q.key_hash());
                    }
                }
                SubmessageKind::DataFrag(d) => {
                    assert!(d.fragments_offset + d.fragments.len() <= bytes.len());
                }
                SubmessageKind::AckNack(a) => assert!(a.reader_sn_state.iter().count() <= 256),
                SubmessageKind::Gap(g) => assert!(g.gap_list.iter().count() <= 256),
                _ => {}
            }
        }
        assert_eq!(end, bytes.len(), "submessages cover the message");
        for p in spdp::participants(&msg).flatten() {
            let _ = p.domain(([239, 255, 0, 1], 7400).into());
            for (_, l) in p.locators() {
                let _ = (l.to_string(), l.socket_addr());
            }
            // Whatever parsed must survive our own builder unchanged.
            let short = |s: &Option<String>| s.as_ref().is_none_or(|s| s.len() <= 65_000);
            if short(&p.entity_name) && short(&p.domain_tag) {
                for e in [Endian::Little, Endian::Big] {
                    let again = spdp::announce(&p, e);
                    let msg2 = parse_message(&again).expect("our announcement parses");
                    let p2 = spdp::parse_participant(&msg2)
                        .expect("our announcement has SPDP data")
                        .expect("our announcement's SPDP data parses");
                    assert_eq!(p, p2, "round trip");
                }
            }
        }
        let _ = spdp::departed(&msg);
    }
    if let Ok(pk) = pcap::udp_packets(bytes) {
        for p in pk {
            let _ = parse_message(p.payload);
        }
    }
}
