"""Federation with the servers people run today, from Debian: Prosody 0.12
and ejabberd 23.01. Parley serves a.example, the peer p.example or
e.example, each found by the other through SRV records of a local DNS bed
(Prosody through lua-unbound forwarding to it, ejabberd through an Erlang
inetrc). Messages and IQs cross both ways (with Prosody a presence
subscription too), with certificate authentication (SASL EXTERNAL, both
trusting a test CA) and with dialback (each refusing the other's
certificate)."""
import asyncio
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import PARLEYCTL, PASSWORD, free_port
from dns_testbed import DnsBed
from test_rfc6121_roster import C, Raw
from test_s2s_federation import CA, FedServer, spki_sha256
from xmpp_client import Client

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")


class Prosody:
    def __init__(self, root, domain, dns, ca, trust_ca, bidi=False, own_cert=None):
        self.domain = domain
        self.dir = os.path.join(root, "prosody")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.c2s = free_port()
        self.s2s = free_port()
        self.s2s_tls = free_port()
        if own_cert:
            # Self-signed, vouched for by DANE only (TLSA records).
            self.cert, self.key = own_cert
            self.cafile = self.cert
        else:
            self.cert, self.key = ca.issue(domain, self.dir)
            self.cafile = ca.cert
        self.conf = os.path.join(self.dir, "prosody.cfg.lua")
        self.log_path = os.path.join(self.dir, "prosody.log")
        d = self.dir
        trust = f'cafile = "{ca.cert}";' if trust_ca else 'capath = "/nonexistent";'
        with open(self.conf, "w") as f:
            f.write(f"""-- written by tests/integration/test_s2s_interop.py
run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ debug = "{self.log_path}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {self.s2s} }}
s2s_direct_tls_ports = {{ {self.s2s_tls} }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "version";
	"posix"; {'"s2s_bidi"' if bidi else ""} }}
modules_disabled = {{ "offline"; "c2s_limits"; {'' if bidi else '"s2s_bidi"'} }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if trust_ca else "false"}
unbound = {{ resolvconf = false; hoststxt = false; forward = "{dns.server}" }}
ssl = {{ certificate = "{self.cert}"; key = "{self.key}"; {trust} }}
VirtualHost "{domain}"
""")
        self.proc = None

    def adduser(self, user):
        subprocess.run([PROSODYCTL, "--config", self.conf, "register", user, self.domain,
                        PASSWORD], check=True, capture_output=True)

    def start(self):
        self.proc = subprocess.Popen([PROSODY, "-F", "--config", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        end = time.time() + 20
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("prosody exited:\n" + self.log()[-3000:])
            try:
                socket.create_connection(("127.0.0.1", self.c2s), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("prosody did not start:\n" + self.log()[-3000:])

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pinned_cert(root, domain, ports):
    """A self-signed certificate for domain and the TLSA records (DANE-EE,
    SPKI SHA-256) that pin it on each port (RFC 7673: _port._tcp.target):
    ((crt, key), zone lines)."""
    cdir = os.path.join(root, domain + "-cert")
    os.makedirs(cdir, exist_ok=True)
    subprocess.run([PARLEYCTL, "cert", "generate", domain, "--dir", cdir],
                   check=True, capture_output=True)
    own = (os.path.join(cdir, domain + ".crt"), os.path.join(cdir, domain + ".key"))
    return own, [f"_{port}._tcp.{domain}. 60 IN TLSA 3 1 1 {spki_sha256(own[0])}"
                 for port in ports]


@pytest.fixture
def pair(tmp_path):
    """Parley (a.example) and Prosody (p.example) with a DNS bed."""
    assert PROSODY and PROSODYCTL, "prosody is not installed: scripts/deps.sh test"
    made = []

    def make(certs, transport, bidi=False, dane=False):
        root = str(tmp_path)
        ca = CA(root)

        class Late:
            server = trust_anchor = None

        a = FedServer(root, "a.example", Late, self_signed=False)
        ca.issue("a.example", a.dir)
        a.cafile = ca.cert
        # Ports are known now; the bed can name them. Each side announces
        # only the transport under test.
        direct = transport == "direct"
        p_ports = {"s2s": free_port(), "s2s_tls": free_port()}
        zone = a.records(direct=direct, starttls=not direct) + [
            "p.example. 60 IN A 127.0.0.1",
            f"_xmpp-server._tcp.p.example. 60 IN SRV 10 5 {p_ports['s2s']} p.example."
            if not direct else
            f"_xmpps-server._tcp.p.example. 60 IN SRV 10 5 {p_ports['s2s_tls']} p.example."]
        own = None
        if dane:
            # Prosody's self-signed certificate, pinned in the signed zone
            # for both its ports (RFC 7673: _port._tcp.target).
            own, tlsa = pinned_cert(root, "p.example", p_ports.values())
            zone += tlsa
        dns = DnsBed(root, zones={"example": zone})
        made.append(dns)
        p = Prosody(root, "p.example", dns, ca, trust_ca=certs, bidi=bidi, own_cert=own)
        # The ports named in DNS.
        p.s2s, p.s2s_tls = p_ports["s2s"], p_ports["s2s_tls"]
        with open(p.conf) as f:
            conf = f.read()
        import re
        conf = re.sub(r"s2s_ports = \{ \d+ \}", f"s2s_ports = {{ {p.s2s} }}", conf)
        conf = re.sub(r"s2s_direct_tls_ports = \{ \d+ \}",
                      f"s2s_direct_tls_ports = {{ {p.s2s_tls} }}", conf)
        with open(p.conf, "w") as f:
            f.write(conf)
        a.base = a.base.replace('dns_servers: ["None"]', f'dns_servers: ["{dns.server}"]')
        a.base = a.base.replace("dns_trust_anchor: None", f"dns_trust_anchor: {dns.trust_anchor}")
        if certs:
            a.base += f"s2s_ca_file: {ca.cert}\n"
        if dane:
            # Dialback would do for a self-signed peer; DANE must do here.
            a.extra = 's2s_secure_domains: ["p.example"]\n'
        a.adduser("alice")
        p.adduser("pat")
        a.start()
        made.append(a)
        p.start()
        made.append(p)
        return a, p

    yield make
    for x in reversed(made):
        if isinstance(x, FedServer):
            assert x.stop() == 0
        else:
            x.stop()


async def pat_client(p):
    c = Client(f"pat@{p.domain}/t", PASSWORD, cafile=p.cafile, mech="PLAIN")
    ok = await c.login(p.c2s)
    assert ok, "pat could not log in to Prosody:\n" + p.log()[-2000:]
    await c.get_roster()  # an interested resource gets subscription stanzas (RFC 6121)
    return c


async def next_message(c, timeout=20):
    return await asyncio.wait_for(c.messages.get(), timeout)


def run_exchange(a, p):
    async def go():
        pat = await pat_client(p)
        alice = Raw(a, "alice")
        alice.presence()
        try:
            alice.send("<message to='pat@p.example' type='chat'><body>hello prosody</body>"
                       "</message>")
            m = await next_message(pat)
            assert m["body"] == "hello prosody" and m["from"].bare == "alice@a.example"
            pat.send_message(mto="alice@a.example/raw", mbody="hello parley", mtype="chat")
            got = await asyncio.get_event_loop().run_in_executor(
                None, lambda: alice.expect(lambda e: e.tag == C + "message", timeout=20,
                                           what="message from Prosody"))
            assert got.find(C + "body").text == "hello parley"
            assert got.get("from") == "pat@p.example/t"
            # IQ: alice pings Prosody's domain; pat asks Parley's version.
            alice.send("<iq type='get' id='pp' to='p.example'><ping xmlns='urn:xmpp:ping'/></iq>")
            r = await asyncio.get_event_loop().run_in_executor(
                None, lambda: alice.expect(lambda e: e.get("id") == "pp", timeout=20,
                                           what="ping answer from Prosody"))
            assert r.get("type") == "result"
            v = await pat["xep_0092"].get_version("a.example", timeout=20)
            assert v["software_version"]["name"] == "Parley", v
            # A subscription from Prosody's user, approved on Parley.
            approved = asyncio.get_event_loop().create_future()
            pat.add_event_handler("presence_subscribed",
                                  lambda pr: approved.done() or approved.set_result(pr))
            pat.send_presence(pto="alice@a.example", ptype="subscribe")
            req = await asyncio.get_event_loop().run_in_executor(
                None, lambda: alice.expect(lambda e: e.tag == C + "presence" and
                                           e.get("type") == "subscribe", timeout=20,
                                           what="subscription request from Prosody"))
            assert req.get("from") == "pat@p.example"
            alice.send("<presence to='pat@p.example' type='subscribed'/>")
            pr = await asyncio.wait_for(approved, 20)
            assert pr["from"].bare == "alice@a.example"
            # Prosody's roster says 'to' now (RFC 6121 §3.1.6).
            await pat.get_roster()
            assert pat.client_roster["alice@a.example"]["subscription"] == "to"
        finally:
            await pat.close()
    asyncio.run(go())


def check_transport(log, transport):
    """Both directions used the transport the DNS records announce."""
    if transport == "direct":
        assert "connected to 127.0.0.1 (direct TLS)" in log, log[-4000:]
        assert "s2s connection from 127.0.0.1 (direct TLS)" in log, log[-4000:]
    else:
        assert "(direct TLS)" not in log.replace("on worker", ""), log[-4000:]


@pytest.mark.parametrize("transport", ["starttls", "direct"])
def test_prosody_with_certificates(pair, transport):
    a, p = pair(certs=True, transport=transport)
    run_exchange(a, p)
    log = a.log()
    assert "s2s from p.example to a.example: authenticated by SASL EXTERNAL" in log, log[-4000:]
    assert "ready (SASL EXTERNAL)" in log, log[-4000:]
    check_transport(log, transport)


@pytest.mark.parametrize("transport", ["starttls", "direct"])
def test_prosody_with_dialback(pair, transport):
    a, p = pair(certs=False, transport=transport)
    run_exchange(a, p)
    log = a.log()
    assert "authenticated by dialback" in log, log[-4000:]
    assert "ready (dialback)" in log, log[-4000:]
    check_transport(log, transport)


@pytest.mark.parametrize("transport", ["starttls", "direct"])
def test_prosody_with_dane(pair, transport):
    """Prosody with a self-signed certificate pinned by DNSSEC-signed TLSA
    records, and a.example requiring certificate or DANE from it: DANE
    authenticates Prosody on a's link to it and on Prosody's link to a
    (there with SASL EXTERNAL)."""
    a, p = pair(certs=True, transport=transport, dane=True)
    run_exchange(a, p)
    log = a.log()
    assert "s2s to p.example: certificate valid (DANE-EE matched" in log, log[-4000:]
    assert ("s2s from p.example: certificate valid (DANE-EE matched, TLSA 3 1 1 of its "
            "servers)") in log, log[-4000:]
    assert "s2s from p.example to a.example: authenticated by SASL EXTERNAL" in log, log[-4000:]
    check_transport(log, transport)


def test_prosody_bidirectional_over_our_stream(pair):
    """XEP-0288: Prosody offers bidi, Parley asks for it on its outgoing
    stream, and Prosody sends its own traffic (replies, IQs, subscription
    stanzas) back over that one connection: Parley accepts none."""
    a, p = pair(certs=True, transport="starttls", bidi=True)
    run_exchange(a, p)
    log = a.log()
    assert "s2s connection from" not in log, log[-4000:]
    assert ("s2s from p.example: message from pat@p.example/t to alice@a.example/raw "
            "(on our stream, XEP-0288)") in log, log[-4000:]
    assert "Requested bidirectional stream" in p.log(), p.log()[-3000:]


def test_prosody_bidirectional_over_its_stream(pair):
    """XEP-0288 the other way: Prosody connects first and asks for bidi;
    Parley's replies go back over Prosody's stream, and Parley opens no
    connection of its own."""
    a, p = pair(certs=True, transport="direct", bidi=True)

    async def go():
        pat = await pat_client(p)
        alice = Raw(a, "alice")
        alice.presence()
        loop = asyncio.get_event_loop()
        try:
            pat.send_message(mto="alice@a.example/raw", mbody="first", mtype="chat")
            got = await loop.run_in_executor(None, lambda: alice.expect(
                lambda e: e.tag == C + "message", timeout=20, what="message from Prosody"))
            assert got.find(C + "body").text == "first"
            alice.send("<message to='pat@p.example/t' type='chat'><body>back</body></message>")
            m = await next_message(pat)
            assert m["body"] == "back"
            alice.send("<iq type='get' id='bp' to='p.example'><ping xmlns='urn:xmpp:ping'/></iq>")
            r = await loop.run_in_executor(None, lambda: alice.expect(
                lambda e: e.get("id") == "bp", timeout=20, what="ping answer"))
            assert r.get("type") == "result"
        finally:
            await pat.close()
    asyncio.run(go())
    log = a.log()
    assert "s2s to p.example from a.example: ready (the peer's bidirectional stream" in log, \
        log[-4000:]
    assert "s2s to p.example: connected" not in log, log[-4000:]
    assert "Requesting bidirectional stream" in p.log(), p.log()[-3000:]


EJABBERDCTL = shutil.which("ejabberdctl")


class Ejabberd:
    """ejabberd 23.01 from Debian, serving `domain`, resolving through the
    DNS bed (Erlang's inet_res, pointed at it by an inetrc file)."""

    def __init__(self, root, domain, dns, ca, trust_ca, s2s_port, s2s_tls_port, own_cert=None):
        import tempfile
        self.domain = domain
        # ejabberd runs as its own user, which cannot enter pytest's private
        # temporary directories: a world-readable one of its own.
        self.dir = tempfile.mkdtemp(prefix="parley-ejabberd-")
        os.chmod(self.dir, 0o755)
        for sub in ("spool", "logs"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.c2s = free_port()
        self.s2s = s2s_port
        self.s2s_tls = s2s_tls_port
        if own_cert:
            crt, key = own_cert  # self-signed, pinned by TLSA records
            self.cafile = crt
        else:
            crt, key = ca.issue(domain, self.dir)
            self.cafile = ca.cert
        self.pem = os.path.join(self.dir, domain + ".pem")
        with open(self.pem, "w") as out, open(key) as k, open(crt) as c:
            out.write(k.read() + c.read())
        host, port = dns.server.split("@")
        inetrc = os.path.join(self.dir, "inetrc")
        with open(inetrc, "w") as f:
            # resolv_conf first: read later, it would replace the nameserver.
            f.write('{resolv_conf, "/dev/null"}.\n{hosts_file, "/dev/null"}.\n'
                    f"{{nameserver, {{{host.replace('.', ',')}}}, {port}}}.\n"
                    "{lookup, [dns]}.\n")
        # Without our CA it trusts only the system's, so our certificate fails
        # and dialback is what is left.
        shutil.copy(ca.cert, os.path.join(self.dir, "ca.pem"))
        ca_file = os.path.join(self.dir, "ca.pem") if trust_ca else \
            "/etc/ssl/certs/ca-certificates.crt"
        self.conf = os.path.join(self.dir, "ejabberd.yml")
        with open(self.conf, "w") as f:
            f.write(f"""# written by tests/integration/test_s2s_interop.py
hosts: [{domain}]
loglevel: info
certfiles: ["{self.pem}"]
ca_file: "{ca_file}"
s2s_use_starttls: required
listen:
  - {{port: {self.c2s}, ip: "127.0.0.1", module: ejabberd_c2s, starttls_required: true}}
  - {{port: {self.s2s}, ip: "127.0.0.1", module: ejabberd_s2s_in}}
  - {{port: {self.s2s_tls}, ip: "127.0.0.1", module: ejabberd_s2s_in, tls: true}}
auth_method: internal
acl:
  local: {{user_regexp: ""}}
access_rules:
  c2s: {{allow: all}}
  s2s: {{allow: all}}
s2s_access: s2s
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_version: {{}}
  mod_s2s_dialback: {{}}
""")
        self.ctl_conf = os.path.join(self.dir, "ejabberdctl.cfg")
        with open(self.ctl_conf, "w") as f:
            f.write(f"EJABBERD_PID_PATH={self.dir}/ejabberd.pid\n")
        subprocess.run(["chown", "-R", "ejabberd:", self.dir], check=False)
        self.node = f"ptest{os.getpid()}@localhost"
        # --config-dir: ejabberdctl points ERL_INETRC at <config-dir>/inetrc.
        self.cmd = [EJABBERDCTL, "--config-dir", self.dir, "--config", self.conf,
                    "--ctl-config", self.ctl_conf,
                    "--spool", os.path.join(self.dir, "spool"), "--logs",
                    os.path.join(self.dir, "logs"), "--node", self.node]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd + ["foreground"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        end = time.time() + 60
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("ejabberd exited:\n" + self.log()[-3000:])
            try:
                socket.create_connection(("127.0.0.1", self.c2s), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("ejabberd did not start:\n" + self.log()[-3000:])

    def adduser(self, user):
        subprocess.run(self.cmd + ["register", user, self.domain, PASSWORD], check=True,
                       capture_output=True, timeout=60)

    def log(self):
        try:
            with open(os.path.join(self.dir, "logs", "ejabberd.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        subprocess.run(self.cmd + ["stop"], capture_output=True, timeout=60)
        if self.proc:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["pkill", "-f", f"beam.*{self.node}"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def ejpair(tmp_path):
    assert EJABBERDCTL, "ejabberd is not installed: scripts/deps.sh test"
    made = []

    def make(certs, transport, dane=False):
        root = str(tmp_path)
        ca = CA(root)

        class Late:
            server = trust_anchor = None

        a = FedServer(root, "a.example", Late, self_signed=False)
        ca.issue("a.example", a.dir)
        a.cafile = ca.cert
        e_s2s, e_s2s_tls = free_port(), free_port()
        # ejabberd looks SRV records up with Erlang's resolver (pointed at the
        # bed) but the target's address with getaddrinfo (the system's, which
        # does not know the bed): so Parley's SRV target is its IP literal.
        # Both directions use the transport under test.
        direct = transport == "direct"
        zone = [f"_xmpp-server._tcp.a.example. 60 IN SRV 10 5 {a.s2s} 127.0.0.1."
                if not direct else
                f"_xmpps-server._tcp.a.example. 60 IN SRV 10 5 {a.s2s_tls} 127.0.0.1."] + [
            "e.example. 60 IN A 127.0.0.1",
            f"_xmpp-server._tcp.e.example. 60 IN SRV 10 5 {e_s2s} e.example."
            if not direct else
            f"_xmpps-server._tcp.e.example. 60 IN SRV 10 5 {e_s2s_tls} e.example."]
        own = None
        if dane:
            own, tlsa = pinned_cert(root, "e.example", (e_s2s, e_s2s_tls))
            zone += tlsa
            a.extra = 's2s_secure_domains: ["e.example"]\n'
        dns = DnsBed(root, zones={"example": zone})
        made.append(dns)
        e = Ejabberd(root, "e.example", dns, ca, trust_ca=certs, s2s_port=e_s2s,
                     s2s_tls_port=e_s2s_tls, own_cert=own)
        a.base = a.base.replace('dns_servers: ["None"]', f'dns_servers: ["{dns.server}"]')
        a.base = a.base.replace("dns_trust_anchor: None", f"dns_trust_anchor: {dns.trust_anchor}")
        if certs:
            a.base += f"s2s_ca_file: {ca.cert}\n"
        a.adduser("alice")
        a.start()
        made.append(a)
        e.start()
        made.append(e)
        e.adduser("eve")
        return a, e

    yield make
    for x in reversed(made):
        if isinstance(x, FedServer):
            assert x.stop() == 0
        else:
            x.stop()


def run_exchange_ej(a, e):
    async def go():
        eve = Client(f"eve@{e.domain}/t", PASSWORD, cafile=e.cafile, mech="PLAIN")
        ok = await eve.login(e.c2s)
        assert ok, "eve could not log in to ejabberd:\n" + e.log()[-2000:]
        await eve.get_roster()
        alice = Raw(a, "alice")
        alice.presence()
        loop = asyncio.get_event_loop()
        try:
            alice.send("<message to='eve@e.example' type='chat'><body>hello ejabberd</body>"
                       "</message>")
            m = await next_message(eve, timeout=30)
            assert m["body"] == "hello ejabberd" and m["from"].bare == "alice@a.example"
            eve.send_message(mto="alice@a.example/raw", mbody="hello parley", mtype="chat")
            got = await loop.run_in_executor(
                None, lambda: alice.expect(lambda x: x.tag == C + "message", timeout=30,
                                           what="message from ejabberd"))
            assert got.find(C + "body").text == "hello parley"
            v = await eve["xep_0092"].get_version("a.example", timeout=20)
            assert v["software_version"]["name"] == "Parley", v
        finally:
            await eve.close()
    asyncio.run(go())


def check_inbound(log, transport):
    """Both directions used the transport the DNS records announce."""
    direct = "s2s connection from 127.0.0.1 (direct TLS)" in log
    assert direct == (transport == "direct"), log[-4000:]
    direct = "s2s to e.example: connected to 127.0.0.1 (direct TLS)" in log
    assert direct == (transport == "direct"), log[-4000:]


@pytest.mark.parametrize("transport", ["starttls", "direct"])
def test_ejabberd_with_certificates(ejpair, transport):
    a, e = ejpair(certs=True, transport=transport)
    run_exchange_ej(a, e)
    log = a.log()
    assert "s2s from e.example to a.example: authenticated by SASL EXTERNAL" in log, log[-4000:]
    assert "ready (SASL EXTERNAL)" in log, log[-4000:]
    check_inbound(log, transport)


@pytest.mark.parametrize("transport", ["starttls", "direct"])
def test_ejabberd_with_dialback(ejpair, transport):
    a, e = ejpair(certs=False, transport=transport)
    run_exchange_ej(a, e)
    log = a.log()
    assert "authenticated by dialback" in log, log[-4000:]
    assert "ready (dialback)" in log, log[-4000:]
    check_inbound(log, transport)


@pytest.mark.parametrize("transport", ["starttls", "direct"])
def test_ejabberd_with_dane(ejpair, transport):
    """ejabberd with a self-signed certificate pinned by DNSSEC-signed TLSA
    records; a.example requires certificate or DANE from it."""
    a, e = ejpair(certs=True, transport=transport, dane=True)
    run_exchange_ej(a, e)
    log = a.log()
    assert "s2s to e.example: certificate valid (DANE-EE matched" in log, log[-4000:]
    assert ("s2s from e.example: certificate valid (DANE-EE matched, TLSA 3 1 1 of its "
            "servers)") in log, log[-4000:]
    assert "s2s from e.example to a.example: authenticated by SASL EXTERNAL" in log, log[-4000:]
    check_inbound(log, transport)
