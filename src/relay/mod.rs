//! The RTPS relay: RTPS multicast between the pods of nodes that LAN
//! multicast does not connect (a switch or access point that drops it, a
//! router between two subnets).
//!
//! - **Out**: a packet socket on the bridge captures the RTPS multicast the
//!   node's pods send (UDP to a relayed group, any port, any TTL — Fast DDS's
//!   TTL 1 included; only frames arriving from the pods, never what the node
//!   itself puts on the bridge). The original IPv4 packet is wrapped in an
//!   8-byte header ([`wire`]) and sent by unicast UDP to every peer not
//!   reached by LAN multicast ([`Settings::via_lan`]); sends never block.
//! - **In**: a datagram is accepted only from a configured peer (by source
//!   address); anything else is dropped and counted. The original packet is
//!   put on the bridge as Ethernet multicast with TTL 1 (checksum fixed,
//!   addresses and ports unchanged): the bridge floods it to the pods and
//!   does not pass it up to the node's IP stack, so it is never routed to
//!   the uplink, never captured again and never relayed onward.
//!
//! Exactly once: a peer is reached by LAN multicast iff `lanMulticast` is on
//! and the peer's address is in this node's subnet (the kernel's multicast
//! routing puts the packet on the LAN, the peer routes it to its pods);
//! otherwise by the relay. Packets received by relay go to pods only, so
//! nothing is relayed twice whatever the number of nodes.
//!
//! Peers that are also reachable are greeted every [`HELLO_EVERY`] with a
//! header-only datagram, so "last seen" (status, metrics, doctor) tells a
//! live peer from a dead one even when its pods are quiet.
//!
//! Runs on a thread of its own: the relay never waits for a reconcile pass.

pub mod socket;
pub mod wire;

use crate::api::unix_now;
use crate::config::{Config, Pool};
use crate::kernel::mmsg;
use crate::kernel::rtnl::Link;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a header-only hello goes to each peer.
pub const HELLO_EVERY: Duration = Duration::from_secs(5);
/// A peer not heard from for this long is reported unreachable.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// Header flag: a hello, no packet follows.
const FLAG_HELLO: u8 = 1;
/// At most this many packets per socket per wake-up (fairness between
/// the two directions).
const BATCH: usize = 256;
/// At most this many packets per system call (recvmmsg, sendmmsg): a
/// wake-up reads [`BATCH`] in calls of this many.
const SLOTS: usize = 32;

/// What the relay runs with: from the config and the node's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub peers: Vec<Ipv4Addr>,
    pub groups: Vec<Ipv4Addr>,
    pub lan_multicast: bool,
    /// This node's subnet: peers in it are on its LAN segment.
    pub subnet: Ipv4Net,
    /// This node's pool: a peer may not send packets from these addresses.
    pub pool: Option<Pool>,
    pub port: u16,
    pub bridge: u32,
    pub uplink: u32,
    /// What one peer may deliver to the pods (`relayPeerRate`/`Burst`).
    pub peer_limit: crate::firewall::limits::Limit,
}

impl Settings {
    pub fn new(cfg: &Config, uplink: &Link, bridge: &Link) -> Settings {
        Settings {
            peers: cfg.peers.clone(),
            groups: cfg.discovery_groups(),
            lan_multicast: cfg.lan_multicast,
            subnet: cfg.subnet,
            pool: cfg.pool,
            port: cfg.relay_port,
            bridge: bridge.index,
            uplink: uplink.index,
            peer_limit: cfg.relay_peer_limit,
        }
    }

    /// Whether `peer` gets this node's pods' RTPS by LAN multicast (the
    /// kernel's multicast routing) rather than by the relay.
    pub fn via_lan(&self, peer: Ipv4Addr) -> bool {
        self.lan_multicast && self.subnet.contains(&peer)
    }
}

