#!/bin/sh
# Runs inside the arm64 VM of integration/arm64/smoke.sh as its init (PID 1).
# Prints "SMOKE RESULT: PASS" or "SMOKE RESULT: FAIL <why>" and powers the VM
# off; "SMOKE TIME <stage> <seconds> s" after each stage (boot: the kernel's,
# until this script starts). Only the VM's namespaces are touched. Stages:
#
#   modules   loads what the pods' network, the agent's forwarders and its
#             fast path need (veth, bridge, nf_tables and its expressions,
#             nft_dup_ipv4, sch_ingress, cls_bpf, 8021q, ...)
#   plugin    the plugin as a container runtime runs it, chained after the
#             reference ptp + host-local plugins, in the VM's own namespace (a
#             dummy lan0 is the uplink): ADD, CHECK (and a CHECK that must
#             fail), DEL twice, nothing left behind
#   bed       two robot computers as in src/lab/testbed.rs: a switch namespace
#             with a bridge, nodes n1 and n2 with eth0 on it (192.168.0.11,
#             .12 /20, forwarding), each with its data dir, conflist entry and
#             agent config (the Testbed's keys), and the agents
#             (`ros2-cni agent --config FILE`, in the background) started
#   pods      one pod per node (p1 on n1, p2 on n2) through ptp + host-local
#             then ros2-cni; both agents report the kernel forwarder
#             (forwarder.kind) and the fast path (fastPath.lan, pods 1), and
#             tc shows r2c_lan on eth0 and r2c_pod on the pods' host veths
#   mcast-kernel   N TTL-1 datagrams to 239.255.0.1:7400 from p1 reach p2
#             exactly once each, and from p2 reach p1 (the MRT_* structures)
#   fastpath  N datagrams p1 -> p2 from p1's own address all reach the switch
#             and p2, fewer than half through n1's and n2's forwarding paths
#             (nft forward counters: the programs redirected the rest); N from a
#             forged source (a second address on p1's ros0) leave p1 (an nft
#             output counter) and reach neither the switch (bridge counter on
#             n1's port) nor p2, and n1's anti-spoofing drop rule never sees
#             them: the pod program dropped them
#   restart   both agents stopped (SIGTERM: exit 0, programs removed); then
#             TTL-1 discovery from p1 does not reach p2, unicast still does;
#             the agents started again with "multicastForwarder": "nftables"
#   mcast-nftables  the same exactly-once check (the nf_tables dup encoder)
#   teardown  ros2-cni and ptp DEL of both pods with the agents running (the
#             agents take the slow work: the pods' host links, routes and
#             anti-spoofing elements go), the agents stopped
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
set -u

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp /var/run
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/sysrq

data=/run/smoke
mkdir -p "$data"
off() {
  sync
  echo o > /proc/sysrq-trigger
  sleep 10
}
now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
echo "SMOKE TIME boot $t0 s"
fail() {
  echo "SMOKE RESULT: FAIL $*"
  for f in "$data"/n1/agent.log "$data"/n2/agent.log; do
    [ -s "$f" ] || continue
    echo "SMOKE: last lines of $f:"
    tail -15 "$f" | sed 's/^/SMOKE:     /'
  done
  off
}
step() { echo "SMOKE: $* (uptime $(now) s)"; }
stage_t=$(now)
stage_done() { # NAME: prints the time since the previous stage ended
  local t
  t=$(now)
  echo "SMOKE TIME $1 $(echo "$stage_t $t" | awk '{printf "%.1f", $2-$1}') s"
  stage_t=$t
}
# wait_until SECS WHAT COMMAND...: polls COMMAND (every 0.2 s) until it
# succeeds; fails the test after SECS
wait_until() {
  local secs="$1" what="$2" end
  shift 2
  end=$(echo "$(now) $secs" | awk '{print $1+$2}')
  until "$@"; do
    if [ "$(echo "$(now) $end" | awk '{print ($1 >= $2)}')" = 1 ]; then
      fail "timed out after $secs s: $what"
    fi
    sleep 0.2
  done
}

