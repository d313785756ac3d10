"""DnsBed: a private DNS server with test zones, optionally DNSSEC-signed.

Standard library only. Starts Debian's ``unbound`` daemon in the foreground
(``unbound -d -c CONF``) on 127.0.0.1 and a free port, authoritative for the
zones it is given (``auth-zone:``), and answering NXDOMAIN for every other
name (``local-zone: "." static``), so nothing ever leaves the machine.
Signed zones are signed with ``ldns-keygen``/``ldns-signzone`` (package
ldnsutils; ``scripts/deps.sh test`` installs both).

    from dns_testbed import DnsBed

    with DnsBed(tmp_path, zones={
        "a.example": [
            "_xmpp-server._tcp.a.example. 60 IN SRV 0 5 5269 xmpp.a.example.",
            "xmpp.a.example. 60 IN A 127.0.0.2",
            "xmpp.a.example. 60 IN AAAA ::1",
            "bad.a.example. 60 IN A 127.0.0.9",
        ],
        "plain.example": ["host.plain.example. 60 IN A 127.0.0.3"],
    }, signed={"a.example"}, bogus=["bad.a.example"]) as bed:
        conf = dns_conf(servers=[bed.server], trust_anchor_file=bed.trust_anchor)

DnsBed(tmp_path, zones, signed=True, bogus=(), refused=(), stripped=False)
    tmp_path   directory for the bed's files (a subdirectory "dnsbed" is made).
    zones      {zone name: [zone-file lines]}. Lines are master-file records;
               relative names are relative to the zone ($ORIGIN is the zone,
               $TTL 60). An SOA and an NS at the apex are added when missing.
               Zones must be siblings (no zone inside another), and must not
               be under a name libunbound answers by itself: test., invalid.,
               localhost., onion., home.arpa. (RFC 6761 names: libunbound's
               default local zones would answer NXDOMAIN without asking us).
               Use names under example. instead.
    signed     True (all zones), False (none) or a collection of zone names.
               Each signed zone gets an ECDSA P-256 key (flags 257, signing
               everything) and NSEC.
    bogus      owner names (e.g. "bad.a.example") whose RRSIGs are broken
               after signing, for every type at that name, or (name, type)
               pairs ("bad.a.example", "A") for one RRset. A validating
               resolver with bed.trust_anchor reports these as bogus.
    stripped   True: the signed zones are served without their RRSIG and NSEC
               records (DNSKEYs kept, DS in trust_anchor), as through a
               resolver that strips DNSSEC data: everything validates bogus.
    refused    names (and everything under them) this server answers with
               REFUSED, which a resolver forwarding to it reports as a failed
               lookup (SERVFAIL), not as "no such name".

Attributes and methods:
    server        "127.0.0.1@PORT", for dns_conf.servers (ub_ctx_set_fwd syntax)
    host, port    the same, apart
    trust_anchor  path of a file with the DS records of the signed zones (an
                  empty file when none is signed: then nothing is validated
                  and nothing is bogus), for dns_conf.trust_anchor_file
    ds            {zone: DS line} of the signed zones
    dir           the bed's directory (unbound.conf, zone files, keys, log)
    log_path      unbound's log
    query(name, qtype=1) -> (rcode, answer count): a raw UDP query, for checks
    stop()        terminates unbound (also on leaving a with block); idempotent

The zones cannot change while the bed runs; start another bed for other data.
"""
import base64
import os
import socket
import struct
import subprocess
import time

UNBOUND = "/usr/sbin/unbound"
LDNS_KEYGEN = "/usr/bin/ldns-keygen"
LDNS_SIGNZONE = "/usr/bin/ldns-signzone"

