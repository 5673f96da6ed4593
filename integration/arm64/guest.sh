#!/bin/sh
# Runs inside the arm64 VM of integration/arm64/smoke.sh as its init (PID 1):
# the plugin as a container runtime runs it, chained after the reference ptp +
# host-local plugins, on a network-namespace pod: ADD, CHECK, DEL, and nothing
# left behind. Prints "SMOKE RESULT: PASS" or "SMOKE RESULT: FAIL <why>" and
# powers the VM off.
#
# The VM's own root namespace plays the node: a dummy link lan0 is its uplink
# on the robot LAN 192.168.0.0/20. Only the VM's namespaces are touched.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
set -u

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp /var/run
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/sysrq

off() {
  sync
  echo o > /proc/sysrq-trigger
  sleep 10
}
t0=$(cut -d' ' -f1 /proc/uptime)
fail() {
  echo "SMOKE RESULT: FAIL $*"
  off
}
step() { echo "SMOKE: $* (uptime $(cut -d' ' -f1 /proc/uptime) s)"; }

step "userspace up: $(uname -srm)"
[ "$(uname -m)" = aarch64 ] || fail "not an aarch64 kernel: $(uname -m)"
cni=/usr/lib/cni
bin=/usr/local/bin/ros2-cni
for f in "$cni/ptp" "$cni/host-local" "$bin"; do
  [ -x "$f" ] || fail "$f missing"
done
"$bin" version || fail "ros2-cni version"

# the node: lan0 (dummy) on the LAN, default route through it
ip link add lan0 type dummy || fail "dummy link (modules?)"
ip addr add 192.168.0.10/20 dev lan0
ip link set lan0 up
ip link set lo up
ip route add default via 192.168.0.1 dev lan0 onlink

data=/run/smoke
mkdir -p "$data"
primary_conf='{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ptp","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.1.1.0/24","dataDir":"/run/smoke/host-local","routes":[{"dst":"0.0.0.0/0"}]}}'
ros2cni_conf() { # PREV_RESULT
  printf '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ros2-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"subnet":"192.168.0.0/20","podRange":"192.168.1.0/28","uplink":"lan0","dataDir":"/run/smoke/ros2-cni","logFile":"/run/smoke/ros2-cni.log","logLevel":"debug","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"ros2-cni.io/enabled":"true"}},"prevResult":%s}' "$1"
}
with_prev() { # CONF PREV_RESULT: CONF with prevResult
  printf '%s' "$1" | sed 's/}$//'
  printf ',"prevResult":%s}' "$2"
}
# run PLUGIN COMMAND POD CONF: stdout to $data/out, exit code in $rc
run() {
  env CNI_COMMAND="$2" CNI_CONTAINERID="smoke-$3" CNI_NETNS="/run/netns/$3" CNI_IFNAME=eth0 \
    CNI_PATH="$cni" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3" \
    "$1" > "$data/out" 2> "$data/err" <<EOF
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

start=$(cut -d' ' -f1 /proc/uptime)
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
end=$(cut -d' ' -f1 /proc/uptime)
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
echo "SMOKE RESULT: PASS ($(echo "$t0 $end" | awk '{printf "%.1f", $2-$1}') s in userspace)"
off