step "userspace up: $(uname -srm)"
[ "$(uname -m)" = aarch64 ] || fail "not an aarch64 kernel: $(uname -m)"
cni=/usr/lib/cni
bin=/usr/local/bin/ros2-cni
for f in "$cni/ptp" "$cni/host-local" "$bin" /usr/local/bin/smoke-probe /usr/bin/python3 /usr/bin/jq; do
  [ -x "$f" ] || fail "$f missing"
done
"$bin" version || fail "ros2-cni version"

# --- modules -------------------------------------------------------------------
# The kernel would load most of them on demand (request_module through
# modprobe); loading them here makes a missing one fail by name, before
# anything depends on it. Built-in ones (af_packet, ipmr) need nothing.
mods="veth dummy bridge 8021q nf_tables nft_compat nft_chain_nat nft_limit nft_meta_bridge nf_dup_ipv4 nft_dup_ipv4 sch_ingress cls_bpf"
for m in $mods; do
  modprobe "$m" 2>"$data/modprobe.err" || fail "modprobe $m: $(cat "$data/modprobe.err")"
done
step "modules loaded: $mods"
stage_done modules

# --- plugin: ADD, CHECK, DEL on the VM's own namespace --------------------------
# the node: lan0 (dummy) on the LAN, default route through it
ip link add lan0 type dummy || fail "dummy link (modules?)"
ip addr add 192.168.0.10/20 dev lan0
ip link set lan0 up
ip link set lo up
ip route add default via 192.168.0.1 dev lan0 onlink

primary_conf='{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ptp","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.1.1.0/24","dataDir":"/run/smoke/host-local","routes":[{"dst":"0.0.0.0/0"}]}}'
ros2cni_conf() { # PREV_RESULT
  printf '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ros2-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"subnet":"192.168.0.0/20","podRange":"192.168.1.0/28","uplink":"lan0","dataDir":"/run/smoke/ros2-cni","logFile":"/run/smoke/ros2-cni.log","logLevel":"debug","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"ros2-cni.io/enabled":"true"}},"prevResult":%s}' "$1"
}
with_prev() { # CONF PREV_RESULT: CONF with prevResult
  printf '%s' "$1" | sed 's/}$//'
  printf ',"prevResult":%s}' "$2"
}
# run PLUGIN COMMAND POD CONF: stdout to $data/out, exit code in $rc; in the
# namespace $node when it is set (the two-node stages), else in the VM's own
node=
run() {
  local in_node=
  [ -n "$node" ] && in_node="ip netns exec $node"
  env CNI_COMMAND="$2" CNI_CONTAINERID="smoke-$3" CNI_NETNS="/run/netns/$3" CNI_IFNAME=eth0 \
    CNI_PATH="$cni" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3" \
    timeout 120 $in_node "$1" > "$data/out" 2> "$data/err" <<EOF
$4
EOF
  rc=$?
}
# state NAME: what a pod may leave on the node (links, routes, permanent and
# proxy neighbours, nftables ruleset, ros2-cni and host-local files)
state() {
  {
    echo "## links"; ip -o link show | sed 's/^[0-9]*: //; s/[:@].*//' | sort
    echo "## routes"; ip route show table all | sort
    echo "## neighbours"; ip neigh show nud permanent | sort
    echo "## proxy"; ip neigh show proxy | sort
    echo "## nft"; nft list ruleset | grep -v '^\s*$'
    echo "## files"; find "$data/ros2-cni" "$data/host-local" -type f 2>/dev/null | sort
    echo "## netns"; ls /run/netns 2>/dev/null | sort
  } > "$data/state.$1"
}

