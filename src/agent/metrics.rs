//! Prometheus metrics over plain HTTP (GET /metrics), default on loopback.
//!
//! Values are read from the agent's state at scrape time; the kernel keeps the
//! packet counts (per multicast route and per nft rule), so nothing is counted
//! twice in user space.

use super::State;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Collector(Arc<Mutex<State>>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ros2-cni agent collector")
    }
}

pub(super) type Labels = Vec<(String, String)>;

pub(super) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

pub(super) fn l(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.lock().unwrap();
        let mut pkts = vec![];
        let mut bytes = vec![];
        for ((g, d), (p, b)) in &st.counters.forwarded {
            let labels = l(&[("group", g.to_string()), ("direction", d.to_string())]);
            pkts.push((labels.clone(), *p));
            bytes.push((labels, *b));
        }
        counter(
            &mut enc,
            "ros2cni_forwarded_packets",
            "RTPS multicast packets forwarded, per group and direction",
            &pkts,
        )?;
        counter(
            &mut enc,
            "ros2cni_forwarded_bytes",
            "RTPS multicast bytes forwarded, per group and direction",
            &bytes,
        )?;
        let (not_rtps, wrong_if) = st.forwarder.as_ref().map_or((0, 0), |f| f.dropped());
        counter(
            &mut enc,
            "ros2cni_dropped_packets",
            "Packets dropped: multicast to groups that are not routed, arriving on the wrong interface, or spoofed by a pod",
            &[
                (l(&[("reason", "not_rtps".into())]), not_rtps),
                (l(&[("reason", "wrong_interface".into())]), wrong_if),
                (l(&[("reason", "spoofed".into())]), st.counters.spoofed_drops),
            ],
        )?;
        counter(
            &mut enc,
            "ros2cni_multicast_upcalls",
            "Upcalls from the kernel's multicast router (none expected: the routes are static)",
            &[(vec![], st.forwarder.as_ref().map_or(0, |f| f.upcalls()))],
        )?;
        gauge(
            &mut enc,
            "ros2cni_not_rtps_multicast_rate",
            "Multicast packets per second to groups that are not routed, arriving on the uplink or from pods (last reconcile period)",
            st.pressure.rate as i64,
        )?;
        counter(
            &mut enc,
            "ros2cni_ttl_raised_packets",
            "RTPS packets whose TTL was raised from 1 to 2",
            &[(vec![], st.counters.ttl_raised)],
        )?;
        st.limits.encode_metrics(&mut enc)?;
        st.domains.encode_metrics(&mut enc)?;
        st.counts.encode_metrics(&mut enc)?;
        counter(
            &mut enc,
            "ros2cni_agent_restarts",
            "Times the agent was started before this run",
            &[(vec![], st.counters.restarts)],
        )?;
        gauge(
            &mut enc,
            "ros2cni_participants",
            "DDS participants seen announcing on this node",
            st.discovery.table.len() as i64,
        )?;
        gauge(
            &mut enc,
            "ros2cni_multicast_routes",
            "Multicast forwarding entries in place: one per RTPS group (and the kernel forwarder's catch-all)",
            st.forwarder.as_ref().map_or(0, |f| f.route_count()) as i64,
        )?;
        {
            let kind = st.forwarder.as_ref().map_or("none", |f| f.kind().as_str());
            let g = ConstGauge::new(1i64);
            let mut m = enc.encode_descriptor(
                "ros2cni_forwarder",
                "The multicast forwarder this agent runs (kernel: the kernel's multicast routing; nftables: dup rules, for kernels without CONFIG_IP_MROUTE; none: macvlan mode)",
                None,
                g.metric_type(),
            )?;
            g.encode(m.encode_family(&l(&[("forwarder", kind.to_owned())]))?)?;
        }
        gauge(
            &mut enc,
            "ros2cni_pods_attached",
            "Pods with a ros2-cni interface on this node",
            st.counters.pods as i64,
        )?;
        if let Some(r) = &st.relay {
            r.encode_metrics(&mut enc)?;
        }
        gauge(
            &mut enc,
            "ros2cni_healthy",
            "1 when the agent has no open problems",
            st.problems.is_empty() as i64,
        )?;
        Ok(())
    }
}

/// The metrics page as Prometheus text.
pub fn render(state: &Arc<Mutex<State>>) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Collector(state.clone())));
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
    let mut backoff = super::status::AcceptBackoff::default();
    loop {
        let mut s = match listener.accept().await {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                backoff.wait("metrics listener", &e).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            let read = async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
            let line = String::from_utf8_lossy(&req);
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = if path == "/metrics" || path == "/" {
                ("200 OK", render(&state))
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
