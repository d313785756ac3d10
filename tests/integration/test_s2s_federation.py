"""Federation between two Parley servers (RFC 6120 server-to-server, XEP-0178
SASL EXTERNAL, XEP-0220 dialback, XEP-0368 direct TLS), each serving its own
domain, found through DNS SRV records served by a local unbound
(dns_testbed.DnsBed). Raw XML clients on both sides check that messages,
presence subscriptions and IQs cross in both directions, and that every
authentication decision is the one policy asks for."""
import os
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import PARLEYCTL, PARLEYD, PASSWORD, free_port
from dns_testbed import DnsBed
from test_rfc6121_roster import C, Raw
from test_rfc6121_subscription import online

STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class CA:
    """A test certificate authority issuing server certificates with the
    identities XMPP looks for (DNS-ID, and the SRV-ID _xmpp-server)."""

    def __init__(self, d):
        self.dir = d
        self.cert = os.path.join(d, "ca.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
                "-subj", "/CN=Parley test CA", cwd=d)

    def issue(self, domain, out_dir, days=30, names=None, expired=False):
        names = names or [domain]
        key = os.path.join(out_dir, domain + ".key")
        crt = os.path.join(out_dir, domain + ".crt")
        csr = os.path.join(out_dir, domain + ".csr")
        ext = os.path.join(out_dir, domain + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={names[0]}", cwd=out_dir)
        args = ["x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey",
                os.path.join(self.dir, "ca.key"), "-CAcreateserial", "-out", crt,
                "-extfile", ext]
        if expired:
            # Valid for no time at all: not after == now, then we wait.
            args += ["-days", "0"]
        else:
            args += ["-days", str(days)]
        openssl(*args, cwd=out_dir)
        # Key and certificate as parleyd wants them (the chain: leaf, CA).
        with open(crt, "a") as f, open(self.cert) as ca:
            f.write(ca.read())
        return crt, key


class FedServer:
    """A parleyd serving `domain` with federation on (its own ports)."""

    def __init__(self, root, domain, dns, cafile=None, extra="", self_signed=True):
        self.domain = domain
        self.dir = os.path.join(root, domain)
        os.makedirs(self.dir, exist_ok=True)
        self.c2s = free_port()
        self.c2s_tls = free_port()
        self.s2s = free_port()
        self.s2s_tls = free_port()
        self.conf = os.path.join(self.dir, "parley.conf")
        self.log_path = os.path.join(self.dir, "parleyd.log")
        self.cert = os.path.join(self.dir, domain + ".crt")
        self.key = os.path.join(self.dir, domain + ".key")
        self.cafile = None
        if self_signed:
            subprocess.run([PARLEYCTL, "cert", "generate", domain, "--dir", self.dir],
                           check=True, capture_output=True)
        lines = [f"log_level: debug", "workers: 2", 'interfaces: ["127.0.0.1"]',
                 f"c2s_port: {self.c2s}", f"c2s_tls_port: {self.c2s_tls}",
                 f"s2s_port: {self.s2s}", f"s2s_tls_port: {self.s2s_tls}", "http_port: 0",
                 "scram_iterations: 4096", f'dns_servers: ["{dns.server}"]',
                 f"dns_trust_anchor: {dns.trust_anchor}"]
        if cafile:
            lines.append(f"s2s_ca_file: {cafile}")
        self.base = "\n".join(lines) + "\n"
        self.extra = extra
        self.proc = None

    def write(self):
        with open(self.conf, "w") as f:
            f.write(self.base + self.extra + f"\nhosts:\n  - domain: {self.domain}\n"
                    f"    certificate: {self.domain}.crt\n    key: {self.domain}.key\n")

    def adduser(self, user):
        self.write()
        subprocess.run([PARLEYCTL, "--config", self.conf, "adduser", f"{user}@{self.domain}"],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)

    def records(self, host_ip="127.0.0.1", direct=True, starttls=True):
        """SRV and A records for this server in its zone."""
        d = self.domain
        r = [f"{d}. 60 IN A {host_ip}"]
        if starttls:
            r.append(f"_xmpp-server._tcp.{d}. 60 IN SRV 10 5 {self.s2s} {d}.")
        if direct:
            r.append(f"_xmpps-server._tcp.{d}. 60 IN SRV 10 5 {self.s2s_tls} {d}.")
        return r

    def start(self):
        self.write()
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PARLEYD, "--config", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        import socket
        end = time.time() + 15
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("parleyd exited:\n" + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.c2s), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("parleyd did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("parleyd did not stop\n" + self.log()[-3000:])
        self.logf.close()
        rc = self.proc.returncode
        self.proc = None
        log = self.log()
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
        return rc


@pytest.fixture
def fed(tmp_path):
    """Two servers, a.example and b.example, and a DNS bed; torn down after."""
    made = []

    def make(a_extra="", b_extra="", ca=False, a_direct=True, b_direct=True, a_starttls=True,
             b_starttls=True, signed=False, b_cert=None, b_tlsa=None, refused=(),
             stripped=False):
        root = str(tmp_path)
        # Ports first, so that the records can name them.
        holder = {}

        class Late:
            server = trust_anchor = None

        authority = CA(root) if ca else None
        a = FedServer(root, "a.example", Late, self_signed=not ca)
        b = FedServer(root, "b.example", Late, self_signed=not ca)
        if ca:
            authority.issue("a.example", a.dir)
            authority.issue("b.example", b.dir)
        if b_cert:
            b_cert(authority, b)
        zone = a.records(direct=a_direct, starttls=a_starttls) + \
            b.records(direct=b_direct, starttls=b_starttls)
        if b_tlsa:
            zone += b_tlsa(b)
        dns = DnsBed(root, zones={"example": zone}, signed=signed or stripped, refused=refused,
                     stripped=stripped)
        holder["dns"] = dns
        for s, extra in ((a, a_extra), (b, b_extra)):
            s.base = s.base.replace("dns_servers: [\"None\"]", f'dns_servers: ["{dns.server}"]')
            s.base = s.base.replace("dns_trust_anchor: None",
                                    f"dns_trust_anchor: {dns.trust_anchor}")
            if ca:
                s.base += f"s2s_ca_file: {authority.cert}\n"
                s.cafile = authority.cert
            s.extra = extra
            s.adduser("alice" if s is a else "bob")
            s.adduser("carol" if s is a else "dave")
            s.start()
        made.extend([a, b, dns])
        return a, b

    yield make
    errors = []
    for x in made:
        if isinstance(x, FedServer):
            rc = x.stop()
            if rc != 0:
                errors.append(f"{x.domain} exited {rc}\n{x.log()[-3000:]}")
        else:
            x.stop()
    assert not errors, "\n".join(errors)


def chat(a, b):
    """alice@a and bob@b exchange messages both ways."""
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    alice.send("<message to='bob@b.example/raw' type='chat' id='m1'><body>hi bob</body></message>")
    m = bob.expect(lambda e: e.tag == C + "message", timeout=20, what="message from a.example")
    assert m.get("from") == "alice@a.example/raw"
    assert m.find(C + "body").text == "hi bob"
    bob.send("<message to='alice@a.example/raw' type='chat' id='m2'><body>hi alice</body>"
             "</message>")
    m = alice.expect(lambda e: e.tag == C + "message", timeout=20, what="message from b.example")
    assert m.get("from") == "bob@b.example/raw"
    return alice, bob


def test_dialback_over_tls_both_ways(fed):
    """Self-signed certificates: SASL EXTERNAL is not possible, dialback
    over TLS authenticates both directions (the default policy)."""
    a, b = fed()
    alice, bob = chat(a, b)
    for s in (a, b):
        log = s.log()
        assert "authenticated by dialback" in log, log[-3000:]
        assert "ready (dialback)" in log
    # IQ both ways: alice pings b.example itself, bob asks a.example's version.
    alice.send("<iq type='get' id='p1' to='b.example'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = alice.expect(lambda e: e.get("id") == "p1", timeout=10, what="ping answer")
    assert r.get("type") == "result" and r.get("from") == "b.example"
    bob.send("<iq type='get' id='v1' to='a.example'><query xmlns='jabber:iq:version'/></iq>")
    r = bob.expect(lambda e: e.get("id") == "v1", timeout=10, what="version answer")
    assert r.get("type") == "result", ET.tostring(r)


def test_presence_subscription_across_servers(fed):
    a, b = fed()
    alice = online(a, "alice")
    bob = online(b, "bob")
    alice.send("<presence to='bob@b.example' type='subscribe'/>")
    bob.expect_presence("alice@a.example", "subscribe", timeout=20)
    bob.send("<presence to='alice@a.example' type='subscribed'/>")
    alice.expect_presence("bob@b.example", "subscribed", timeout=20)
    # Bob's current presence follows the approval (RFC 6121 §3.1.5).
    alice.expect(lambda e: e.tag == C + "presence" and e.get("from") == "bob@b.example/raw"
                 and e.get("type") is None, timeout=20, what="bob's presence")
    roster = alice.roster_get()
    item = roster.find("{jabber:iq:roster}query/{jabber:iq:roster}item[@jid='bob@b.example']")
    assert item is not None and item.get("subscription") == "to", ET.tostring(roster)


TRANSPORTS = {"starttls": dict(a_direct=False, b_direct=False),
              "direct": dict(a_starttls=False, b_starttls=False)}


def check_transport(log, transport):
    assert ("(direct TLS)" in log) == (transport == "direct"), log[-3000:]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_sasl_external_with_ca_certificates(fed, transport):
    """a connects and authenticates with its certificate; b's replies take
    the same stream (XEP-0288), so each server's log shows one side."""
    a, b = fed(ca=True, **TRANSPORTS[transport])
    chat(a, b)
    check_transport(a.log(), transport)
    assert "a.example to b.example: authenticated by SASL EXTERNAL" in b.log(), b.log()[-3000:]
    assert "s2s to b.example from a.example: ready (SASL EXTERNAL)" in a.log(), a.log()[-3000:]


def test_direct_tls_only(fed):
    """Only _xmpps-server records (XEP-0368): TLS from the first byte."""
    a, b = fed(a_starttls=False, b_starttls=False)
    chat(a, b)
    assert "(direct TLS)" in a.log() + b.log()


def test_starttls_only(fed):
    a, b = fed(a_direct=False, b_direct=False)
    chat(a, b)


def test_secure_domain_refuses_dialback(fed):
    """b.example must show a valid certificate; its is self-signed, so a's
    messages to it bounce and its dialback is refused."""
    a, b = fed(a_extra='s2s_secure_domains: ["b.example"]\n')
    alice = Raw(a, "alice")
    alice.send("<message to='bob@b.example' type='chat' id='x1'><body>no</body></message>")
    e = alice.expect(lambda e: e.get("id") == "x1", timeout=30, what="bounce")
    assert e.get("type") == "error"
    assert e.find(C + "error/" + STANZAS + "remote-server-not-found") is not None, \
        ET.tostring(e)
    assert "dialback not allowed" in a.log()
    bob = Raw(b, "bob")
    bob.send("<message to='alice@a.example' type='chat' id='x2'><body>no</body></message>")
    e = bob.expect(lambda e: e.get("id") == "x2", timeout=30, what="bounce")
    assert e.get("type") == "error"
    assert "dialback refused by policy" in a.log()


def test_no_federation_without_tls(fed):
    """Dialback off and no valid certificate: nothing authenticates."""
    a, b = fed(a_extra="s2s_dialback: false\n")
    alice = Raw(a, "alice")
    alice.send("<message to='bob@b.example' type='chat' id='x1'><body>no</body></message>")
    e = alice.expect(lambda e: e.get("id") == "x1", timeout=30, what="bounce")
    assert e.get("type") == "error"


def test_unknown_domain_bounces(fed):
    a, b = fed()
    alice = Raw(a, "alice")
    alice.send("<message to='x@nowhere.example' type='chat' id='n1'><body>?</body></message>")
    e = alice.expect(lambda e: e.get("id") == "n1", timeout=30, what="bounce")
    assert e.get("type") == "error"
    assert e.find(C + "error/" + STANZAS + "remote-server-not-found") is not None, \
        ET.tostring(e)


S2S_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
              "from='{frm}' to='{to}' version='1.0'>")


def fake_peer(server, frm, tls=True):
    """A raw incoming s2s stream to server claiming to be `frm`."""
    import socket
    import ssl
    from conftest import recv_until
    s = socket.create_connection(("127.0.0.1", server.s2s), timeout=10)
    s.sendall(S2S_HEADER.format(frm=frm, to=server.domain).encode())
    feats = recv_until(s, b"</stream:features>")
    assert b"<required/>" in feats, feats  # STARTTLS is mandatory
    if not tls:
        return s, feats
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in recv_until(s, b"/>")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s, server_hostname=server.domain)
    t.sendall(S2S_HEADER.format(frm=frm, to=server.domain).encode())
    feats = recv_until(t, b"</stream:features>")
    return t, feats


def peer_with_cert(a, b):
    """A raw incoming s2s stream to a claiming b.example, showing b's own
    certificate after STARTTLS; returns the TLS socket and the features."""
    import socket
    import ssl
    from conftest import recv_until
    s = socket.create_connection(("127.0.0.1", a.s2s), timeout=10)
    s.sendall(S2S_HEADER.format(frm="b.example", to="a.example").encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    recv_until(s, b"/>")
    ctx = ssl.create_default_context(cafile=b.cafile)
    ctx.check_hostname = False
    ctx.load_cert_chain(b.cert, b.key)
    t = ctx.wrap_socket(s, server_hostname="a.example")
    t.sendall(S2S_HEADER.format(frm="b.example", to="a.example").encode())
    return t, recv_until(t, b"</stream:features>")


def test_forged_dialback_key_is_refused(fed):
    """Someone claims to be b.example with a made-up key: a.example asks
    b.example's authoritative server, which says invalid."""
    from conftest import recv_until
    a, b = fed()
    t, feats = fake_peer(a, "b.example")
    assert b"urn:xmpp:features:dialback" in feats
    assert b"EXTERNAL" not in feats  # no certificate for b.example
    t.sendall(b"<db:result from='b.example' to='a.example'>" + b"0" * 64 + b"</db:result>")
    # XEP-0220 §2.2.1: invalid, and the stream ends.
    got = recv_until(t, b"</stream:stream>", timeout=20)
    assert b"type='invalid'" in got and b"</stream:stream>" in got, got
    assert "dialback key invalid" in a.log()


def test_stanza_from_unauthenticated_domain_is_refused(fed):
    """Authenticated as b.example (real dialback), a stanza from c.example
    on the same stream ends it with invalid-from (RFC 6120 §4.9.3.9)."""
    from conftest import recv_until
    a, b = fed()
    # Let b.example authenticate to a.example for real first.
    chat(a, b)
    t, feats = fake_peer(a, "evil.example")
    t.sendall(b"<message from='mallory@b.example' to='alice@a.example'><body>x</body>"
              b"</message>")
    got = recv_until(t, b"</stream:stream>", timeout=10)
    assert b"<invalid-from" in got, got


def test_no_dialback_before_tls(fed):
    from conftest import recv_until
    a, b = fed()
    s, feats = fake_peer(a, "b.example", tls=False)
    assert b"urn:xmpp:features:dialback" not in feats  # only STARTTLS in the clear
    s.sendall(b"<db:result from='b.example' to='a.example'>" + b"0" * 64 + b"</db:result>")
    got = recv_until(s, b"</stream:stream>", timeout=10)
    assert b"<policy-violation" in got, got


def test_peer_without_tls_is_refused(tmp_path):
    """A peer whose stream offers no STARTTLS: refused, with a log line
    that says so, and the sender gets its message back."""
    import socket
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    stop = threading.Event()

    def plain_server():
        lsock.settimeout(0.5)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except socket.timeout:
                continue
            c.settimeout(5)
            try:
                c.recv(4096)
                c.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                          b"xmlns:stream='http://etherx.jabber.org/streams' id='x1' "
                          b"from='plain.example' version='1.0'><stream:features>"
                          b"<dialback xmlns='urn:xmpp:features:dialback'/></stream:features>")
                c.recv(4096)
            except OSError:
                pass
            c.close()

    th = threading.Thread(target=plain_server)
    th.start()
    dns = DnsBed(str(tmp_path), zones={"example": [
        f"_xmpp-server._tcp.plain.example. 60 IN SRV 0 5 {port} plain.example.",
        "plain.example. 60 IN A 127.0.0.1"]})
    a = FedServer(str(tmp_path), "a.example", dns)
    try:
        a.adduser("alice")
        a.start()
        alice = Raw(a, "alice")
        alice.send("<message to='x@plain.example' type='chat' id='p1'><body>?</body></message>")
        e = alice.expect(lambda e: e.get("id") == "p1", timeout=30, what="bounce")
        assert e.get("type") == "error", ET.tostring(e)
        assert "offers no TLS; refused" in a.log()
    finally:
        stop.set()
        th.join()
        lsock.close()
        assert a.stop() == 0
        dns.stop()


def spki_sha256(cert):
    """The TLSA "3 1 1" association data of a certificate: SHA-256 of its
    SubjectPublicKeyInfo, hex."""
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    import hashlib
    return hashlib.sha256(der).hexdigest()


def tlsa_for(data_of):
    return lambda b: [f"_{port}._tcp.b.example. 60 IN TLSA 3 1 1 {data_of(b)}"
                      for port in (b.s2s, b.s2s_tls)]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_dane_authenticates_a_self_signed_peer(fed, transport):
    """RFC 7673: b.example's SRV and TLSA records are DNSSEC-signed and pin
    its self-signed certificate (DANE-EE). a.example requires a certificate
    or DANE from b.example (s2s_secure_domains), and gets DANE."""
    a, b = fed(signed=True, a_extra='s2s_secure_domains: ["b.example"]\n',
               b_tlsa=tlsa_for(lambda b: spki_sha256(b.cert)), **TRANSPORTS[transport])
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    alice.send("<message to='bob@b.example/raw' type='chat'><body>pinned</body></message>")
    m = bob.expect(lambda e: e.tag == C + "message", timeout=20, what="message over DANE")
    assert m.find(C + "body").text == "pinned"
    log = a.log()
    assert "DANE applies" in log and "DANE-EE matched" in log, log[-3000:]
    check_transport(log, transport)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_dane_authenticates_an_incoming_self_signed_peer(fed, transport):
    """The other direction: b.example connects to a.example with its
    self-signed certificate. a.example finds it in the TLSA records of
    b.example's servers (signed SRV, then signed TLSA), offers SASL
    EXTERNAL, and b.example authenticates with it; a.example would refuse
    dialback from b.example (s2s_secure_domains)."""
    a, b = fed(signed=True, a_extra='s2s_secure_domains: ["b.example"]\n',
               b_tlsa=tlsa_for(lambda b: spki_sha256(b.cert)), **TRANSPORTS[transport])
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    bob.send("<message to='alice@a.example/raw' type='chat'><body>in</body></message>")
    m = alice.expect(lambda e: e.tag == C + "message", timeout=20, what="message over DANE")
    assert m.find(C + "body").text == "in"
    log = a.log()
    assert "s2s from b.example: certificate valid (DANE-EE matched, TLSA 3 1 1" in log, \
        log[-3000:]
    assert "b.example to a.example: authenticated by SASL EXTERNAL" in log, log[-3000:]
    assert "dialback refused" not in log
    check_transport(log, transport)


def test_dane_mismatch_is_refused(fed):
    """The TLSA record names another key: the link is refused (no
    dialback fallback), and the sender gets its message back."""
    a, b = fed(signed=True, b_tlsa=tlsa_for(lambda b: "00" * 32))
    alice = Raw(a, "alice")
    alice.send("<message to='bob@b.example' type='chat' id='d1'><body>?</body></message>")
    e = alice.expect(lambda e: e.get("id") == "d1", timeout=30, what="bounce")
    assert e.get("type") == "error", ET.tostring(e)
    log = a.log()
    assert "does not match its DNSSEC-signed TLSA records" in log, log[-3000:]
    assert "ready (" not in log


def test_dane_mismatch_refuses_an_incoming_peer(fed):
    """b.example's TLSA records name another key: its certificate does not
    authenticate it on a.example, which requires certificate or DANE for
    b.example, so bob's message comes back."""
    a, b = fed(signed=True, a_extra='s2s_secure_domains: ["b.example"]\n',
               b_tlsa=tlsa_for(lambda b: "00" * 32))
    bob = Raw(b, "bob")
    bob.send("<message to='alice@a.example' type='chat' id='d2'><body>?</body></message>")
    e = bob.expect(lambda e: e.get("id") == "d2", timeout=30, what="bounce")
    assert e.get("type") == "error", ET.tostring(e)
    log = a.log()
    assert ("s2s from b.example: certificate not accepted: certificate does not match the "
            "TLSA records (DNSSEC-signed TLSA records)") in log, log[-3000:]
    assert "b.example to a.example: authenticated" not in log


def second_ca_cert(authority, b):
    """b.example's certificate from a CA that a.example does not trust."""
    other = os.path.join(b.dir, "other-ca")
    os.makedirs(other, exist_ok=True)
    CA(other).issue("b.example", b.dir)
    b.c2s_unverified = True


def expired_cert(authority, b):
    authority.issue("b.example", b.dir, expired=True)
    b.c2s_unverified = True
    time.sleep(1.5)  # not after == issuance: past now


def wrong_name_cert(authority, b):
    authority.issue("b.example", b.dir, names=["c.example"])
    b.c2s_unverified = True


BAD_CERTS = {
    "wrong-name": (wrong_name_cert, "c.example"),
    "expired": (expired_cert, "certificate has expired"),
    "untrusted-ca": (second_ca_cert, "self-signed certificate in certificate chain"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CERTS))
def test_bad_certificate_fails_sasl_external(fed, kind):
    """XEP-0178 with a CA-issued certificate that is wrong for b.example in
    one way. a.example requires certificate authentication of b.example:
    it offers b.example no EXTERNAL, refuses its dialback, and refuses to
    send to it; each decision is logged with the certificate's fault."""
    make_cert, reason = BAD_CERTS[kind]
    a, b = fed(ca=True, b_cert=make_cert, a_extra='s2s_secure_domains: ["b.example"]\n')
    alice = Raw(a, "alice")
    alice.send("<message to='bob@b.example' type='chat' id='o1'><body>?</body></message>")
    e = alice.expect(lambda e: e.get("id") == "o1", timeout=30, what="bounce to alice")
    assert e.get("type") == "error", ET.tostring(e)
    bob = Raw(b, "bob")
    bob.send("<message to='alice@a.example' type='chat' id='i1'><body>?</body></message>")
    e = bob.expect(lambda e: e.get("id") == "i1", timeout=30, what="bounce to bob")
    assert e.get("type") == "error", ET.tostring(e)
    log = a.log()
    for direction in ("to", "from"):
        line = next((x for x in log.splitlines()
                     if f"s2s {direction} b.example: certificate not accepted:" in x), None)
        assert line and reason in line, (direction, log[-4000:])
    assert "dialback refused by policy" in log, log[-4000:]
    assert "authenticated by SASL EXTERNAL" not in log
    assert "b.example to a.example: authenticated" not in log
    # b.example, which trusts the CA and a.example's certificate, did
    # offer and use EXTERNAL towards a.example (a's side is fine).
    assert "s2s to a.example: certificate valid" in b.log(), b.log()[-3000:]


def test_bad_certificate_falls_back_to_dialback(fed):
    """Default policy: a certificate with the wrong name is not accepted,
    and dialback over TLS authenticates instead."""
    a, b = fed(ca=True, b_cert=wrong_name_cert)
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    bob.send("<message to='alice@a.example/raw' type='chat' id='f1'><body>hi</body></message>")
    m = alice.expect(lambda e: e.get("id") == "f1", timeout=20, what="message from b.example")
    assert m.find(C + "body").text == "hi"
    log = a.log()
    assert "s2s from b.example: certificate not accepted" in log, log[-3000:]
    assert "b.example to a.example: authenticated by dialback" in log, log[-3000:]


def test_failover_to_the_next_srv_target(fed):
    """b.example's first SRV target (direct TLS, priority 10) refuses
    connections; the link goes on to the next one (priority 20) at once,
    without retrying the dead one (RFC 2782 order)."""
    dead = free_port()  # nothing listens there

    def records(b):
        return [f"_xmpps-server._tcp.b.example. 60 IN SRV 10 5 {dead} b.example.",
                f"_xmpp-server._tcp.b.example. 60 IN SRV 20 5 {b.s2s} b.example."]
    a, b = fed(b_direct=False, b_starttls=False, b_tlsa=records)
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    alice.send("<message to='bob@b.example/raw' type='chat'><body>second</body></message>")
    m = bob.expect(lambda e: e.tag == C + "message", timeout=20, what="message via target 2")
    assert m.find(C + "body").text == "second"
    log = a.log()
    assert log.count("connect failed") <= 2, log[-3000:]


def test_second_sasl_after_restart_is_refused(fed):
    """A peer that authenticated with EXTERNAL may not restart the stream
    naming another domain and authenticate again (RFC 6120 §6.4.6): the
    certificate verdict belongs to the domain it was made for."""
    from conftest import recv_until
    a, b = fed(ca=True)
    # A certificate valid for b.example (same CA), presented by a raw peer.
    t, feats = peer_with_cert(a, b)
    assert b"EXTERNAL" in feats, feats
    t.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert b"<success" in recv_until(t, b"/>")
    t.sendall(S2S_HEADER.format(frm="victim.example", to="a.example").encode())
    feats = recv_until(t, b"</stream:features>")
    assert b"EXTERNAL" not in feats, feats  # not valid for victim.example
    t.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    got = recv_until(t, b"</stream:stream>", timeout=10)
    assert b"<success" not in got, got
    assert "authenticated by SASL EXTERNAL (certificate) (from 127.0.0.1)" in a.log()
    assert "victim.example to a.example: authenticated" not in a.log()


def test_bidirectional_streams_between_parleys(fed):
    """XEP-0288 between two Parleys authenticating with certificates: a
    connects to b, asks for bidi, and b's reply comes back over a's stream;
    neither server accepts a second connection."""
    a, b = fed(ca=True)
    chat(a, b)
    assert "s2s to a.example from b.example: ready (the peer's bidirectional stream" in \
        b.log(), b.log()[-3000:]
    assert "(on our stream, XEP-0288)" in a.log(), a.log()[-3000:]
    assert "s2s connection from" not in a.log()
    assert "s2s to a.example: connected" not in b.log()


def test_bidirectional_stream_gone_falls_back_to_own_connection(fed):
    """A raw peer claiming b.example (with b's certificate) asks for bidi
    and authenticates with EXTERNAL; a's reply goes over that stream. Once
    it closes, a's next stanza opens a connection of its own to b."""
    from conftest import recv_until
    a, b = fed(ca=True)
    alice = Raw(a, "alice")
    alice.presence()
    t, feats = peer_with_cert(a, b)
    assert b"urn:xmpp:features:bidi" in feats, feats
    t.sendall(b"<bidi xmlns='urn:xmpp:bidi'/>"
              b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert b"<success" in recv_until(t, b"/>")
    t.sendall(S2S_HEADER.format(frm="b.example", to="a.example").encode())
    recv_until(t, b"</stream:features>")
    t.sendall(b"<message from='bob@b.example/x' to='alice@a.example/raw' type='chat' id='q1'>"
              b"<body>over bidi</body></message>")
    m = alice.expect(lambda e: e.get("id") == "q1", timeout=10, what="message from the raw peer")
    assert m.find(C + "body").text == "over bidi"
    # The owner worker may learn of the stream a moment after the message
    # was routed; wait for the log line before replying.
    end = time.time() + 10
    while "ready (the peer's bidirectional stream" not in a.log() and time.time() < end:
        time.sleep(0.05)
    alice.send("<message to='bob@b.example/x' type='chat' id='r1'><body>reply</body></message>")
    got = recv_until(t, b"</message>", timeout=10)
    assert b"reply" in got and b"from='alice@a.example/raw'" in got.replace(b'"', b"'"), got
    t.sendall(b"</stream:stream>")
    t.close()
    time.sleep(0.5)
    bob = Raw(b, "bob")
    alice.send("<message to='bob@b.example/raw' type='chat' id='r2'><body>own</body></message>")
    m = bob.expect(lambda e: e.get("id") == "r2", timeout=20, what="message over a's own link")
    assert m.find(C + "body").text == "own"
    assert "s2s to b.example: connected" in a.log(), a.log()[-3000:]


def test_srv_dot_target_means_no_service(fed):
    """RFC 2782 / RFC 6120 §3.2.1: _xmpp-server with the target "." says
    b.example has no XMPP service: no fallback to its address on 5269."""
    def records(b):
        return ["_xmpp-server._tcp.b.example. 60 IN SRV 0 0 0 ."]
    a, b = fed(b_direct=False, b_starttls=False, b_tlsa=records)
    alice = Raw(a, "alice")
    alice.send("<message to='bob@b.example' type='chat' id='s1'><body>?</body></message>")
    e = alice.expect(lambda e: e.get("id") == "s1", timeout=30, what="bounce")
    assert e.find(C + "error/" + STANZAS + "remote-server-not-found") is not None, \
        ET.tostring(e)
    log = a.log()
    assert 'offers no XMPP service (SRV ".")' in log, log[-3000:]
    assert "s2s to b.example: connected" not in log


def test_failed_srv_lookup_falls_back_to_the_domain(fed):
    """RFC 6120 §3.2.2: both SRV lookups fail (the DNS server refuses them,
    which the resolver reports as SERVFAIL): a.example tries b.example's own
    address on the default port, where b listens."""
    import socket
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 5269))
    except OSError:
        pytest.skip("port 5269 is in use on this machine")
    finally:
        probe.close()

    def on_5269(authority, b):
        b.base = b.base.replace(f"s2s_port: {b.s2s}\n", "s2s_port: 5269\n")
        b.s2s = 5269
    a, b = fed(b_cert=on_5269, refused=["_xmpp-server._tcp.b.example",
                                        "_xmpps-server._tcp.b.example"])
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    alice.send("<message to='bob@b.example/raw' type='chat'><body>fallback</body></message>")
    m = bob.expect(lambda e: e.tag == C + "message", timeout=30, what="message via 5269")
    assert m.find(C + "body").text == "fallback"
    log = a.log()
    assert "SRV lookup failed; trying the domain itself on 5269" in log, log[-3000:]