# attach POD: ptp ADD then ros2-cni ADD; result in $data/POD.result
attach() {
  ip netns add "$1" || fail "ip netns add $1"
  run "$cni/ptp" ADD "$1" "$primary_conf"
  [ "$rc" = 0 ] || fail "ptp ADD $1: $(cat "$data/out" "$data/err")"
  cp "$data/out" "$data/$1.primary"
  run "$bin" ADD "$1" "$(ros2cni_conf "$(cat "$data/$1.primary")")"
  [ "$rc" = 0 ] || fail "ros2-cni ADD $1 (exit $rc): $(cat "$data/out" "$data/err")"
  cp "$data/out" "$data/$1.result"
}
detach() {
  run "$bin" DEL "$1" "$(ros2cni_conf "$(cat "$data/$1.result")")"
  [ "$rc" = 0 ] || fail "ros2-cni DEL $1 (exit $rc): $(cat "$data/out" "$data/err")"
  run "$cni/ptp" DEL "$1" "$(with_prev "$primary_conf" "$(cat "$data/$1.primary")")"
  [ "$rc" = 0 ] || fail "ptp DEL $1: $(cat "$data/out" "$data/err")"
  ip netns del "$1" || fail "ip netns del $1"
}

state pristine
# VERSION, as the runtime asks it
run "$bin" VERSION none '{"cniVersion":"1.0.0"}'
[ "$rc" = 0 ] && grep -q '"supportedVersions"' "$data/out" || fail "VERSION: $(cat "$data/out")"
step "VERSION: $(cat "$data/out")"

# warm-up pod: node-wide state (bridge, nft table, sysctls) is created at the
# first ADD and stays; per-pod residue is measured against the state after it
attach warm
detach warm
state baseline
step "node-wide state the first pod created (stays by design):"
diff "$data/state.pristine" "$data/state.baseline" | grep '^[<>]' | sed 's/^/SMOKE:     /'

start=$(now)
attach pod1
step "ADD: $(cat "$data/pod1.result")"
{ ip -n pod1 -br addr; ip -n pod1 route; } | sed 's/^/SMOKE:     pod1: /'
addr=$(ip -n pod1 -4 -o addr show dev ros0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p')
case "$addr" in
  192.168.1.*) ;;
  *) fail "ros0 has no address from the pool 192.168.1.0/28: '$addr'" ;;
esac
ip -n pod1 route | grep -q '^224.0.0.0/4 dev ros0' || fail "no multicast route through ros0"
ip route | grep -q "^$addr dev ros2br0" || fail "no node route to $addr via ros2br0"
ip neigh show proxy | grep -q "^$addr dev lan0" || fail "no proxy ARP entry for $addr on lan0"
nft list set bridge ros2_cni pods | grep -q "$addr" || fail "no anti-spoofing element for $addr"
ip netns exec pod1 ping -c1 -W2 192.168.0.10 > /dev/null || fail "pod1 cannot reach the node's LAN address"
state attached
cmp -s "$data/state.baseline" "$data/state.attached" && fail "ADD changed nothing on the node"

run "$bin" CHECK pod1 "$(ros2cni_conf "$(cat "$data/pod1.result")")"
[ "$rc" = 0 ] && [ ! -s "$data/out" ] || fail "ros2-cni CHECK (exit $rc): $(cat "$data/out" "$data/err")"
step "CHECK: ok"
# CHECK must notice a missing route: a test that cannot fail is no test
ip -n pod1 route del 224.0.0.0/4 dev ros0
run "$bin" CHECK pod1 "$(ros2cni_conf "$(cat "$data/pod1.result")")"
[ "$rc" != 0 ] || fail "ros2-cni CHECK passed with the multicast route removed"
step "CHECK without the multicast route: exit $rc, $(cat "$data/out")"
ip -n pod1 route add 224.0.0.0/4 dev ros0

detach pod1
# DEL twice, as runtimes do
run "$bin" DEL pod1 "$(ros2cni_conf "$(cat "$data/pod1.result")")"
[ "$rc" = 0 ] || fail "second ros2-cni DEL (exit $rc): $(cat "$data/out")"
end=$(now)
step "ADD/CHECK/DEL of pod1 took $(echo "$start $end" | awk '{printf "%.2f", $2-$1}') s"
i=0
while :; do
  state after
  cmp -s "$data/state.baseline" "$data/state.after" && break
  i=$((i + 1))
  if [ $i -ge 50 ]; then
    diff "$data/state.baseline" "$data/state.after" | sed 's/^/SMOKE:     /'
    fail "DEL left something behind (above: < before the pod, > after its DEL)"
  fi
  sleep 0.2
