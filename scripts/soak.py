#!/usr/bin/env python3
"""Fault/soak test of the release server, on 127.0.0.1 only, bounded in time and count.

Under steady HTTP/2 load (h2load bursts on fresh connections, so new handshakes keep
happening) it rotates the certificate by a Secret-style `..data` symlink swap 10 times,
reloads the config 10 times (3 of them invalid), opens 500 idle connections that never send
a byte, sends garbage TLS and truncated HTTP/2 frames, then sends SIGTERM with slow requests
in flight. Prints requests sent / succeeded / failed, RSS at start and end, the drain time,
and exits 1 if any well-formed request failed.

usage: soak.py [--seconds 120] [--bin target/release/sidecar-injector]
"""
import argparse
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = os.path.join(ROOT, "benches/fixtures/pod-create-realistic.json")
HOST = "127.0.0.1"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def write_version(secret, n, cert, key):
    """kubelet's Secret update: new ..<ts> dir, ..data_tmp -> it, rename over ..data."""
    d = os.path.join(secret, f"..v{n}")
    os.mkdir(d)
    for name, src in (("tls.crt", cert), ("tls.key", key)):
        with open(src, "rb") as i, open(os.path.join(d, name), "wb") as o:
            o.write(i.read())
    tmp = os.path.join(secret, "..data_tmp")
    os.symlink(f"..v{n}", tmp)
    os.rename(tmp, os.path.join(secret, "..data"))
    for name in ("tls.crt", "tls.key"):
        link = os.path.join(secret, name)
        if not os.path.islink(link):
            os.symlink(f"..data/{name}", link)


class Load(threading.Thread):
    """h2load bursts (4 connections x 8 streams, new connections each burst) until stopped."""

    def __init__(self, url, deadline):
        super().__init__(daemon=True)
        self.url, self.deadline = url, deadline
        self.sent = self.ok = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and time.time() < self.deadline:
            out = subprocess.run(
                ["h2load", "-n", "2000", "-c", "4", "-m", "8", "-t", "1", "-d", BODY,
                 "-H", "content-type: application/json", self.url],
                capture_output=True, text=True, timeout=60).stdout
            m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
            codes = re.search(r"status codes: (\d+) 2xx", out)
            if m:
                self.sent += int(m.group(1))
                self.ok += min(int(m.group(2)), int(codes.group(1)) if codes else 0)


def garbage_tls(port, n=50):
    for _ in range(n):
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(bytes(random.getrandbits(8) for _ in range(random.randint(1, 2048))))
            try:
                s.recv(1024)
            except OSError:
                pass


def truncated_h2(port, n=50):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for i in range(n):
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                # a SETTINGS frame header that promises 60 bytes, then stops; or half a preface
                frame = preface + b"\x00\x00\x3c\x04\x00\x00\x00\x00\x00" + b"\x00" * 7
                s.sendall(frame if i % 2 else preface[:10])


def slow_requests(url, n=12, seconds=2.0):
    """curl uploads trickling in over ~`seconds`: in flight when SIGTERM comes."""
    size = os.path.getsize(BODY)
    rate = max(1, int(size / seconds))
    return [subprocess.Popen(
        ["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}", "--limit-rate", f"{rate}",
         "-H", "content-type: application/json", "--data-binary", f"@{BODY}", url],
        stdout=subprocess.PIPE, text=True) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/sidecar-injector"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="soak-")
    pairs = []
    for i in range(2):
        d = os.path.join(work, f"pair{i}")
        subprocess.run([args.bin, "certs", "--out", d, "--dns", "localhost", "127.0.0.1"],
                       check=True, capture_output=True)
        pairs.append((os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")))
    secret = os.path.join(work, "secret")
    os.mkdir(secret)
    write_version(secret, 0, *pairs[0])
    config = os.path.join(work, "config.yaml")
    good = open(os.path.join(ROOT, "deploy/base/config.yaml")).read()
    with open(config, "w") as f:
        f.write(good)

    log = open(os.path.join(work, "server.log"), "w")
    srv = subprocess.Popen(
        [args.bin, "serve", "--addr", f"{HOST}:0", "--metrics-addr", f"{HOST}:0", "--probe-addr", f"{HOST}:0",
         "--tls-cert", os.path.join(secret, "tls.crt"), "--tls-key", os.path.join(secret, "tls.key"),
         "--config", config, "--reload-interval", "500ms"],
        stderr=subprocess.PIPE, text=True)
    port = None
    for line in srv.stderr:
        log.write(line)
        m = re.search(r"webhook listening addr=127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
        if "ready" in line and port:
            break
    threading.Thread(target=lambda: [log.write(l) for l in srv.stderr], daemon=True).start()
    url = f"https://{HOST}:{port}/mutate"
    rss_start = None
    load = Load(url, time.time() + args.seconds + 30)
    load.start()
    time.sleep(3)
    rss_start = rss_kb(srv.pid)

    step = args.seconds / 12
    idle = []
    for i in range(1, 11):
        write_version(secret, i, *pairs[i % 2])
        with open(config, "w") as f:
            # invalid on rounds 3, 6 and 9: a container without an image
            f.write("defaultProfiles: [default]\nprofiles: {default: {containers: [{name: x}]}}\n"
                    if i % 3 == 0 else good.replace("cpu: 10m", f"cpu: {10 + i}m"))
        if i == 2:
            for _ in range(500):
                s = socket.socket()
                s.connect((HOST, port))
                idle.append(s)
        if i == 4:
            garbage_tls(port)
        if i == 5:
            truncated_h2(port)
        time.sleep(step)
    time.sleep(step)
    load.stop.set()
    load.join()
    rss_end = rss_kb(srv.pid)
    for s in idle:
        s.close()

    slow = slow_requests(url)
    time.sleep(1.0)
    t0 = time.time()
    srv.send_signal(signal.SIGTERM)
    code = srv.wait(timeout=60)
    drain = time.time() - t0
    slow_codes = [p.communicate()[0] for p in slow]
    slow_ok = sum(c == "200" for c in slow_codes)

    sent = load.sent + len(slow)
    ok = load.ok + slow_ok
    text = open(os.path.join(work, "server.log")).read()
    print(f"requests sent={sent} succeeded={ok} failed={sent - ok}")
    print(f"  steady h2load bursts: sent={load.sent} succeeded={load.ok}; "
          f"in flight at SIGTERM: {len(slow)} sent, {slow_ok} succeeded")
    print(f"faults: 10 certificate swaps (reloaded {text.count('certificate reloaded')}), "
          f"10 config writes (reloaded {text.count('config reloaded')}, "
          f"refused {text.count('config reload failed')}), 500 idle connections, "
          f"50 garbage TLS, 50 truncated HTTP/2")
    growth = 100.0 * (rss_end - rss_start) / rss_start
    print(f"rss start={rss_start} kB end={rss_end} kB growth={growth:.1f}%")
    print(f"shutdown: exit={code} drain={drain:.2f}s")
    failed = sent - ok
    sys.exit(0 if failed == 0 and code == 0 else 1)


if __name__ == "__main__":
    main()