def test_resolver_that_strips_dnssec(fed):
    """A resolver that passes no DNSSEC data makes every answer bogus (here:
    the zone under the trust anchor is served without its signatures, its
    DNSKEYs kept). Each server's probe of the anchor's DNSKEY finds them
    bogus, asks again without validation and gets them: it warns, and
    resolves without validation, so federation still works (without DANE)."""
    a, b = fed(stripped=True)
    chat(a, b)
    for s in (a, b):
        assert "they strip DNSSEC data. Validation is off" in s.log(), s.log()[-3000:]


def test_dialback_answers_echo_the_names_as_written(fed):
    """XEP-0220 answers carry the domains exactly as the peer wrote them
    (here in other letter cases; the same holds for A-labels), since a
    peer matches its requests by those strings and made its key over
    them; the checks themselves use the normalized names."""
    from conftest import recv_until
    a, b = fed()
    t, feats = fake_peer(a, "b.example")
    t.sendall(b"<db:verify from='B.Example' to='A.EXAMPLE' id='i1'>" + b"0" * 64 +
              b"</db:verify>")
    got = recv_until(t, b"/>", timeout=10).replace(b'"', b"'")
    assert b"from='A.EXAMPLE' to='B.Example' id='i1' type='invalid'" in got, got
    t.sendall(b"<db:result from='B.EXAMPLE' to='a.Example'>" + b"0" * 64 + b"</db:result>")
    got = recv_until(t, b"</stream:stream>", timeout=20).replace(b'"', b"'")
    assert b"from='a.Example' to='B.EXAMPLE' type='invalid'" in got, got