done
step "after DEL: links, routes, neighbours, nft ruleset and files as before the pod"
stage_done plugin

# --- bed: two robot computers on a LAN switch ------------------------------------
N=10                 # datagrams per check
group=239.255.0.1
must() { # COMMAND...: runs it, fails the test (naming it) if it fails
  "$@" 2> "$data/must.err" || fail "$*: $(cat "$data/must.err")"
}
must ip netns add sw
must ip -n sw link set lo up
must ip -n sw link add br0 type bridge
# the switch forwards at once and floods multicast like a dumb switch
must ip -n sw link set br0 type bridge forward_delay 0 mcast_snooping 0
must ip -n sw link set br0 up
for i in 1 2; do
  must ip netns add "n$i"
  must ip -n "n$i" link set lo up
  must ip -n sw link add "n$i" type veth peer name eth0 netns "n$i"
  must ip -n sw link set "n$i" master br0 up
  must ip -n "n$i" addr add "192.168.0.1$i/20" dev eth0
  must ip -n "n$i" link set eth0 up
  must ip netns exec "n$i" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
  must ip -n "n$i" route add default via 192.168.0.1 dev eth0 onlink
  mkdir -p "$data/n$i"
done
# the Calico stand-in's routes to the other node's pod range
must ip -n n1 route add 10.1.2.0/24 via 192.168.0.12
must ip -n n2 route add 10.1.1.0/24 via 192.168.0.11

# node I's entries, with the keys src/lab/testbed.rs gives them
node_primary() { # I
  printf '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ptp","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.1.%s.0/24","dataDir":"%s/n%s/host-local","routes":[{"dst":"0.0.0.0/0"}]}}' "$1" "$data" "$1"
}
node_keys() { # I: what the conflist entry and the agent config share
  printf '"subnet":"192.168.0.0/20","podRange":"192.168.%s.0/24","uplink":"eth0","dataDir":"%s/n%s/ros2-cni","logLevel":"debug"' "$1" "$data" "$1"
}
node_ros2cni() { # I PREV_RESULT
  printf '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ros2-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},%s,"logFile":"%s/n%s/ros2-cni.log","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"ros2-cni.io/enabled":"true"}},"prevResult":%s}' "$(node_keys "$1")" "$data" "$1" "$2"
}
# the agent's config: the entry's keys without cniVersion, name, type,
# capabilities, logFile (Testbed::agent_config), plus multicastForwarder
agent_config() { # I [FORWARDER]
  {
    printf '{%s' "$(node_keys "$1")"
    [ -n "${2:-}" ] && printf ',"multicastForwarder":"%s"' "$2"
    printf '}\n'
  } > "$data/n$1/agent.json"
  jq -e . "$data/n$1/agent.json" > /dev/null || fail "agent config n$1 is not JSON"
}
start_agent() { # I [FORWARDER]
  agent_config "$1" "${2:-}"
  echo "--- started with $(cat "$data/n$1/agent.json")" >> "$data/n$1/agent.log"
  ip netns exec "n$1" "$bin" agent --config "$data/n$1/agent.json" \
    >> "$data/n$1/agent.log" 2>&1 < /dev/null &
  eval "agent_pid$1=$!"
}
agent_pid() { eval "echo \$agent_pid$1"; }
alive() { # PID: running (not gone, not a zombie)
  local s
  s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ]
}
not_running() { ! alive "$1"; }
agent_status() { smoke-probe status "$data/n$1/ros2-cni/agent.sock" 2>/dev/null; }
st_is() { # I JQ_EXPRESSION: node I's agent answers and its status satisfies it
  alive "$(agent_pid "$1")" || fail "the agent on n$1 exited"
  agent_status "$1" | jq -e "$2" > /dev/null 2>&1
}
stop_agent() { # I: SIGTERM; it exits, with 0
  local pid arc
  pid=$(agent_pid "$1")
  kill -TERM "$pid"
  wait_until 30 "the agent on n$1 exits after SIGTERM" not_running "$pid"
  wait "$pid"
  arc=$?
  [ "$arc" = 0 ] || fail "the agent on n$1 exited with $arc after SIGTERM"
}
for i in 1 2; do start_agent $i; done
for i in 1 2; do wait_until 60 "the agent on n$i answers on its status socket" st_is $i '.pid > 0'; done
step "agents up: n1 pid $agent_pid1, n2 pid $agent_pid2"
stage_done bed