/// Counters of one peer.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub address: Ipv4Addr,
    /// "relay" or "lan": how this node's pods' RTPS reaches the peer.
    pub via: &'static str,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Packets to or from this peer not delivered (send errors, datagrams
    /// that failed the checks).
    pub dropped: u64,
    /// Unix time of the last datagram (packet or hello) from this peer.
    pub last_seen: Option<u64>,
    pub last_error: Option<String>,
    /// Source addresses of the packets this peer relayed (bounded): the
    /// participants this node's pods know only through the relay.
    pub sources: std::collections::BTreeSet<Ipv4Addr>,
    last_seen_at: Option<Instant>,
    /// The peer's token bucket for `relayPeerRate`.
    bucket: Bucket,
}

/// A token bucket: `burst` packets, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            tokens: 0.0,
            at: None,
        }
    }

    /// Takes one token at `now` under `limit` (a full bucket to start
    /// with); false when the peer is over its rate. Rate 0: no limit.
    pub fn take(&mut self, limit: crate::firewall::limits::Limit, now: Instant) -> bool {
        if limit.rate == 0 {
            return true;
        }
        let burst = f64::from(limit.burst);
        self.tokens = match self.at {
            None => burst,
            Some(t) => (self.tokens + now.duration_since(t).as_secs_f64() * f64::from(limit.rate))
                .min(burst),
        };
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most this many sources are remembered per peer.
const MAX_SOURCES: usize = 256;

impl PeerStats {
    /// As the status reports it.
    pub fn to_api(&self) -> crate::api::Peer {
        crate::api::Peer {
            address: self.address,
            via: self.via.to_owned(),
            sent: self.sent,
            sent_bytes: self.sent_bytes,
            received: self.received,
            received_bytes: self.received_bytes,
            dropped: self.dropped,
            last_seen: self.last_seen,
            last_error: self.last_error.clone(),
            sources: self.sources.clone(),
            reachable: self.reachable(),
        }
    }

    fn new(address: Ipv4Addr) -> PeerStats {
        PeerStats {
            address,
            via: "relay",
            sent: 0,
            sent_bytes: 0,
            received: 0,
            received_bytes: 0,
            dropped: 0,
            last_seen: None,
            last_error: None,
            sources: Default::default(),
            last_seen_at: None,
            bucket: Bucket::new(),
        }
    }

    /// Heard from within [`PEER_TIMEOUT`].
    pub fn reachable(&self) -> bool {
        self.last_seen_at
            .is_some_and(|t| t.elapsed() < PEER_TIMEOUT)
    }
}

/// Everything the relay counts.
#[derive(Debug, Default)]
pub struct Stats {
    pub peers: BTreeMap<Ipv4Addr, PeerStats>,
    /// Datagrams from addresses that are not peers: dropped.
    pub not_peer: u64,
    pub last_not_peer: Option<Ipv4Addr>,
    /// Datagrams from peers that failed a check, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Packets captured from this node's pods.
    pub captured: u64,
    /// The sockets are open (there are peers and the port could be bound).
    pub active: bool,
    pub problem: Option<String>,
}

struct Shared {
    settings: Mutex<Arc<Settings>>,
    generation: AtomicU64,
    stop: AtomicBool,
    stats: Mutex<Stats>,
}

/// The running relay.
pub struct Relay {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts the relay thread; it opens its sockets while there are peers.
    pub fn start(settings: Settings) -> Relay {
        let shared = Arc::new(Shared {
            settings: Mutex::new(Arc::new(settings)),
            generation: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || run(&s))
            .expect("spawning the relay thread");
        Relay {
            shared,
            thread: Some(thread),
        }
    }

    /// New settings (reload, interface change); applied within 200 ms.
    pub fn update(&self, settings: Settings) {
        let mut cur = self.shared.settings.lock().unwrap();
        if **cur != settings {
            *cur = Arc::new(settings);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The relay's part of the status document.
    pub fn to_api(&self) -> crate::api::Relay {
        let set = self.shared.settings.lock().unwrap().clone();
        let st = self.shared.stats.lock().unwrap();
        crate::api::Relay {
            active: st.active,
            port: set.port,
            lan_multicast: set.lan_multicast,
            captured: st.captured,
            not_peer: st.not_peer,
            last_not_peer: st.last_not_peer,
            rejected: st
                .rejected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            problem: st.problem.clone(),
            peers: st.peers.values().map(PeerStats::to_api).collect(),
        }
    }

    /// Prometheus series of the relay.
    pub fn encode_metrics(
        &self,
        enc: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let st = self.shared.stats.lock().unwrap();
        let peer = |a: &Ipv4Addr| vec![("peer".to_string(), a.to_string())];
        type Series = (&'static str, &'static str, fn(&PeerStats) -> u64);
        let counters: [Series; 4] = [
            (
                "ros2cni_relay_sent_packets",
                "RTPS packets of this node's pods relayed to a peer",
                |p| p.sent,
            ),
            (
                "ros2cni_relay_received_packets",
                "RTPS packets received from a peer and delivered to this node's pods",
                |p| p.received,
            ),
            (
                "ros2cni_relay_dropped_packets",
                "Relay packets to or from a peer not delivered (send errors, failed checks)",
                |p| p.dropped,
            ),
            (
                "ros2cni_relay_sent_bytes",
                "Bytes of RTPS packets relayed to a peer (original IPv4 packets)",
                |p| p.sent_bytes,
            ),
        ];
        for (name, help, get) in counters {
            let mut m =
                enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for (a, p) in &st.peers {
                ConstCounter::new(get(p)).encode(m.encode_family(&peer(a))?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "ros2cni_relay_peer_last_seen_seconds",
            "Unix time of the last datagram from a peer (0: never)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (a, p) in &st.peers {
            ConstGauge::new(p.last_seen.unwrap_or(0) as i64).encode(m.encode_family(&peer(a))?)?;
        }
        let mut m = enc.encode_descriptor(
            "ros2cni_relay_not_peer_packets",
            "Relay datagrams from addresses that are not configured peers: dropped",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        ConstCounter::new(st.not_peer).encode(m.encode_family(&Vec::<(String, String)>::new())?)?;
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The open sockets.
struct Socks {
    capture: socket::Capture,
    inject: socket::Inject,
    udp: std::net::UdpSocket,
    port: u16,
}

impl Socks {
    /// Reads the pending relay datagrams (one system call).
    fn udp_recv_batch(&self, b: &mut mmsg::RecvBatch<libc::sockaddr_in>) -> std::io::Result<usize> {
        b.recv(self.udp.as_raw_fd())
    }

    fn open(s: &Settings) -> std::io::Result<Socks> {
        Ok(Socks {
            capture: socket::Capture::open(s.bridge, &s.groups)?,
            inject: socket::Inject::open()?,
            udp: socket::udp(s.port)?,
            port: s.port,
        })
    }
}

/// The thread's view of the settings.
struct View {
    set: Arc<Settings>,
    /// Peers minus this node's own addresses.
    peers: Vec<Ipv4Addr>,
    /// The peers this node relays its pods' packets to.
    relayed: Vec<SocketAddr>,
}

impl View {
    fn new(set: Arc<Settings>) -> View {
        let own: Vec<Ipv4Addr> = crate::kernel::rtnl::Handle::new()
            .and_then(|mut h| h.addresses4(set.uplink))
            .map(|v| v.into_iter().map(|(a, _)| a).collect())
            .unwrap_or_default();
        let peers: Vec<Ipv4Addr> = set
            .peers
            .iter()
            .filter(|p| !own.contains(p))
            .copied()
            .collect();
        let relayed = peers
            .iter()
            .filter(|p| !set.via_lan(**p))
            .map(|p| SocketAddr::V4(SocketAddrV4::new(*p, set.port)))
            .collect();
        View {
            set,
            peers,
            relayed,
        }
    }
}

/// The relay thread's working state between wake-ups.
struct Loop {
    /// The settings generation `view` was built from.
    gen: u64,
    view: View,
    /// `None` while there are no peers or the sockets could not be opened.
    socks: Option<Socks>,
    /// When to try opening the sockets again after a failure.
    next_open: Instant,
    next_hello: Instant,
    bufs: Buffers,
}

/// Buffers reused for every batch, so the loop does not allocate: the
/// slots packets are read into (and changed in place, then sent from), and
/// the message headers of one sendmmsg, rebuilt for each.
struct Buffers {
    /// Captured Ethernet frames (largest IPv4 packet + Ethernet header).
    cap: socket::Frames,
    /// Received relay datagrams.
    udp: mmsg::RecvBatch<libc::sockaddr_in>,
    /// Captured packets to relay: (slot, IPv4 packet length).
    out: Vec<(usize, usize)>,
    /// Peers' packets to put on the bridge.
    pods: Vec<ToPods>,
    /// One sendmmsg's iovecs, addresses and headers (raw pointers into
    /// the above, valid only while they are built and sent).
    iovs: Vec<libc::iovec>,
    lls: Vec<libc::sockaddr_ll>,
    msgs: Vec<libc::mmsghdr>,
}

/// A peer's packet accepted for the pods: where it is, whose it is.
struct ToPods {
    slot: usize,
    peer: Ipv4Addr,
    src: Ipv4Addr,
    group: Ipv4Addr,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            cap: socket::Frames::new(SLOTS, 65_536 + 14),
            udp: mmsg::RecvBatch::new(SLOTS, 65_536),
            out: Vec::with_capacity(SLOTS),
            pods: Vec::with_capacity(SLOTS),
            iovs: Vec::with_capacity(2 * SLOTS),
            lls: Vec::with_capacity(SLOTS),
            msgs: Vec::with_capacity(SLOTS),
        }
    }
}

/// The relay thread: until stopped, follow the settings, keep the sockets
/// open while there are peers, and move packets both ways. Each wake-up
/// (at most every 200 ms) handles at most [`BATCH`] packets per direction.
fn run(shared: &Shared) {
    let mut lp = Loop {
        gen: 0,
        view: View::new(shared.settings.lock().unwrap().clone()),
        socks: None,
        next_open: Instant::now(),
        next_hello: Instant::now(),
        bufs: Buffers::new(),
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let g = shared.generation.load(Ordering::SeqCst);
        if g != lp.gen {
            lp.gen = g;
            follow_settings(shared, &mut lp);
        }
        if lp.socks.is_none() && !lp.view.peers.is_empty() && Instant::now() >= lp.next_open {
            open_sockets(shared, &mut lp);
        }
        shared.stats.lock().unwrap().active = lp.socks.is_some();
        let Some(s) = &lp.socks else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let (capture, udp) = wait_readable(s, 200);
        if capture {
            relay_out(shared, &lp.view, s, &mut lp.bufs);
        }
        if udp {
            deliver_in(shared, &lp.view, s, &mut lp.bufs);
        }
        if Instant::now() >= lp.next_hello {
            send_hellos(&lp.view, s);
            lp.next_hello = Instant::now() + HELLO_EVERY;
        }
    }
}

/// New settings: rebuild the view, keep the counters of the peers that
/// remain, and keep the sockets only if they still fit (same port, the
/// capture moved to the new bridge and filter). Opening and greeting are
/// then due at once.
fn follow_settings(shared: &Shared, lp: &mut Loop) {
    lp.view = View::new(shared.settings.lock().unwrap().clone());
    let view = &lp.view;
    let mut st = shared.stats.lock().unwrap();
    st.peers.retain(|a, _| view.peers.contains(a));
    for p in &view.peers {
        let e = st.peers.entry(*p).or_insert_with(|| PeerStats::new(*p));
        e.via = if view.set.via_lan(*p) { "lan" } else { "relay" };
    }
    drop(st);
    if let Some(s) = lp.socks.as_mut() {
        let reopen = s.port != view.set.port
            || (s.capture.ifindex() != view.set.bridge && s.capture.bind(view.set.bridge).is_err())
            || s.capture.set_filter(&view.set.groups).is_err();
        if reopen || view.peers.is_empty() {
            lp.socks = None;
        }
    }
    lp.next_open = Instant::now();
    lp.next_hello = Instant::now();
}

/// Opens the sockets; on failure records the problem (logged once per
/// distinct message) and retries after a second.
fn open_sockets(shared: &Shared, lp: &mut Loop) {
    let r = Socks::open(&lp.view.set);
    let mut st = shared.stats.lock().unwrap();
    match r {
        Ok(s) => {
            tracing::info!(peers = ?lp.view.peers, port = lp.view.set.port, "RTPS relay active");
            lp.socks = Some(s);
            st.problem = None;
        }
        Err(e) => {
            let msg = format!("relay port {}: {e}", lp.view.set.port);
            if st.problem.as_ref() != Some(&msg) {
                tracing::warn!("{msg}");
            }
            st.problem = Some(msg);
            lp.next_open = Instant::now() + Duration::from_secs(1);
        }
    }
}

/// Waits up to `timeout_ms` for the capture or the UDP socket to be
/// readable: which one has something (a packet or an error to read).
fn wait_readable(s: &Socks, timeout_ms: i32) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: s.capture.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: s.udp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: poll(2) on two valid descriptors.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if n < 0 {
        return (true, true); // interrupted: look at both
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// Out: the pods' captured packets to every relayed peer: read in
/// batches, each packet's UDP checksum fixed in its slot, then one
/// sendmmsg per peer of the whole batch (our header, then the packet).
fn relay_out(shared: &Shared, view: &View, s: &Socks, b: &mut Buffers) {
    let mut left = BATCH;
    while left > 0 {
        let n = match s.capture.recv_batch(&mut b.cap) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("relay capture: {e}");
                break;
            }
        };
        // a short read emptied the queue: another would only say EAGAIN
        // (what arrives meanwhile wakes the next poll)
        left = if n < SLOTS { 0 } else { left.saturating_sub(n) };
        b.out.clear();
        for i in 0..n {
            let Some(ip) = socket::Capture::packet(&mut b.cap, i) else {
                continue; // ours, or truncated
            };
            if wire::check_ip(ip, &view.set.groups).is_err() {
                continue;
            }
            wire::fix_udp_checksum(ip);
            b.out.push((i, ip.len()));
        }
        if b.out.is_empty() {
            continue;
        }
        // two iovecs a datagram: the header, the packet in its slot
        b.iovs.clear();
        for &(i, _) in &b.out {
            let ip = socket::Capture::packet(&mut b.cap, i).expect("checked above");
            b.iovs.push(mmsg::iovec(&wire::HEADER));
            b.iovs.push(mmsg::iovec(ip));
        }
        let mut st = shared.stats.lock().unwrap();
        st.captured += b.out.len() as u64;
        for to in &view.relayed {
            let SocketAddr::V4(to) = to else { continue };
            let name = sockaddr_in(*to);
            b.msgs.clear();
            let iovs = b.iovs.as_ptr();
            b.msgs.extend(
                (0..b.out.len()).map(|k| mmsg::message(&name, iovs.wrapping_add(2 * k), 2)),
            );
            let mut p = st.peers.get_mut(to.ip());
            let out = &b.out;
            let msgs = &mut b.msgs;
            mmsg::send_all(
                out.len(),
                |from| mmsg::send(s.udp.as_raw_fd(), &mut msgs[from..]),
                |k, r| {
                    let Some(p) = p.as_deref_mut() else { return };
                    match r {
                        Ok(()) => {
                            p.sent += 1;
                            p.sent_bytes += out[k].1 as u64;
                        }
                        Err(e) => {
                            p.dropped += 1;
                            p.last_error = Some(e.to_string());
                        }
                    }
                },
            );
        }
    }
}

/// The C address of a peer, for sendmmsg.
fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    let mut n: libc::sockaddr_in = mmsg::SockAddr::zeroed();
    n.sin_family = libc::AF_INET as libc::sa_family_t;
    n.sin_port = a.port().to_be();
    n.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    n
}

/// In: the peers' datagrams to the pods, read in batches. Only
/// configured peers are heard; any datagram from one (hello or packet,
/// good or bad) counts as a sign of life. The packets that pass the checks
/// and the peer's rate are made ready for the pods in their slots and put
/// on the bridge with one sendmmsg ([`to_pods`]).
fn deliver_in(shared: &Shared, view: &View, s: &Socks, b: &mut Buffers) {
    let mut left = BATCH;
    while left > 0 {
        let n = match s.udp_recv_batch(&mut b.udp) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // a short read emptied the queue: another would only say EAGAIN
        // (what arrives meanwhile wakes the next poll)
        left = if n < SLOTS { 0 } else { left.saturating_sub(n) };
        b.pods.clear();
        let mut st = shared.stats.lock().unwrap();
        for i in 0..n {
            let name = b.udp.name(i);
            if i32::from(name.sin_family) != libc::AF_INET {
                continue;
            }
            let from = Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr));
            if !view.peers.contains(&from) {
                st.not_peer += 1;
                st.last_not_peer = Some(from);
                continue;
            }
            let verdict = classify(b.udp.data(i), &view.set).map(|v| v.map(|x| (x.src, x.group)));
            let mut rejected = None;
            if let Some(p) = st.peers.get_mut(&from) {
                p.last_seen_at = Some(Instant::now());
                p.last_seen = Some(unix_now());
                let now = Instant::now();
                let verdict = match verdict {
                    Ok(Some(_)) if !p.bucket.take(view.set.peer_limit, now) => {
                        Err(wire::Reject::Rate)
                    }
                    v => v,
                };
                match verdict {
                    Ok(None) => {}
                    Ok(Some((src, group))) => {
                        wire::make_for_pods(&mut b.udp.data_mut(i)[wire::HEADER_LEN..]);
                        b.pods.push(ToPods {
                            slot: i,
                            peer: from,
                            src,
                            group,
                        });
                    }
                    Err(r) => {
                        p.dropped += 1;
                        rejected = Some(r);
                    }
                }
            }
            if let Some(r) = rejected {
                *st.rejected.entry(r.as_str()).or_default() += 1;
            }
        }
        to_pods(view, s, b, &mut st);
    }
}

/// What a peer's datagram is: a hello (`Ok(None)`), a packet for the pods,
/// or rejected. A peer may not send packets from this node's own pool.
fn classify<'a>(d: &'a [u8], set: &Settings) -> Result<Option<wire::Inner<'a>>, wire::Reject> {
    if is_hello(d) {
        return Ok(None);
    }
    let i = wire::decode(d, &set.groups)?;
    if set.pool.is_some_and(|p| p.contains(i.src)) {
        return Err(wire::Reject::Source);
    }
    Ok(Some(i))
}

/// The header-only datagram peers greet each other with.
const HELLO: [u8; wire::HEADER_LEN] = [
    wire::MAGIC[0],
    wire::MAGIC[1],
    wire::MAGIC[2],
    wire::MAGIC[3],
    wire::VERSION,
    FLAG_HELLO,
    0,
    0,
];

fn is_hello(d: &[u8]) -> bool {
    d.len() == wire::HEADER_LEN
        && &d[..4] == wire::MAGIC
        && d[4] == wire::VERSION
        && d[5] & FLAG_HELLO != 0
}

/// Puts the peers' packets of a batch (already TTL 1, checksum fixed) on
/// the bridge as Ethernet multicast with one sendmmsg (see the module doc:
/// the pods get them, the node's IP stack does not) and counts each.
fn to_pods(view: &View, s: &Socks, b: &mut Buffers, st: &mut Stats) {
    if b.pods.is_empty() {
        return;
    }
    b.iovs.clear();
    b.lls.clear();
    for t in &b.pods {
        b.iovs
            .push(mmsg::iovec(&b.udp.data(t.slot)[wire::HEADER_LEN..]));
        let mac = wire::group_mac(t.group);
        b.lls.push(crate::kernel::packet::sockaddr_ll(
            view.set.bridge,
            Some(mac),
        ));
    }
    let (iovs, lls) = (b.iovs.as_ptr(), b.lls.as_ptr());
    b.msgs.clear();
    b.msgs.extend(
        (0..b.pods.len()).map(|k| mmsg::message(lls.wrapping_add(k), iovs.wrapping_add(k), 1)),
    );
    let (pods, udp, msgs) = (&b.pods, &b.udp, &mut b.msgs);
    mmsg::send_all(
        pods.len(),
        |from| s.inject.send_batch(&mut msgs[from..]),
        |k, r| {
            let t = &pods[k];
            let Some(p) = st.peers.get_mut(&t.peer) else {
                return;
            };
            match r {
                Ok(()) => {
                    if p.sources.len() < MAX_SOURCES {
                        p.sources.insert(t.src);
                    }
                    p.received += 1;
                    p.received_bytes += (udp.data(t.slot).len() - wire::HEADER_LEN) as u64;
                }
                Err(e) => {
                    p.dropped += 1;
                    p.last_error = Some(format!("delivering to the pods: {e}"));
                }
            }
        },
    );
}

/// Greets every peer, relayed or reached by LAN, so each can tell this
/// node is alive even when its pods are quiet.
fn send_hellos(view: &View, s: &Socks) {
    for p in &view.peers {
        let _ = s.udp.send_to(&HELLO, SocketAddrV4::new(*p, view.set.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lan: bool) -> Settings {
        Settings {
            peers: vec![
                Ipv4Addr::new(192, 168, 0, 12),
                Ipv4Addr::new(192, 168, 16, 21),
            ],
            groups: vec![Ipv4Addr::new(239, 255, 0, 1)],
            lan_multicast: lan,
            subnet: "192.168.0.0/20".parse().unwrap(),
            pool: None,
            port: 7399,
            bridge: 5,
            uplink: 2,
            peer_limit: crate::firewall::limits::Limit {
                rate: 2000,
                burst: 10000,
            },
        }
    }

    #[test]
    fn a_peer_gets_its_burst_then_its_rate() {
        use crate::firewall::limits::Limit;
        let l = Limit { rate: 10, burst: 3 };
        let mut b = Bucket::new();
        let t0 = Instant::now();
        let took: Vec<bool> = (0..5).map(|_| b.take(l, t0)).collect();
        assert_eq!(took, [true, true, true, false, false]);
        // 10/s: one token back after 100 ms, never more than the burst
        assert!(b.take(l, t0 + Duration::from_millis(100)));
        assert!(!b.take(l, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..5).filter(|_| b.take(l, later)).count(), 3);
        // rate 0: no limit
        let mut b = Bucket::new();
        assert!((0..100_000).all(|_| b.take(Limit { rate: 0, burst: 0 }, t0)));
    }

    #[test]
    fn lan_multicast_reaches_only_peers_on_this_subnet() {
        let s = settings(true);
        assert!(s.via_lan(Ipv4Addr::new(192, 168, 0, 12)), "same segment");
        assert!(
            !s.via_lan(Ipv4Addr::new(192, 168, 16, 21)),
            "behind a router: relayed"
        );
        let s = settings(false);
        assert!(
            s.peers.iter().all(|p| !s.via_lan(*p)),
            "lanMulticast false: every peer by relay"
        );
    }
}
