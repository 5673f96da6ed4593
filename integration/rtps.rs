//! The RTPS parser against real captures and against Wireshark.
//!
//! Fixtures (src/rtps/testdata/*.pcap) were recorded from real Cyclone DDS
//! (ddsperf) and Fast DDS (integration/fastdds/participant) on two network
//! namespaces by src/rtps/testdata/capture.sh. `ours.pcap` holds SPDP
//! announcements built by `rtps::spdp::announce_with`, little- and big-endian.
//!
//! For each fixture, `<name>.spdp.tsv` and `<name>.sm.tsv` hold what tshark
//! reported for it (fields listed in SPDP_FIELDS / SM_FIELDS). The golden test
//! compares the parser with those files and needs no tool; the live test runs
//! tshark and compares again, and fails when tshark is missing unless
//! ROS2_CNI_SKIP_TSHARK=1 says so explicitly. `UPDATE_GOLDEN=1` rewrites the
//! golden files, `ours.pcap` and the fuzz seed corpus from the live tshark.
//! None of these tests need root.

use ros2_cni::rtps::{
    self, parse_message, pcap, ports, spdp, Endian, GuidPrefix, Locator, LocatorKind,
    ParameterIter, SubmessageKind, Time, VendorId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rtps/testdata")
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rtps_message")
}

/// The captured fixtures, with what each must contain.
struct Fixture {
    name: &'static str,
    vendors: &'static [VendorId],
    domain: u32,
    ipv6: bool,
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "cyclone-d0",
        vendors: &[VendorId::CYCLONE],
        domain: 0,
        ipv6: false,
    },
    Fixture {
        name: "cyclone-d7",
        vendors: &[VendorId::CYCLONE],
        domain: 7,
        ipv6: false,
    },
    Fixture {
        name: "cyclone-udp6",
        vendors: &[VendorId::CYCLONE],
        domain: 0,
        ipv6: true,
    },
    Fixture {
        name: "fastdds-d5",
        vendors: &[VendorId::FAST_DDS],
        domain: 5,
        ipv6: false,
    },
    Fixture {
        name: "mixed-d3",
        vendors: &[VendorId::CYCLONE, VendorId::FAST_DDS],
        domain: 3,
        ipv6: false,
    },
];

/// All captures tshark is compared on: the fixtures plus our own announcements.
fn captures() -> Vec<&'static str> {
    FIXTURES.iter().map(|f| f.name).chain(["ours"]).collect()
}