# --- pods: one per node, the forwarder and the fast path ---------------------------
attach_on() { # I POD
  node=n$1
  ip netns add "$2" || fail "ip netns add $2"
  run "$cni/ptp" ADD "$2" "$(node_primary "$1")"
  [ "$rc" = 0 ] || fail "ptp ADD $2 on n$1: $(cat "$data/out" "$data/err")"
  cp "$data/out" "$data/$2.primary"
  run "$bin" ADD "$2" "$(node_ros2cni "$1" "$(cat "$data/$2.primary")")"
  [ "$rc" = 0 ] || fail "ros2-cni ADD $2 on n$1 (exit $rc): $(cat "$data/out" "$data/err")"
  cp "$data/out" "$data/$2.result"
  node=
}
detach_on() { # I POD
  node=n$1
  run "$bin" DEL "$2" "$(node_ros2cni "$1" "$(cat "$data/$2.result")")"
  [ "$rc" = 0 ] || fail "ros2-cni DEL $2 on n$1 (exit $rc): $(cat "$data/out" "$data/err")"
  run "$cni/ptp" DEL "$2" "$(with_prev "$(node_primary "$1")" "$(cat "$data/$2.primary")")"
  [ "$rc" = 0 ] || fail "ptp DEL $2 on n$1: $(cat "$data/out" "$data/err")"
  node=
  ip netns del "$2" || fail "ip netns del $2"
}
ros_ip() { ip -n "$1" -4 -o addr show dev ros0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | head -1; }
host_if() { ip -n "n$1" -o link show | sed -n 's/^[0-9]*: \(r2c[^:@]*\).*/\1/p' | head -1; }
bpf_on() { ip netns exec "n$1" tc filter show dev "$2" ingress; }
attach_on 1 p1
attach_on 2 p2
ip_p1=$(ros_ip p1)
ip_p2=$(ros_ip p2)
case "$ip_p1 $ip_p2" in
  192.168.1.*\ 192.168.2.*) ;;
  *) fail "ros0 addresses not from the nodes' pools: p1 '$ip_p1', p2 '$ip_p2'" ;;
esac
step "p1 $ip_p1 on n1, p2 $ip_p2 on n2"
# forwarder and fast path as the status says them, and as tc shows them
check_agents() { # KIND
  local i hv
  for i in 1 2; do
    wait_until 60 "the fast path on n$i (fastPath.lan, one pod)" \
      st_is $i '.fastPath.lan == true and .fastPath.pods == 1'
    st_is $i ".forwarder.kind == \"$1\"" \
      || fail "n$i: forwarder $(agent_status $i | jq -c .forwarder), not $1"
    step "n$i: forwarder $(agent_status $i | jq -c .forwarder), fastPath $(agent_status $i | jq -c .fastPath)"
    hv=$(host_if $i)
    [ -n "$hv" ] || fail "n$i: no r2c host link"
    bpf_on $i eth0 | grep -q 'r2c_lan' || fail "n$i: no r2c_lan on eth0: $(bpf_on $i eth0)"
    bpf_on $i "$hv" | grep -q 'r2c_pod' || fail "n$i: no r2c_pod on $hv: $(bpf_on $i "$hv")"
    step "n$i: eth0: $(bpf_on $i eth0 | grep -o 'r2c_lan[^ ]*.*')"
    step "n$i: $hv: $(bpf_on $i "$hv" | grep -o 'r2c_pod[^ ]*.*')"
  done
}
check_agents kernel
stage_done pods