def test_stuck_target_gives_way_to_the_next(fed):
    """b.example's first SRV target accepts TCP connections and then never
    says a word; after its time (10 s) the link moves on to the second
    target instead of spending the whole setup deadline on it."""
    import socket
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    dead = hole.getsockname()[1]

    def records(b):
        return [f"_xmpps-server._tcp.b.example. 60 IN SRV 10 5 {dead} b.example.",
                f"_xmpp-server._tcp.b.example. 60 IN SRV 20 5 {b.s2s} b.example."]
    try:
        a, b = fed(b_direct=False, b_starttls=False, b_tlsa=records)
        alice = Raw(a, "alice")
        bob = Raw(b, "bob")
        alice.send("<message to='bob@b.example/raw' type='chat'><body>later</body></message>")
        m = bob.expect(lambda e: e.tag == C + "message", timeout=25, what="message via target 2")
        assert m.find(C + "body").text == "later"
        assert "no progress with 127.0.0.1 in 10 s; trying the next address" in a.log()
    finally:
        hole.close()


def test_incoming_stream_is_throttled_not_dropped(fed):
    """limits.s2s_bytes_per_second on a.example: b.example's stream brings
    200 KB against a 100 KB burst and 20 KB/s, so reading pauses (TCP
    pushes back) and the rest takes seconds; every message arrives, in
    order."""
    a, b = fed(a_extra="limits:\n  s2s_bytes_per_second: 20k\n  stanza_bytes: 32k\n",
               b_extra="limits:\n  stanzas_per_second: 0\n  bytes_per_second: 0\n")
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    pad = "x" * 5000
    start = time.time()
    for i in range(40):
        bob.send(f"<message to='alice@a.example/raw' type='chat' id='t{i}'>"
                 f"<body>{i} {pad}</body></message>")
    got = []
    for i in range(40):
        m = alice.expect(lambda e: e.tag == C + "message", timeout=30, what=f"message {i}")
        got.append(m.get("id"))
    took = time.time() - start
    assert got == [f"t{i}" for i in range(40)], got
    assert took >= 3.5, took  # (200 KB - 100 KB) / 20 KB/s, less slack
    assert "over limits.s2s_bytes_per_second" in a.log(), a.log()[-3000:]