_RESERVED = ("test", "invalid", "localhost", "onion", "home.arpa")


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (unbound binds both),
    from below the ephemeral range (outgoing connections and queries take
    theirs from it, so none can take this one before unbound binds it)."""
    import random
    hi = 32767
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            hi = min(hi, int(f.read().split()[0]) - 1)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(2000):
        port = random.randint(10000, hi)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def _norm(name):
    return name.rstrip(".").lower()


def _wire_name(name):
    out = b""
    for label in _norm(name).split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


class DnsBed:
    def __init__(self, tmp_path, zones, signed=True, bogus=(), refused=(), stripped=False):
        self.refused = [_norm(n) for n in refused]
        self.dir = os.path.join(str(tmp_path), "dnsbed")
        os.makedirs(self.dir, exist_ok=True)
        self.host = "127.0.0.1"
        self.log_path = os.path.join(self.dir, "unbound.log")
        self.trust_anchor = os.path.join(self.dir, "trust-anchor.ds")
        self.ds = {}
        self.proc = None
        self._log = None
        if signed is True:
            signed = set(zones)
        elif not signed:
            signed = set()
        signed = {_norm(z) for z in signed}
        zones = {_norm(z): list(lines) for z, lines in zones.items()}
        for z in zones:
            if z == "" or any(z == r or z.endswith("." + r) for r in _RESERVED):
                raise ValueError(f"zone {z!r}: libunbound answers this name itself")
        for z in signed:
            if z not in zones:
                raise ValueError(f"signed zone {z!r} is not among the zones")
        broken = [(_norm(b), None) if isinstance(b, str) else (_norm(b[0]), b[1].upper())
                  for b in bogus]

        files = {}
        for z, lines in zones.items():
            path = os.path.join(self.dir, z + ".zone")
            self._write_zone(path, z, lines)
            if z in signed:
                path = self._sign(z, path, [b for b in broken if self._in_zone(b[0], z)])
                if stripped:
                    self._strip(path)
            files[z] = path
        with open(self.trust_anchor, "w") as f:
            for z in sorted(self.ds):
                f.write(self.ds[z] + "\n")
        self._start(files)

    # -- zone files --------------------------------------------------------

    @staticmethod
    def _in_zone(name, zone):
        return name == zone or name.endswith("." + zone)

    @staticmethod
    def _write_zone(path, zone, lines):
        has_soa = has_ns = False
        for line in lines:
            f = line.split(";", 1)[0].split()
            if not f:
                continue
            owner = f[0]
            rtype = next((x.upper() for x in f[1:] if x.upper() in ("SOA", "NS")), None)
            if owner in ("@", zone + ".") or _norm(owner) == zone:
                has_soa |= rtype == "SOA"
                has_ns |= rtype == "NS"
        with open(path, "w") as f:
            f.write(f"$ORIGIN {zone}.\n$TTL 60\n")
            if not has_soa:
                f.write(f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n")
            if not has_ns:
                f.write(f"@ IN NS ns.{zone}.\n")
            for line in lines:
                f.write(line + "\n")

    def _sign(self, zone, path, broken):
        keydir = os.path.join(self.dir, "keys-" + zone)
        os.makedirs(keydir, exist_ok=True)
        r = subprocess.run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", "-k", zone + "."],
                           cwd=keydir, capture_output=True, text=True, check=True)
        base = r.stdout.strip().splitlines()[-1]
        with open(os.path.join(keydir, base + ".ds")) as f:
            self.ds[zone] = f.read().strip()
        out = path + ".signed"
        # Inception an hour back: no trouble with a clock that moves a little.
        inception = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 3600))
        subprocess.run([LDNS_SIGNZONE, "-i", inception, "-o", zone + ".", "-f", out, path,
                        os.path.join(keydir, base)],
                       cwd=keydir, capture_output=True, text=True, check=True)
        if broken:
            self._break(out, broken)
        return out

    @staticmethod
    def _strip(path):
        """Drops the signatures and denial records, keeping the DNSKEYs: what
        a resolver that strips DNSSEC data hands on."""
        with open(path) as f:
            lines = [x for x in f if not (len(x.split()) > 3 and x.split()[3].upper() in
                                          ("RRSIG", "NSEC", "NSEC3", "NSEC3PARAM"))]
        with open(path, "w") as f:
            f.writelines(lines)

    @staticmethod
    def _break(path, broken):
        """Flips a bit in the signature of the RRSIGs named in broken."""
        hit = set()
        lines = []
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 13 and fields[3] == "RRSIG":
                    owner, covered = _norm(fields[0]), fields[4].upper()
                    for b in broken:
                        if b[0] == owner and (b[1] is None or b[1] == covered):
                            sig = bytearray(base64.b64decode("".join(fields[12:])))
                            sig[len(sig) // 2] ^= 0x01
                            fields = fields[:12] + [base64.b64encode(bytes(sig)).decode()]
                            line = "\t".join(fields) + "\n"
                            hit.add(b)
                            break
                lines.append(line)
        missing = [b for b in broken if b not in hit]
        if missing:
            raise ValueError(f"bogus names without RRSIGs in {path}: {missing}")
        with open(path, "w") as f:
            f.writelines(lines)

    # -- the daemon --------------------------------------------------------

    def _conf(self, files):
        conf = f"""# written by tests/integration/dns_testbed.py
server:
  interface: {self.host}
  port: {self.port}
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  do-daemonize: no
  use-syslog: no
  logfile: ""
  log-time-ascii: yes
  chroot: ""
  username: ""
  directory: "{self.dir}"
  pidfile: ""
  verbosity: 1
  num-threads: 1
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  # The resolver under test validates; this server only serves the zones.
  module-config: "iterator"
  # Every other name is NXDOMAIN at once, never a query to the Internet.
  local-zone: "." static
"""
        for z in files:
            conf += f'  local-zone: "{z}." transparent\n'
        for n in self.refused:
            conf += f'  local-zone: "{n}." always_refuse\n'
        for z, path in files.items():
            conf += f"""auth-zone:
  name: "{z}."
  zonefile: "{path}"
  for-downstream: yes
  for-upstream: yes
  fallback-enabled: no
"""
        conf += "remote-control:\n  control-enable: no\n"
        return conf

    def _start(self, files):
        conf_path = os.path.join(self.dir, "unbound.conf")
        last = ""
        for _ in range(5):
            self.port = _free_port()
            self.server = f"{self.host}@{self.port}"
            with open(conf_path, "w") as f:
                f.write(self._conf(files))
            self._log = open(self.log_path, "a")
            self.proc = subprocess.Popen([UNBOUND, "-d", "-c", conf_path], stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.query(next(iter(files)) if files else "ready.invalid", 6, timeout=0.2)
                    return
                except OSError:
                    time.sleep(0.05)
            self.stop()
            with open(self.log_path) as f:
                last = f.read()[-2000:]
            if "bind" not in last:
                break
        raise RuntimeError(f"unbound did not start:\n{last}")

    def query(self, name, qtype=1, timeout=2.0):
        """One UDP query with RD and DO set; returns (rcode, ancount)."""
        qid = int.from_bytes(os.urandom(2), "big")
        msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1) + _wire_name(name) + \
            struct.pack(">HH", qtype, 1) + b"\0" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(msg, (self.host, self.port))
            while True:
                data, _ = s.recvfrom(65535)
                if len(data) >= 12 and int.from_bytes(data[:2], "big") == qid:
                    flags, _, an = struct.unpack(">HHH", data[2:8])
                    return flags & 0xF, an

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        self.stop()