# --- multicast: TTL-1 discovery exactly once ------------------------------------------
# recv_start LABEL POD PORT GROUP|- EXPECT...: a receiver in POD, in the
# background, ready (its socket bound and joined) when this returns
recv_start() {
  local label="$1" pod="$2" port="$3" grp="$4" ip
  shift 4
  rm -f "$data/ready.$label"
  ip=$(ros_ip "$pod")
  ip netns exec "$pod" timeout 120 smoke-probe recv "$port" "$grp" "$ip" \
    "$data/ready.$label" 60 2 "$@" > "$data/recv.$label" 2>&1 &
  rpid=$!
  recv_ready() {
    [ -e "$data/ready.$label" ] && return 0
    alive "$rpid" || fail "receiver $label in $pod: $(cat "$data/recv.$label")"
    return 1
  }
  wait_until 30 "the receiver $label in $pod" recv_ready
}
recv_end() { # LABEL: waits for the receiver; its verdict in $rrc
  wait "$rpid"
  rrc=$?
}
mcast_once() { # LABEL FROM TO
  recv_start "$1" "$3" 7400 $group "$1=$N"
  ip netns exec "$2" smoke-probe send $group 7400 "$(ros_ip "$2")" 1 "$1" $N \
    || fail "sender in $2"
  recv_end "$1"
  step "$1, $2 -> $3 (TTL 1, $group:7400): $(cat "$data/recv.$1")"
  [ "$rrc" = 0 ] || fail "$1: $2 -> $3: $(cat "$data/recv.$1")"
}
mcast_pass() { # FORWARDER
  mcast_once "$1-p1-p2" p1 p2
  mcast_once "$1-p2-p1" p2 p1
  for i in 1 2; do
    step "n$i: forwarded $(agent_status $i | jq -c '[.forwarded[] | select(.packets > 0)]')"
  done
}
mcast_pass kernel
stage_done mcast-kernel

# --- fast path and its anti-spoofing -------------------------------------------------------
spoof=192.168.15.99
counter() { # NS FAMILY COMMENT: packets of the smoke table's counter with COMMENT
  ip netns exec "$1" nft list table "$2" smoke \
    | sed -n "s/.*counter packets \([0-9]*\) .*comment \"$3\".*/\1/p"
}
pod_drops() { # the anti-spoofing drop rule's count on n1
  ip netns exec n1 nft list table bridge ros2_cni \
    | sed -n 's/.*counter packets \([0-9]*\) .*comment "ros2-cni v1 pod-drop".*/\1/p'
}
for i in 1 2; do
  ip netns exec "n$i" nft -f - <<EOF || fail "nft counter on n$i"
table ip smoke {
  chain counted {
    type filter hook forward priority 0; policy accept;
    udp dport 17800 counter comment "forwarded"
  }
}
EOF
done
ip netns exec sw nft -f - <<EOF || fail "nft counters on the switch"
table bridge smoke {
  chain counted {
    type filter hook prerouting priority 0; policy accept;
    iifname "n1" ip saddr $ip_p1 udp dport 17800 counter comment "genuine"
    iifname "n1" ip saddr $spoof udp dport 17800 counter comment "spoofed"
  }
}
EOF
ip netns exec p1 nft -f - <<EOF || fail "nft counter in p1"
table ip smoke {
  chain counted {
    type filter hook output priority 0; policy accept;
    ip saddr $spoof udp dport 17800 counter comment "spoofed"
  }
}
EOF
must ip -n p1 addr add "$spoof/32" dev ros0
# the programs forward only to resolved neighbours: resolve them
wait_until 30 "p1 reaches p2" ip netns exec p1 ping -c1 -W1 -I "$ip_p1" "$ip_p2"
f1=$(counter n1 ip forwarded)
f2=$(counter n2 ip forwarded)
d0=$(pod_drops)
recv_start fastpath p2 17800 - genuine=$N spoofed=0
# the forged ones first: the genuine ones behind them on the same path
ip netns exec p1 smoke-probe send "$ip_p2" 17800 $spoof 64 spoofed $N || fail "forged sender in p1"
ip netns exec p1 smoke-probe send "$ip_p2" 17800 "$ip_p1" 64 genuine $N || fail "sender in p1"
recv_end fastpath
step "fastpath, p1 -> p2 (unicast): $(tr '\n' ';' < "$data/recv.fastpath")"
left=$(counter p1 ip spoofed)
sw_g=$(counter sw bridge genuine)
sw_s=$(counter sw bridge spoofed)
via1=$(( $(counter n1 ip forwarded) - f1 ))
via2=$(( $(counter n2 ip forwarded) - f2 ))
drops=$(( $(pod_drops) - d0 ))
step "forged: $left left p1, $sw_s reached the switch, $drops counted by n1's drop rule; genuine: $sw_g reached the switch; through the forwarding path: n1 $via1, n2 $via2 of $N"
[ "$rrc" = 0 ] || fail "p2 did not get exactly the genuine datagrams: $(cat "$data/recv.fastpath")"
[ "$left" = $N ] || fail "the forged datagrams did not leave p1 ($left of $N): the check cannot fail"
[ "$sw_s" = 0 ] || fail "$sw_s forged datagrams reached the switch"
[ "$sw_g" = $N ] || fail "$sw_g of $N genuine datagrams reached the switch"
[ "$drops" = 0 ] || fail "the bridge's drop rule counted $drops: the pod program did not drop the forged ones"
[ $((via1 * 2)) -lt $N ] || fail "$via1 of $N went through n1's forwarding path: no fast path"
[ $((via2 * 2)) -lt $N ] || fail "$via2 of $N went through n2's forwarding path: no fast path"
must ip -n p1 addr del "$spoof/32" dev ros0
for ns in n1 n2 p1; do must ip netns exec $ns nft delete table ip smoke; done
must ip netns exec sw nft delete table bridge smoke
stage_done fastpath