fn read_pcap(name: &str) -> Vec<u8> {
    let p = testdata().join(format!("{name}.pcap"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn fixtures_parse_completely() {
    for f in FIXTURES {
        let file = read_pcap(f.name);
        let packets = pcap::udp_packets(&file).unwrap();
        assert!(packets.len() >= 10, "{}: {} packets", f.name, packets.len());
        let mut participants = BTreeMap::new();
        let mut domains = BTreeSet::new();
        let mut kinds = BTreeSet::new();
        let mut multicast_ttls = BTreeSet::new();
        for p in &packets {
            let msg = parse_message(p.payload)
                .unwrap_or_else(|e| panic!("{} frame {}: {e}", f.name, p.frame));
            kinds.extend(msg.submessages().iter().map(|s| s.id));
            // Default multicast TTLs: Fast DDS 1 (dies at the first routed
            // hop), Cyclone DDS 32.
            if p.dst.ip().is_multicast() {
                let want = match msg.header.vendor_id {
                    VendorId::FAST_DDS => 1,
                    VendorId::CYCLONE => 32,
                    v => panic!("{}: unexpected vendor {v}", f.name),
                };
                assert_eq!(p.ttl, want, "{} frame {}: multicast TTL", f.name, p.frame);
                multicast_ttls.insert(p.ttl);
            }
            for pd in spdp::participants(&msg) {
                let pd = pd.unwrap_or_else(|e| panic!("{} frame {}: {e}", f.name, p.frame));
                // Unicast announcements without PID_DOMAIN_ID tell no domain.
                match pd.domain(p.dst) {
                    Some(d) => {
                        assert_eq!(d, f.domain, "{} frame {} to {}", f.name, p.frame, p.dst);
                        domains.insert(pd.guid_prefix);
                    }
                    None => assert!(!p.dst.ip().is_multicast() && pd.domain_id.is_none()),
                }
                participants.insert(pd.guid_prefix, pd);
            }
        }
        assert!(
            participants.len() >= 2,
            "{}: participants {:?}",
            f.name,
            participants.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            domains,
            participants.keys().copied().collect(),
            "{}: every participant's domain is known from some announcement",
            f.name
        );
        let vendors: BTreeSet<VendorId> = participants.values().map(|p| p.vendor_id).collect();
        assert_eq!(
            vendors,
            f.vendors.iter().copied().collect(),
            "{}: vendors",
            f.name
        );
        assert!(!multicast_ttls.is_empty(), "{}: no multicast", f.name);
        // Discovery in progress: SPDP + SEDP data, heartbeats, acknacks.
        for k in [0x09u8, 0x15, 0x07, 0x06] {
            assert!(
                kinds.contains(&k),
                "{}: no submessage 0x{k:02x} in {kinds:?}",
                f.name
            );
        }
        for p in participants.values() {
            assert!(
                !p.metatraffic_unicast_locators.is_empty(),
                "{}: {p:?}",
                f.name
            );
            for (_, l) in p.locators() {
                let ip = l
                    .ip()
                    .unwrap_or_else(|| panic!("{}: non-UDP locator {l}", f.name));
                assert_eq!(ip.is_ipv6(), f.ipv6, "{}: {l}", f.name);
                if !ip.is_multicast() {
                    let ok = match ip {
                        std::net::IpAddr::V4(a) => a.octets()[..3] == [10, 99, 0],
                        std::net::IpAddr::V6(a) => a.segments()[0] == 0xfd99,
                    };
                    assert!(ok, "{}: unicast locator {l} outside the test bed", f.name);
                }
            }
            assert!(p.lease_duration.is_some() && p.builtin_endpoints.is_some());
            // Observed: Fast DDS 2.9 sends no PID_DOMAIN_ID (the domain
            // comes from the port), Cyclone DDS 0.10 sends it.
            if p.vendor_id == VendorId::FAST_DDS {
                assert!(p
                    .entity_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("fixture_")));
                assert_eq!(p.domain_id, None, "{}", f.name);
            } else {
                assert_eq!(p.domain_id, Some(f.domain), "{}", f.name);
            }
        }
    }
}

/// Deterministic announcements: one per endianness, with IPv4 and IPv6
/// locators, a domain tag and a name.
fn our_announcements() -> Vec<Vec<u8>> {
    let mut p = spdp::ParticipantData::new(GuidPrefix(*b"\x01\xaaros2-cni!!"), VendorId(0x01aa));
    p.domain_id = Some(9);
    p.domain_tag = Some("lab".into());
    p.entity_name = Some("ros2-cni probe".into());
    p.metatraffic_unicast_locators = vec![Locator::udp_v4(Ipv4Addr::new(10, 99, 0, 9), 9660)];
    p.metatraffic_multicast_locators = vec![Locator::udp_v4(ports::SPDP_MULTICAST_GROUP, 9650)];
    p.default_unicast_locators = vec![
        Locator::udp_v4(Ipv4Addr::new(10, 99, 0, 9), 9661),
        Locator::udp_v6("fd99::9".parse().unwrap(), 9661),
    ];
    p.default_multicast_locators = vec![Locator {
        kind: LocatorKind::Other(16),
        port: 77,
        address: [0; 16],
    }];
    let t = Time {
        seconds: 1_750_000_000,
        fraction: 0x8000_0000,
    };
    let mut be = p.clone();
    be.guid_prefix.0[11] = b'?';
    be.protocol_version = rtps::ProtocolVersion::V2_1;
    vec![
        spdp::announce_with(&p, Endian::Little, t, 1),
        spdp::announce_with(&be, Endian::Big, t, 2),
    ]
}

fn ours_pcap() -> Vec<u8> {
    let src = "10.99.0.9:40000".parse().unwrap();
    let dst = "239.255.0.1:9650".parse().unwrap();
    let a = our_announcements();
    pcap::write_ipv4_udp(&[(src, dst, 1, &a[0]), (src, dst, 1, &a[1])])
}

#[test]
fn ours_pcap_is_what_the_builder_makes_today() {
    if update_golden() {
        return; // written by the live test
    }
    assert_eq!(
        read_pcap("ours"),
        ours_pcap(),
        "src/rtps/testdata/ours.pcap is stale: run UPDATE_GOLDEN=1 cargo test --test integration rtps::"
    );
}

// --- tshark ---------------------------------------------------------------

const SPDP_FILTER: &str = "rtps.sm.wrEntityId == 0x000100c2";
const SPDP_FIELDS: &[&str] = &[
    "frame.number",
    "udp.dstport",
    "rtps.guidPrefix.src",
    "rtps.vendorId",
    "rtps.version",
    "rtps.domain_id",
    "rtps.param.id",
    "rtps.param.guid.hostId",
    "rtps.param.guid.appId",
    "rtps.param.guid.instanceId",
    "rtps.param.entityName",
    "rtps.locator.kind",
    "rtps.locator.port",
    "rtps.locator.ipv4",
    "rtps.locator.ipv6",
    "rtps.param.ntpTime.sec",
    "rtps.param.ntpTime.fraction",
    "rtps.param.builtin_endpoint_set",
];
const SM_FILTER: &str = "rtps";
const SM_FIELDS: &[&str] = &[
    "frame.number",
    "rtps.guidPrefix.src",
    "rtps.sm.id",
    "rtps.sm.octetsToNextHeader",
];

fn update_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn tshark(pcap: &Path, filter: &str, fields: &[&str]) -> String {
    let mut c = Command::new("tshark");
    c.args(["-n", "-r"]).arg(pcap);
    c.args([
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "header=y",
        "-E",
        "separator=/t",
    ]);
    c.args(["-E", "occurrence=a", "-E", "aggregator=|"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let out = c.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// A tshark TSV: rows keyed by frame number, cells by field name, each cell
/// split on the aggregator.
type Table = BTreeMap<usize, BTreeMap<String, Vec<String>>>;

fn table(tsv: &str) -> Table {
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().expect("header row").split('\t').collect();
    assert_eq!(header[0], "frame.number");
    let mut t = Table::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let cells: Vec<&str> = l.split('\t').collect();
        let frame = cells[0].parse().expect("frame number");
        let row = header
            .iter()
            .zip(cells.iter().chain(std::iter::repeat(&"")))
            .map(|(h, c)| {
                let v = if c.is_empty() {
                    vec![]
                } else {
                    c.split('|').map(str::to_owned).collect()
                };
                (h.to_string(), v)
            })
            .collect();
        t.insert(frame, row);
    }
    t
}

fn hex_prefix(p: &GuidPrefix) -> String {
    p.to_string()
}

fn kind_hex(l: &Locator) -> String {
    format!("0x{:08x}", i32::from(l.kind) as u32)
}

/// Compares the parser with tshark's view of one capture; returns every difference.
fn compare(name: &str, file: &[u8], spdp_tsv: &str, sm_tsv: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut diff = |frame: usize, what: &str, ours: String, theirs: String| {
        if ours != theirs {
            diffs.push(format!(
                "{name} frame {frame} {what}: ours {ours:?}, tshark {theirs:?}"
            ));
        }
    };
    let spdp_rows = table(spdp_tsv);
    let sm_rows = table(sm_tsv);
    let packets = pcap::udp_packets(file).expect("fixture is a pcap");
    let mut our_spdp_frames = BTreeSet::new();
    let mut our_rtps_frames = BTreeSet::new();
    for pk in &packets {
        let Ok(msg) = parse_message(pk.payload) else {
            continue;
        };
        our_rtps_frames.insert(pk.frame);
        let f = pk.frame;
        // Submessage walk, for every RTPS frame.
        if let Some(row) = sm_rows.get(&f) {
            let ids: Vec<String> = msg
                .submessages()
                .iter()
                .map(|s| format!("0x{:02x}", s.id))
                .collect();
            // tshark lists vendor-specific ids (0x80..) but not their lengths.
            let lens: Vec<String> = msg
                .submessages()
                .iter()
                .filter(|s| s.id < 0x80)
                .map(|s| s.octets_to_next_header.to_string())
                .collect();
            diff(
                f,
                "submessage ids",
                ids.join("|"),
                row["rtps.sm.id"].join("|"),
            );
            diff(
                f,
                "octetsToNextHeader",
                lens.join("|"),
                row["rtps.sm.octetsToNextHeader"].join("|"),
            );
            diff(
                f,
                "header guid prefix",
                hex_prefix(&msg.header.guid_prefix),
                row["rtps.guidPrefix.src"]
                    .first()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        // SPDP
        let data: Vec<_> = msg
            .submessages()
            .iter()
            .filter_map(|s| match &s.kind {
                SubmessageKind::Data(d) if d.writer_id == rtps::EntityId::SPDP_WRITER => Some(d),
                _ => None,
            })
            .collect();
        if data.is_empty() {
            continue;
        }
        our_spdp_frames.insert(f);
        let Some(row) = spdp_rows.get(&f) else {
            continue; // reported below
        };
        let cell = |k: &str| row.get(k).cloned().unwrap_or_default();
        let Some(Ok(p)) = spdp::parse_participant(&msg) else {
            diff(
                f,
                "participant",
                "no participant".into(),
                "SPDP data".into(),
            );
            continue;
        };
        diff(
            f,
            "udp dst port",
            pk.dst.port().to_string(),
            cell("udp.dstport").join(""),
        );
        let vendors = cell("rtps.vendorId");
        diff(
            f,
            "header vendor",
            format!("0x{:04x}", msg.header.vendor_id.0),
            vendors.first().cloned().unwrap_or_default(),
        );
        diff(
            f,
            "PID_VENDORID",
            format!("0x{:04x}", p.vendor_id.0),
            vendors.last().cloned().unwrap_or_default(),
        );
        let versions = cell("rtps.version");
        let v = |v: rtps::ProtocolVersion| format!("0x{:02x}{:02x}", v.major, v.minor);
        diff(
            f,
            "header version",
            v(msg.header.version),
            versions.first().cloned().unwrap_or_default(),
        );
        diff(
            f,
            "PID_PROTOCOL_VERSION",
            v(p.protocol_version),
            versions.last().cloned().unwrap_or_default(),
        );
        let guid = cell("rtps.param.guid.hostId")
            .iter()
            .chain(&cell("rtps.param.guid.appId"))
            .chain(&cell("rtps.param.guid.instanceId"))
            .map(|s| s.trim_start_matches("0x").to_owned())
            .collect::<String>();
        diff(
            f,
            "participant guid prefix",
            hex_prefix(&p.guid_prefix),
            guid,
        );
        // tshark derives domain_id from the port (even ephemeral ones); compare
        // where the destination is the SPDP multicast port.
        if let Some(d) = ports::domain_from_destination(pk.dst) {
            diff(
                f,
                "domain from port",
                d.to_string(),
                cell("rtps.domain_id").join(""),
            );
            if let Some(pd) = p.domain_id {
                diff(
                    f,
                    "PID_DOMAIN_ID",
                    pd.to_string(),
                    cell("rtps.domain_id").join(""),
                );
            }
        }
        diff(
            f,
            "entity name",
            p.entity_name.clone().unwrap_or_default(),
            cell("rtps.param.entityName").join("|"),
        );
        // Parameter ids, in order, as tshark lists them (with the sentinel).
        let d = data[0];
        let mut pids: Vec<String> = Vec::new();
        if let Some(q) = d.inline_qos {
            pids.extend(q.parameters().flatten().map(|x| format!("0x{:04x}", x.pid)));
            pids.push("0x0001".into());
        }
        let payload = d.payload.unwrap_or_default();
        let endian = if payload.get(1) == Some(&3) {
            Endian::Little
        } else {
            Endian::Big
        };
        let params: Vec<_> = ParameterIter::new(payload.get(4..).unwrap_or_default(), 0, endian)
            .flatten()
            .collect();
        pids.extend(params.iter().map(|x| format!("0x{:04x}", x.pid)));
        pids.push("0x0001".into());
        diff(
            f,
            "parameter ids",
            pids.join("|"),
            cell("rtps.param.id").join("|"),
        );
        // Locators in wire order: walk the parameter ids, taking from our lists.
        let mut lists: BTreeMap<u16, std::collections::VecDeque<&Locator>> = BTreeMap::new();
        for (pid, l) in p.locators() {
            lists.entry(pid).or_default().push_back(l);
        }
        let ordered: Vec<&Locator> = params
            .iter()
            .filter(|x| !x.is_vendor_specific())
            .filter_map(|x| lists.get_mut(&x.pid).and_then(|q| q.pop_front()))
            .collect();
        let join = |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>().join("|");
        diff(
            f,
            "locator kinds",
            join(&mut ordered.iter().map(|l| kind_hex(l))),
            cell("rtps.locator.kind").join("|"),
        );
        // tshark shows ports of UDP locators only.
        diff(
            f,
            "locator ports",
            join(
                &mut ordered
                    .iter()
                    .filter(|l| l.ip().is_some())
                    .map(|l| l.port.to_string()),
            ),
            cell("rtps.locator.port").join("|"),
        );
        diff(
            f,
            "locator ipv4",
            join(
                &mut ordered
                    .iter()
                    .filter(|l| l.kind == LocatorKind::UdpV4)
                    .filter_map(|l| l.ip())
                    .map(|ip| ip.to_string()),
            ),
            cell("rtps.locator.ipv4").join("|"),
        );
        diff(
            f,
            "locator ipv6",
            join(
                &mut ordered
                    .iter()
                    .filter(|l| l.kind == LocatorKind::UdpV6)
                    .filter_map(|l| l.ip())
                    .map(|ip| ip.to_string()),
            ),
            cell("rtps.locator.ipv6").join("|"),
        );
        let lease = p.lease_duration.unwrap_or_default();
        diff(
            f,
            "lease seconds",
            p.lease_duration
                .map(|_| lease.seconds.to_string())
                .unwrap_or_default(),
            cell("rtps.param.ntpTime.sec").join("|"),
        );
        diff(
            f,
            "lease fraction",
            p.lease_duration
                .map(|_| lease.fraction.to_string())
                .unwrap_or_default(),
            cell("rtps.param.ntpTime.fraction").join("|"),
        );
        diff(
            f,
            "builtin endpoint set",
            p.builtin_endpoints
                .map(|b| format!("0x{b:08x}"))
                .unwrap_or_default(),
            cell("rtps.param.builtin_endpoint_set").join("|"),
        );
    }
    let theirs: BTreeSet<usize> = spdp_rows.keys().copied().collect();
    if theirs != our_spdp_frames {
        diffs.push(format!(
            "{name}: SPDP frames: ours {our_spdp_frames:?}, tshark {theirs:?}"
        ));
    }
    let theirs: BTreeSet<usize> = sm_rows.keys().copied().collect();
    if theirs != our_rtps_frames {
        diffs.push(format!(
            "{name}: RTPS frames: ours {our_rtps_frames:?}, tshark {theirs:?}"
        ));
    }
    if our_spdp_frames.is_empty() {
        diffs.push(format!("{name}: no SPDP frames at all"));
    }
    diffs
}

fn golden(name: &str, kind: &str) -> PathBuf {
    testdata().join(format!("{name}.{kind}.tsv"))
}

#[test]
fn parser_matches_tshark_golden_files() {
    if update_golden() {
        return; // being rewritten by the live test
    }
    let mut diffs = Vec::new();
    for name in captures() {
        let read = |k| {
            std::fs::read_to_string(golden(name, k)).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; regenerate with UPDATE_GOLDEN=1",
                    golden(name, k).display()
                )
            })
        };
        diffs.extend(compare(name, &read_pcap(name), &read("spdp"), &read("sm")));
    }
    assert!(
        diffs.is_empty(),
        "parser and tshark (golden files) differ:\n{}",
        diffs.join("\n")
    );
}

fn tshark_present() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn parser_matches_live_tshark() {
    if !tshark_present() {
        if std::env::var_os("ROS2_CNI_SKIP_TSHARK").is_some_and(|v| v == "1") {
            eprintln!("parser_matches_live_tshark: SKIPPED on request (ROS2_CNI_SKIP_TSHARK=1); golden files still checked");
            return;
        }
        panic!(
            "tshark is not installed, so the parser cannot be cross-checked against Wireshark. \
             Install it (Debian: DEBIAN_FRONTEND=noninteractive apt-get install -y tshark), \
             or set ROS2_CNI_SKIP_TSHARK=1 to rely on the committed golden files only."
        );
    }
    if update_golden() {
        std::fs::write(testdata().join("ours.pcap"), ours_pcap()).unwrap();
    }
    let mut diffs = Vec::new();
    for name in captures() {
        let path = testdata().join(format!("{name}.pcap"));
        let spdp_tsv = tshark(&path, SPDP_FILTER, SPDP_FIELDS);
        let sm_tsv = tshark(&path, SM_FILTER, SM_FIELDS);
        if update_golden() {
            std::fs::write(golden(name, "spdp"), &spdp_tsv).unwrap();
            std::fs::write(golden(name, "sm"), &sm_tsv).unwrap();
        }
        diffs.extend(compare(name, &read_pcap(name), &spdp_tsv, &sm_tsv));
    }
    if update_golden() {
        write_seed_corpus();
    }
    assert!(
        diffs.is_empty(),
        "parser and live tshark differ:\n{}",
        diffs.join("\n")
    );
}

/// Seeds for the fuzzer: every distinct RTPS payload of the captures.
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Drop the seeds of earlier captures; keep anything else (e.g. crash repros).
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if captures()
            .iter()
            .any(|c| name.starts_with(&format!("{c}-")))
        {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let mut seen = BTreeSet::new();
    for name in captures() {
        let file = read_pcap(name);
        for p in pcap::udp_packets(&file).unwrap() {
            if seen.insert(p.payload.to_vec()) {
                std::fs::write(dir.join(format!("{name}-{:03}", p.frame)), p.payload).unwrap();
            }
        }
    }
}

#[test]
fn fuzz_target_body_over_committed_corpus() {
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/rtps_message exists")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        rtps::fuzzing::check(&std::fs::read(&p).unwrap());
        n += 1;
    }
    for name in captures() {
        rtps::fuzzing::check(&read_pcap(name));
    }
    assert!(n >= 50, "only {n} corpus files");
}

// --- real DDS accepts our announcements -------------------------------------

/// Two namespaces joined by a veth pair: `a` 10.99.0.1/24, `b` 10.99.0.2/24,
/// with a multicast route each. Removed on drop, with whatever runs inside.
struct Pair {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    fn new() -> Pair {
        crate::common::require_root();
        ros2_cni::lab::testbed::sweep_stale("r2h-rtps");
        let prefix = ros2_cni::lab::testbed::unique_prefix("r2h-rtps");
        let pair = Pair {
            a: format!("{prefix}a"),
            b: format!("{prefix}b"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "-n",
            &pair.a,
            "link",
            "add",
            "r2h-rtps-va",
            "type",
            "veth",
            "peer",
            "name",
            "r2h-rtps-vb",
            "netns",
            &pair.b,
        ]);
        for (ns, dev, addr) in [
            (&pair.a, "r2h-rtps-va", "10.99.0.1/24"),
            (&pair.b, "r2h-rtps-vb", "10.99.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        pair
    }

    /// Starts `cmd` inside `b`, stdout captured.
    fn spawn_b(&self, cmd: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", &self.b])
            .args(cmd)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const INTEROP_DOMAIN: u32 = 9;

fn require_tool(path: &str, package: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(path).is_file());
    assert!(
        found,
        "`{path}` is not installed: this test needs the Debian package {package}"
    );
}

/// Announces `p` from namespace `a` to the SPDP group of INTEROP_DOMAIN, as
/// `endian`, until something sends RTPS to the metatraffic unicast locator
/// that only this announcement advertised. Returns that message's header.
fn announce_until_answered(
    pair: &Pair,
    p: &spdp::ParticipantData,
    endian: Endian,
) -> Option<rtps::Header> {
    let ns = ros2_cni::kernel::netns::Netns::open(format!("/var/run/netns/{}", pair.a)).unwrap();
    let p = p.clone();
    ns.run(move || {
        let listen_at = p.metatraffic_unicast_locators[0].socket_addr().unwrap();
        let rx = std::net::UdpSocket::bind(listen_at).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("10.99.0.1:0").unwrap();
        tx.set_multicast_ttl_v4(1).unwrap();
        let group = (
            ports::SPDP_MULTICAST_GROUP,
            ports::spdp_multicast_port(INTEROP_DOMAIN).unwrap(),
        );
        let mut buf = vec![0u8; 65_536];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        let mut sn = 1;
        while std::time::Instant::now() < deadline {
            tx.send_to(&spdp::announce_with(&p, endian, Time::now(), sn), group)
                .unwrap();
            sn += 1;
            let until = std::time::Instant::now() + std::time::Duration::from_millis(400);
            while std::time::Instant::now() < until {
                let Ok((n, _from)) = rx.recv_from(&mut buf) else {
                    continue;
                };
                if let Ok(msg) = parse_message(&buf[..n]) {
                    if msg.header.guid_prefix != p.guid_prefix {
                        return Some(msg.header);
                    }
                }
            }
        }
        None
    })
    .unwrap()
}

/// Our participant, advertising unicast ports outside the RTPS port pattern
/// (41230 + ...), so that only this announcement can lead a peer there.
fn our_participant(tag: u8, port: u16) -> spdp::ParticipantData {
    assert!(ports::classify_port(port).is_none_or(|r| !matches!(
        r,
        ports::PortRole::SpdpUnicast {
            domain: INTEROP_DOMAIN,
            ..
        }
    )));
    let mut prefix = *b"\x01\xffr2cni-????";
    prefix[8..].copy_from_slice(&(std::process::id() as u16).to_be_bytes().repeat(2));
    prefix[11] = tag;
    let mut p = spdp::ParticipantData::new(GuidPrefix(prefix), VendorId(0x01ff));
    p.domain_id = Some(INTEROP_DOMAIN);
    p.entity_name = Some(format!("ros2-cni interop {tag}"));
    p.metatraffic_unicast_locators = vec![Locator::udp_v4(Ipv4Addr::new(10, 99, 0, 1), port)];
    p.default_unicast_locators = vec![Locator::udp_v4(Ipv4Addr::new(10, 99, 0, 1), port + 1)];
    p
}

#[test]
fn fast_dds_discovers_our_announcements() {
    crate::common::require_root();
    require_tool("g++", "g++");
    assert!(
        Path::new("/usr/include/fastdds/dds/domain/DomainParticipant.hpp").exists(),
        "Fast DDS headers are missing: this test needs the Debian package libfastrtps-dev"
    );
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fastdds/build.sh");
    let out = Command::new(&build).output().expect("run build.sh");
    assert!(
        out.status.success(),
        "build.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let pair = Pair::new();
    let d = INTEROP_DOMAIN.to_string();
    let mut child = pair.spawn_b(&[
        "timeout",
        "-s",
        "KILL",
        "20",
        &bin,
        "--domain",
        &d,
        "--duration",
        "12",
        "--rate",
        "0",
        "--min-matched",
        "0",
        "--min-received",
        "0",
    ]);
    let mut answered = Vec::new();
    for (i, endian) in [Endian::Little, Endian::Big].into_iter().enumerate() {
        let p = our_participant(b'f' + i as u8, 41_230 + 2 * i as u16);
        let h = announce_until_answered(&pair, &p, endian)
            .unwrap_or_else(|| panic!("Fast DDS never answered our {endian:?} announcement"));
        assert_eq!(h.vendor_id, VendorId::FAST_DDS);
        answered.push(p.guid_prefix);
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for g in answered {
        assert!(
            stdout.lines().any(|l| l == format!("discovered {g}")),
            "Fast DDS did not report discovering {g}:\n{stdout}"
        );
    }
}

#[test]
fn cyclone_dds_discovers_our_announcements() {
    crate::common::require_root();
    require_tool("ddsperf", "cyclonedds-tools");
    let pair = Pair::new();
    let d = INTEROP_DOMAIN.to_string();
    let mut child = pair.spawn_b(&[
        "timeout", "-s", "KILL", "20", "ddsperf", "-i", &d, "-D", "12", "pong",
    ]);
    for (i, endian) in [Endian::Little, Endian::Big].into_iter().enumerate() {
        let p = our_participant(b'c' + i as u8, 41_240 + 2 * i as u16);
        let h = announce_until_answered(&pair, &p, endian)
            .unwrap_or_else(|| panic!("Cyclone DDS never answered our {endian:?} announcement"));
        assert_eq!(h.vendor_id, VendorId::CYCLONE);
    }
    let _ = child.kill();
    let _ = child.wait();
}
