#!/usr/bin/env bash
# Regenerates the pcap fixtures in this directory from real DDS traffic.
#
# Two network namespaces (r2h-rtps-a, r2h-rtps-b) joined by a veth pair
# (r2h-rtps-va / r2h-rtps-vb, 10.99.0.1/24 and 10.99.0.2/24, fd99::1/64 and
# fd99::2/64) run real Cyclone DDS (ddsperf) and Fast DDS
# (integration/fastdds/participant); tcpdump in r2h-rtps-a records UDP, and
# tshark keeps only discovery traffic (packets to or from built-in entities,
# entity kind >= 0xc0), the first few packets of each capture, so the
# fixtures stay a few KB. Nothing outside the two namespaces is touched, and
# they are removed on exit, whatever happens.
#
# Needs root, iproute2, tcpdump, tshark (editcap), cyclonedds-tools,
# libfastrtps-dev and g++. Usage: src/rtps/testdata/capture.sh [SECONDS]
set -euo pipefail
secs="${1:-4}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
P=r2h-rtps
A=$P-a
B=$P-b
work="$(mktemp -d)"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  # Anything still running inside our namespaces (ddsperf may ignore signals).
  for ns in $A $B; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

for ns in $A $B; do
  if ip netns list | grep -qw "$ns"; then
    for p in $(ip netns pids "$ns"); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns"
  fi
done

participant="$("$root/integration/fastdds/build.sh")"

ip netns add $A
ip netns add $B
ip -n $A link add $P-va type veth peer name $P-vb netns $B
ip -n $A addr add 10.99.0.1/24 dev $P-va
ip -n $B addr add 10.99.0.2/24 dev $P-vb
ip -n $A addr add fd99::1/64 dev $P-va nodad
ip -n $B addr add fd99::2/64 dev $P-vb nodad
for ns in $A $B; do
  ip -n "$ns" link set lo up
done
ip -n $A link set $P-va up
ip -n $B link set $P-vb up
ip -n $A route add 224.0.0.0/4 dev $P-va
ip -n $B route add 224.0.0.0/4 dev $P-vb
sleep 1 # link-local addresses and carrier

# capture NAME CMD_A CMD_B: runs CMD_A in a and CMD_B in b for $secs
# seconds while tcpdump records, then keeps discovery packets.
capture() {
  local name="$1" cmd_a="$2" cmd_b="$3" keep="${4:-24}"
  local raw="$work/$name.raw.pcap"
  ip netns exec $A tcpdump -i $P-va -U -s 0 -w "$raw" udp 2>"$work/$name.tcpdump.log" &
  local td=$!
  pids+=("$td")
  sleep 1
  ip netns exec $B timeout -s KILL $((secs + 2)) bash -c "$cmd_b" >"$work/$name.b.log" 2>&1 &
  local pb=$!
  pids+=("$pb")
  ip netns exec $A timeout -s KILL $((secs + 2)) bash -c "$cmd_a" >"$work/$name.a.log" 2>&1 &
  local pa=$!
  pids+=("$pa")
  wait "$pa" || true
  wait "$pb" || true
  sleep 0.5
  kill -INT "$td" 2>/dev/null || true
  wait "$td" || true
  echo "== $name: a" >&2; tail -n 5 "$work/$name.a.log" >&2 || true
  echo "== $name: b" >&2; tail -n 5 "$work/$name.b.log" >&2 || true
  tshark -r "$raw" -Y 'rtps.sm.wrEntityId.entityKind >= 0xc0 || rtps.sm.rdEntityId.entityKind >= 0xc0' \
    -F pcap -w "$work/$name.disc.pcap" 2>/dev/null
  editcap -F pcap -r "$work/$name.disc.pcap" "$here/$name.pcap" "1-$keep"
  echo "== $name: $(tshark -r "$here/$name.pcap" 2>/dev/null | wc -l) packets, $(stat -c %s "$here/$name.pcap") bytes" >&2
}

# Cyclone DDS, default domain 0: ping/pong.
capture cyclone-d0 \
  "ddsperf -D $secs ping 2Hz" \
  "ddsperf -D $secs pong"
# Cyclone DDS, domain 7.
capture cyclone-d7 \
  "ddsperf -i 7 -D $secs ping 2Hz" \
  "ddsperf -i 7 -D $secs pong"
# Cyclone DDS over IPv6.
cat >"$work/udp6.xml" <<'XML'
<CycloneDDS><Domain><General><Transport>udp6</Transport></General></Domain></CycloneDDS>
XML
capture cyclone-udp6 \
  "CYCLONEDDS_URI=file://$work/udp6.xml ddsperf -D $secs ping 2Hz" \
  "CYCLONEDDS_URI=file://$work/udp6.xml ddsperf -D $secs pong"
# Fast DDS, domain 5: two participants exchanging samples.
capture fastdds-d5 \
  "$participant --domain 5 --duration $secs --rate 2 --name fixture_a" \
  "$participant --domain 5 --duration $secs --rate 2 --name fixture_b"
# Cyclone DDS and Fast DDS in one domain (3): they discover each other.
capture mixed-d3 \
  "ddsperf -i 3 -D $secs pong" \
  "$participant --domain 3 --duration $secs --rate 1 --name fixture_mixed --min-matched 0 --min-received 0"
ls -l "$here"/*.pcap >&2
echo "capture.sh: fixtures rewritten; now refresh tshark's golden files and the fuzz seeds:" >&2
echo "  UPDATE_GOLDEN=1 cargo test --test integration rtps::parser_matches_live_tshark" >&2