# --- restart with the nftables forwarder --------------------------------------------------
for i in 1 2; do
  stop_agent $i
  hv=$(host_if $i)
  bpf_on $i eth0 | grep -q r2c_ && fail "n$i: a program stays on eth0 after SIGTERM"
  bpf_on $i "$hv" | grep -q r2c_ && fail "n$i: a program stays on $hv after SIGTERM"
done
step "agents stopped (exit 0), programs removed"
# without the agents no discovery crosses (the checks above can fail), while
# unicast carries on: unicast datagrams sent behind the multicast ones arrive
recv_start stopped p2 7400 $group stopped=0 unicast=3
ip netns exec p1 smoke-probe send $group 7400 "$ip_p1" 1 stopped $N || fail "sender in p1"
ip netns exec p1 smoke-probe send "$ip_p2" 7400 "$ip_p1" 64 unicast 3 || fail "sender in p1"
recv_end stopped
step "agents stopped, p1 -> p2: $(tr '\n' ';' < "$data/recv.stopped")"
[ "$rrc" = 0 ] || fail "with the agents stopped: $(cat "$data/recv.stopped")"
for i in 1 2; do start_agent $i nftables; done
for i in 1 2; do wait_until 60 "the agent on n$i answers again" st_is $i '.pid > 0'; done
check_agents nftables
for i in 1 2; do
  ip netns exec "n$i" nft list table ip ros2_cni_fwd > "$data/fwd.n$i" 2>&1 \
    || fail "n$i: no table ip ros2_cni_fwd: $(cat "$data/fwd.n$i")"
  step "n$i: ip ros2_cni_fwd has $(grep -c ' dup to ' "$data/fwd.n$i") dup rules"
done
stage_done restart

mcast_pass nftables
stage_done mcast-nftables

# --- teardown ------------------------------------------------------------------------------
pod_gone() { # I POD_IP: no host link, /32 route or anti-spoofing element left on node I
  [ -z "$(host_if "$1")" ] \
    && ! ip -n "n$1" route show | grep -q "^$2 " \
    && ! ip netns exec "n$1" nft list set bridge ros2_cni pods | grep -q "$2"
}
detach_on 1 p1
detach_on 2 p2
wait_until 30 "n1 without p1's host link, route and element" pod_gone 1 "$ip_p1"
wait_until 30 "n2 without p2's host link, route and element" pod_gone 2 "$ip_p2"
for i in 1 2; do stop_agent $i; done
step "pods deleted with the agents running, nothing of theirs left; agents stopped (exit 0)"
stage_done teardown
echo "SMOKE RESULT: PASS ($(echo "$t0 $(now)" | awk '{printf "%.1f", $2-$1}') s in userspace)"
off