def test_bidi_waits_for_the_restart_after_sasl(fed):
    """XEP-0288 with SASL EXTERNAL: between <success/> and the peer's new
    stream header nothing of ours may go out (RFC 6120 §6.4.6). A stanza
    for b.example sent in that window takes a's own link; once the stream
    has restarted, it carries what a sends to b.example."""
    import socket
    from conftest import recv_until
    a, b = fed(ca=True)
    t, _ = peer_with_cert(a, b)
    t.sendall(b"<bidi xmlns='urn:xmpp:bidi'/>"
              b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert b"<success" in recv_until(t, b"/>")
    alice = Raw(a, "alice")
    bob = Raw(b, "bob")
    alice.send("<message to='bob@b.example/raw' type='chat' id='e1'><body>early</body></message>")
    t.settimeout(1.5)
    early = b""
    try:
        while True:
            d = t.recv(65536)
            if not d:
                break
            early += d
    except (socket.timeout, TimeoutError):
        pass
    assert b"<message" not in early, early
    m = bob.expect(lambda e: e.get("id") == "e1", timeout=20, what="message over a's own link")
    assert m.find(C + "body").text == "early"


def test_failed_srv_lookup_with_dnssec_does_not_fall_back(fed):
    """With DNSSEC validation on, a failed SRV lookup may be a forged
    SERVFAIL hiding signed SRV and TLSA records (rcodes are not signed):
    the link fails instead of trying the bare domain, which would skip
    DANE."""
    a, b = fed(signed=True, refused=["_xmpp-server._tcp.b.example",
                                     "_xmpps-server._tcp.b.example"])
    alice = Raw(a, "alice")
    alice.send("<message to='bob@b.example' type='chat' id='v1'><body>?</body></message>")
    e = alice.expect(lambda e: e.get("id") == "v1", timeout=30, what="bounce")
    assert e.get("type") == "error", ET.tostring(e)
    log = a.log()
    assert "with DNSSEC validation on, no fallback to its address" in log, log[-3000:]
    assert "trying the domain itself" not in log


def test_dane_mismatch_also_rules_out_dialback(fed):
    """Default policy (dialback allowed), but b.example's signed TLSA
    records rule out the certificate its peer showed: that peer may not
    fall back to dialback either (someone else answers, RFC 7673 §4)."""
    a, b = fed(signed=True, b_tlsa=tlsa_for(lambda b: "00" * 32))
    bob = Raw(b, "bob")
    bob.send("<message to='alice@a.example' type='chat' id='d3'><body>?</body></message>")
    e = bob.expect(lambda e: e.get("id") == "d3", timeout=30, what="bounce")
    assert e.get("type") == "error", ET.tostring(e)
    log = a.log()
    assert "s2s from b.example: dialback refused: its certificate failed DANE" in log, log[-3000:]
    assert "b.example to a.example: authenticated" not in log
