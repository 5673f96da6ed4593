#!/usr/bin/python3
"""Traffic and status helper of the arm64 smoke test (integration/arm64/guest.sh
runs it inside the VM as /usr/local/bin/smoke-probe). python3-minimal only: no
json module (jq reads the agent's status).

  smoke-probe send DST PORT SRC TTL TAG N
      sends N datagrams "TAG:0" .. "TAG:N-1" from SRC (bound; for a multicast
      DST also IP_MULTICAST_IF, no loopback) with TTL (multicast and unicast)
  smoke-probe recv PORT GROUP|- LOCAL READY DEADLINE QUIET TAG=N...
      binds PORT (SO_REUSEADDR; joins GROUP on LOCAL unless "-"), creates the
      file READY, then counts "TAG:i" per tag; ends when every TAG=N with N > 0
      has all its numbers and nothing more arrived for QUIET s, or after
      DEADLINE s. Prints one line per tag; exit 0 only when every number of
      every tag arrived exactly once and the tags with N = 0 not at all
  smoke-probe status SOCKET
      the agent's status document (the "status" request on its socket)
"""
import os
import select
import socket
import struct
import sys
import time


def send(dst, port, src, ttl, tag, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    ttl = int(ttl)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    if 224 <= int(dst.split(".")[0]) <= 239:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
    for i in range(int(n)):
        s.sendto(("%s:%d" % (tag, i)).encode(), (dst, int(port)))
        # paced as the x86 tests pace theirs, not for correctness
        time.sleep(0.02)
    return 0


def recv(port, group, local, ready, deadline, quiet, expects):
    want = {}
    for e in expects:
        tag, n = e.rsplit("=", 1)
        want[tag] = int(n)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    if group != "-":
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(local))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    open(ready, "w").close()
    seen = {tag: {} for tag in want}
    end = time.monotonic() + float(deadline)
    quiet = float(quiet)
    last = time.monotonic()

    def complete():
        return all(len(seen[t]) >= n for t, n in want.items() if n > 0)

    while True:
        now = time.monotonic()
        if now >= end or (complete() and now - last >= quiet):
            break
        wait = end - now
        if complete():
            wait = min(wait, last + quiet - now)
        r, _, _ = select.select([s], [], [], max(wait, 0.01))
        if not r:
            continue
        data, _ = s.recvfrom(2048)
        try:
            tag, i = data.decode().rsplit(":", 1)
            i = int(i)
        except ValueError:
            continue
        if tag in seen:
            seen[tag][i] = seen[tag].get(i, 0) + 1
            last = time.monotonic()
    ok = True
    for tag, n in want.items():
        got = seen[tag]
        exact = sorted(got) == list(range(n)) and all(c == 1 for c in got.values())
        ok = ok and exact
        detail = ",".join("%d:%d" % (i, got[i]) for i in sorted(got)) or "none"
        print("%s: %d datagrams, %d of %d numbers, %s (number:count %s)" % (
            tag, sum(got.values()), len(got), n,
            ("exactly once" if n else "none, as wanted") if exact
            else ("NOT exactly once" if n else "NOT none"), detail))
    return 0 if ok else 1


def status(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"status\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    sys.stdout.write(out.decode().strip() + "\n")
    return 0


def main(argv):
    if len(argv) >= 7 and argv[0] == "send":
        return send(*argv[1:7])
    if len(argv) >= 8 and argv[0] == "recv":
        return recv(*argv[1:7], argv[7:])
    if len(argv) == 2 and argv[0] == "status":
        try:
            return status(argv[1])
        except OSError as e:
            sys.stderr.write("smoke-probe: status: %s: %s\n" % (argv[1], e))
            return 1
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
