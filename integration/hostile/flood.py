# Hostile multicast for the tests (integration/hostile.rs): bounded in time,
# only to addresses inside the test's own namespaces.
#   flood.py groups SECS LOCAL_IP   one datagram to each of 5,000 groups
#                                   239.1.x.y:7400, over and over, ~10,000/s
#   flood.py spoof SECS LOCAL_IP    239.255.0.1:7400 from 1,000 spoofed
#                                   sources 10.77.x.y (raw socket), ~4,000/s
import socket, struct, sys, time

mode, secs, local = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.time() + secs
sent = 0
if mode == "groups":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 32)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    groups = ["239.1.%d.%d" % (i // 250, i % 250 + 1) for i in range(5000)]
    while time.time() < end:
        for start in range(0, 5000, 500):
            t = time.time()
            for g in groups[start:start + 500]:
                try:
                    s.sendto(b"x", (g, 7400))
                    sent += 1
                except OSError:
                    pass
            # 500 per 50 ms: about 10,000 datagrams/s
            time.sleep(max(0.0, 0.05 - (time.time() - t)))
            if time.time() >= end:
                break
elif mode == "spoof":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    payload = b"not-rtps-spoofed"
    udp = struct.pack("!HHHH", 7400, 7400, 8 + len(payload), 0) + payload
    dst = socket.inet_aton("239.255.0.1")
    while time.time() < end:
        t = time.time()
        for i in range(1000):
            src = socket.inet_aton("10.77.%d.%d" % (i // 250, i % 250 + 1))
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 2, 17, 0, src, dst)
            s.sendto(ip + udp, ("239.255.0.1", 0))
            sent += 1
        time.sleep(max(0.0, 0.25 - (time.time() - t)))
print(sent, flush=True)
