"""Several domains served by one parleyd (virtual hosts).

RFC 6120 §4.7.2 (the stream header's 'to' names the host), §4.9.3.6
(host-unknown), §13.7.2 / RFC 6066 §3 (SNI picks the certificate),
RFC 7622 §3.2 (domain parts compare case-insensitively), §8.3.3.16
(remote-server-not-found while there is no federation). Accounts belong to
one host: alice@example.test is not alice@localhost.

Each test runs its own parleyd with three hosts: localhost (the first, so
the default certificate), example.test and its subdomain chat.example.test,
each with its own self-signed certificate made by `parleyctl cert generate`.
"""
import asyncio
import base64
import os
import re
import socket
import ssl
import subprocess
import time

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from conftest import DOMAIN, PARLEYCTL, PASSWORD, Server, recv_all, recv_until
from xmpp_client import Client

DOMAINS = [DOMAIN, "example.test", "chat.example.test"]  # the first is the default
UNSERVED = "unserved.test"
HEADER = ("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"


class VhostServer(Server):
    """The conftest Server with more hosts appended to its configuration.

    Failed-login throttling is switched off: several tests fail logins on
    purpose and must not be slowed or refused for it."""

    def __init__(self, tmp_path, domains=DOMAINS, extra=""):
        assert domains[0] == DOMAIN
        super().__init__(tmp_path, extra="limits.auth_failures_per_ip: 0\n"
                                         "limits.auth_failures_per_account: 0\n" + extra)
        # conftest writes 'hosts:' last, with the single host DOMAIN
        with open(self.conf, "a") as f:
            for d in domains[1:]:
                f.write(f"  - domain: {d}\n    certificate: {d}.crt\n    key: {d}.key\n")
                subprocess.run([PARLEYCTL, "cert", "generate", d, "--dir", str(tmp_path)],
                               check=True, capture_output=True)
        self.certs = {d: os.path.join(str(tmp_path), d + ".crt") for d in domains}

    def adduser(self, jid, password=PASSWORD):
        """jid is user@domain, for any served domain."""
        self.ctl("adduser", jid, input=password + "\n")
        return jid


@pytest.fixture
def vserver(tmp_path):
    srv = VhostServer(str(tmp_path))
    yield srv
    rc = srv.stop()
    log = srv.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
    assert rc == 0, f"parleyd exited with {rc}\n{log[-5000:]}"


# --- raw-socket helpers -----------------------------------------------------

def der(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def tls_wrap(sock, cafile, sni):
    """TLS client side that trusts only cafile and checks sni against the
    certificate (check_hostname); sni=None sends no SNI (then no check)."""
    ctx = ssl.create_default_context(cafile=cafile)
    if sni is None:
        ctx.check_hostname = False
    return ctx.wrap_socket(sock, server_hostname=sni)


def unverified_wrap(sock, sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=sni)


def san_dns(tls_sock):
    return [v for k, v in tls_sock.getpeercert().get("subjectAltName", ()) if k == "DNS"]


def header_from(data):
    m = re.search(rb"<stream:stream[^>]*\sfrom=['\"]([^'\"]*)['\"]", data)
    return m.group(1).decode() if m else None


def open_stream(sock, to):
    sock.sendall((HEADER % to).encode())
    data = recv_until(sock, b"</stream:features>")
    assert b"</stream:features>" in data, data
    return data


def secured(srv, to, direct=False, sni=None, cafile=None, after_tls_to=None):
    """A TLS stream to host `to` (STARTTLS, or direct TLS), verified against
    cafile (default: the certificate of `to`) with SNI sni (default: `to`).
    Returns (tls socket, features after TLS)."""
    sni = to if sni is None else sni
    cafile = cafile or srv.certs[to.lower()]
    s = socket.create_connection(("127.0.0.1", srv.c2s_tls if direct else srv.c2s), timeout=10)
    if not direct:
        open_stream(s, to)
        s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in recv_until(s, b"/>")
    t = tls_wrap(s, cafile, sni)
    feats = open_stream(t, after_tls_to or to)
    return t, feats


def plain(sock, authcid, password):
    """SASL PLAIN; returns the server's answer (success or failure)."""
    auth = base64.b64encode(b"\0" + authcid.encode() + b"\0" + password.encode()).decode()
    sock.sendall(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{auth}</auth>".encode())
    data = b""
    sock.settimeout(10)
    while not re.search(rb"</failure>|<failure[^>]*/>|</success>|<success[^>]*/>", data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def login(srv, to, user, password=PASSWORD, resource="raw", **kw):
    """STARTTLS (or direct TLS) + PLAIN + bind on a stream to host `to`;
    returns (socket, bind reply) or raises AssertionError with the failure."""
    t, _ = secured(srv, to, **kw)
    reply = plain(t, user, password)
    if b"<success" not in reply:
        t.close()
        raise AssertionError(reply.decode(errors="replace"))
    open_stream(t, to)
    t.sendall(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              f"<resource>{resource}</resource></bind></iq>".encode())
    data = recv_until(t, b"</iq>")
    assert b"type='result'" in data, data
    return t, data


def bound_jid(bind_reply):
    m = re.search(rb"<jid>([^<]*)</jid>", bind_reply)
    return m.group(1).decode() if m else None


def attr(el, name):
    m = re.search(rb"\s" + name.encode() + rb"=['\"]([^'\"]*)['\"]", el)
    return m.group(1).decode() if m else None


def first_tag(data, tag, id=None):
    """The first <tag ...> ... element (start tag up to its end) in data."""
    pat = rb"<" + tag.encode() + rb"\b[^>]*"
    if id:
        pat += rb"\sid=['\"]" + re.escape(id.encode()) + rb"['\"][^>]*"
    pat += rb"(?:/>|>.*?</" + tag.encode() + rb">)"
    m = re.search(pat, data, re.S)
    return m.group(0) if m else None


class VClient(Client):
    """slixmpp connecting to 127.0.0.1 would send no SNI and check no name
    (its default_domain is empty for an IP address): name the JID's domain,
    and skip DNS, which knows nothing of these domains."""

    def connect(self, *args, **kw):
        fut = super().connect(*args, **kw)
        self.default_domain = self.boundjid.domain
        return fut

    async def _pick_dns_answer(self, domain, port=None):
        return None


def recv_stanza(sock, tag, id=None, timeout=10):
    """Reads until a whole <tag> (with that id, if given) has arrived;
    returns it, or None if it does not come."""
    sock.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while time.time() < end:
        el = first_tag(data, tag, id)
        if el is not None:
            return el
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return first_tag(data, tag, id)


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def vconnect(srv, jid, resource="test", direct=False):
    """slixmpp login of jid (user@domain); the client's TLS trusts only that
    domain's certificate and checks the name, so a wrong certificate makes
    the login fail."""
    dom = jid.split("@", 1)[1]
    c = VClient(f"{jid}/{resource}", mech="SCRAM-SHA-256", channel_binding=False)
    # the system store must not vouch for anything here
    c.ssl_context = ssl.create_default_context(cafile=srv.certs[dom])
    ok = await c.login(srv.c2s_tls if direct else srv.c2s, direct_tls=direct)
    if not ok:
        raise AssertionError(f"login of {jid} failed")
    # the initial presence is processed before the server answers this
    # (tests may block the event loop with raw sockets next)
    await c["xep_0199"].ping(dom, timeout=5)
    return c


# --- (1) SNI and certificates -------------------------------------------------

@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("domain", DOMAINS)
def test_sni_selects_the_hosts_certificate(vserver, domain, direct):
    vserver.start()
    t, feats = secured(vserver, domain, direct=direct)  # verified against this cert alone
    assert san_dns(t) == [domain]
    assert t.getpeercert(binary_form=True) == der(vserver.certs[domain])
    assert header_from(feats) == domain  # the stream is this host's
    t.close()


@pytest.mark.parametrize("domain", DOMAINS[1:])
def test_other_hosts_certificate_fails_verification(vserver, domain):
    """The check above can fail: trusting only localhost's certificate, a
    TLS connection named `domain` is refused."""
    vserver.start()
    s = socket.create_connection(("127.0.0.1", vserver.c2s_tls), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_wrap(s, vserver.certs[DOMAIN], domain)
    s.close()


@pytest.mark.parametrize("sni", [UNSERVED, None], ids=["unserved-sni", "no-sni"])
def test_unserved_sni_gets_default_certificate_then_host_unknown(vserver, sni):
    vserver.start()
    s = socket.create_connection(("127.0.0.1", vserver.c2s_tls), timeout=10)
    t = unverified_wrap(s, sni)
    assert t.getpeercert(binary_form=True) == der(vserver.certs[DOMAIN])  # the first host's
    t.sendall((HEADER % UNSERVED).encode())
    got = recv_all(t, timeout=10)
    assert f"<host-unknown xmlns='{NS_STREAMS_ERR}'/>".encode() in got, got
    assert got.endswith(b"</stream:stream>"), got
    t.close()


def test_unserved_stream_to_before_starttls_is_host_unknown(vserver):
    vserver.start()
    s = socket.create_connection(("127.0.0.1", vserver.c2s), timeout=10)
    s.sendall((HEADER % UNSERVED).encode())
    got = recv_all(s, timeout=10)
    assert f"<host-unknown xmlns='{NS_STREAMS_ERR}'/>".encode() in got, got
    assert b"<starttls" not in got
    s.close()


# --- (2) users of two local domains chat ------------------------------------

def test_users_of_different_hosts_chat(vserver):
    a = vserver.adduser("alice@localhost")
    b = vserver.adduser("bob@example.test")
    c = vserver.adduser("carol@chat.example.test")
    vserver.start()

    async def run():
        alice = await vconnect(vserver, a, resource="a")
        bob = await vconnect(vserver, b, resource="b", direct=True)
        carol = await vconnect(vserver, c, resource="c")
        assert bob.boundjid.full == "bob@example.test/b"
        assert carol.boundjid.full == "carol@chat.example.test/c"

        async def check(sender, receiver, to, body):
            sender.send_message(mto=to, mbody=body, mtype="chat")
            m = await asyncio.wait_for(receiver.messages.get(), 5)
            assert m["type"] == "chat" and m["body"] == body
            assert m["from"].full == sender.boundjid.full  # stamped by the server
            assert m["to"].bare == receiver.boundjid.bare

        for s, r in [(alice, bob), (bob, alice), (bob, carol), (carol, bob), (alice, carol),
                     (carol, alice)]:
            await check(s, r, r.boundjid.full, f"full {s.boundjid.bare}>{r.boundjid.bare}")
            await check(s, r, r.boundjid.bare, f"bare {s.boundjid.bare}>{r.boundjid.bare}")
        # nothing went astray
        await asyncio.sleep(0.3)
        for x in (alice, bob, carol):
            assert x.messages.empty()
        # the same localpart on another host is another account
        alice.send_message(mto="bob@localhost", mbody="wrong bob", mtype="chat")
        m = await asyncio.wait_for(alice.messages.get(), 5)
        assert m["type"] == "error" and m["error"]["condition"] == "service-unavailable"
        assert bob.messages.empty()
        for x in (alice, bob, carol):
            await x.close()

    asyncio.run(run())


# --- (3) the stream header decides the host ---------------------------------

def test_accounts_belong_to_the_host_of_the_stream(vserver):
    vserver.adduser("alice@example.test")
    vserver.adduser("alice@localhost", password="localhost password")
    vserver.adduser("dave@example.test")
    vserver.start()
    # on its own host
    t, data = login(vserver, "example.test", "alice")
    assert bound_jid(data) == "alice@example.test/raw"
    t.close()
    # the example.test credentials on a stream to localhost
    st, _ = secured(vserver, DOMAIN)
    reply = plain(st, "alice", PASSWORD)
    assert f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>".encode() in reply, reply
    st.close()
    # the same name has its own password on localhost
    t, data = login(vserver, DOMAIN, "alice", password="localhost password")
    assert bound_jid(data) == "alice@localhost/raw"
    t.close()
    with pytest.raises(AssertionError, match="not-authorized"):
        login(vserver, "example.test", "alice", password="localhost password")
    # an account that exists only on example.test: not on localhost, nor on
    # its subdomain
    for host in (DOMAIN, "chat.example.test"):
        st, _ = secured(vserver, host)
        reply = plain(st, "dave", PASSWORD)
        assert f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>".encode() in reply
        st.close()
    t, data = login(vserver, "example.test", "dave", direct=True)
    assert bound_jid(data) == "dave@example.test/raw"
    t.close()


@pytest.mark.parametrize("stage", ["after-tls", "after-sasl"])
def test_restarted_stream_cannot_change_host(vserver, stage):
    """A stream secured (and authenticated) for localhost cannot be
    restarted as example.test: that would log into example.test behind
    localhost's certificate."""
    vserver.adduser("alice@localhost")
    vserver.adduser("alice@example.test")
    vserver.start()
    if stage == "after-tls":
        s = socket.create_connection(("127.0.0.1", vserver.c2s), timeout=10)
        open_stream(s, DOMAIN)
        s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in recv_until(s, b"/>")
        t = tls_wrap(s, vserver.certs[DOMAIN], DOMAIN)
        t.sendall((HEADER % "example.test").encode())
    else:
        t, _ = secured(vserver, DOMAIN)
        assert b"<success" in plain(t, "alice", PASSWORD)
        t.sendall((HEADER % "example.test").encode())
    got = recv_all(t, timeout=10)
    assert f"<host-unknown xmlns='{NS_STREAMS_ERR}'/>".encode() in got, got
    assert b"<stream:features" not in got, got
    t.close()


def test_slixmpp_login_to_wrong_host_fails(vserver):
    vserver.adduser("alice@example.test")
    vserver.start()

    async def run():
        c = VClient("alice@localhost/x", mech="SCRAM-SHA-256", channel_binding=False)
        c.ssl_context = ssl.create_default_context(cafile=vserver.certs[DOMAIN])
        assert await c.login(vserver.c2s) is False
        await c.close()
        ok = await vconnect(vserver, "alice@example.test")
        await ok.close()

    asyncio.run(run())


# --- (4) disco#info and (5) ping, per domain ----------------------------------

def test_disco_info_answers_from_each_domain(vserver):
    users = [vserver.adduser(f"u{i}@{d}") for i, d in enumerate(DOMAINS)]
    vserver.start()

    async def run():
        clients = [await vconnect(vserver, u) for u in users]
        for c in clients:
            for d in DOMAINS:
                info = await c["xep_0030"].get_info(jid=d, timeout=5)
                assert info["type"] == "result"
                assert info["from"].full == d
                assert info["to"].full == c.boundjid.full
                assert ("server", "im", None, "Parley") in info["disco_info"]["identities"]
                assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"]
        for c in clients:
            await c.close()

    asyncio.run(run())
    # on the wire too: the literal 'from' of the answer (slixmpp compares
    # parsed JIDs)
    for d in DOMAINS:
        t, _ = login(vserver, d, f"u{DOMAINS.index(d)}")
        for target in DOMAINS:
            t.sendall(f"<iq type='get' id='d-{target}' to='{target}'>"
                      f"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>".encode())
            iq = recv_stanza(t, "iq", f"d-{target}")
            assert iq is not None
            assert attr(iq, "type") == "result" and attr(iq, "from") == target, iq
        t.close()


def test_ping_each_domain_from_users_of_the_others(vserver):
    users = {d: vserver.adduser(f"pinger@{d}") for d in DOMAINS}
    vserver.start()

    async def run():
        clients = {d: await vconnect(vserver, users[d]) for d in DOMAINS}
        for src, c in clients.items():
            for d in DOMAINS:
                if d == src:
                    continue
                iq = c.make_iq_get(ito=d)
                iq.append(ET.Element("{urn:xmpp:ping}ping"))
                res = await iq.send(timeout=5)
                assert res["type"] == "result" and res["from"].full == d
                assert res["to"].full == c.boundjid.full
        # an unhandled IQ to another host is that host's service-unavailable
        c = clients[DOMAIN]
        iq = c.make_iq_get(queryxmlns="urn:example:nothing", ito="example.test")
        with pytest.raises(IqError) as e:
            await iq.send(timeout=5)
        assert e.value.iq["error"]["condition"] == "service-unavailable"
        assert e.value.iq["from"].full == "example.test"
        for c in clients.values():
            await c.close()

    asyncio.run(run())


# --- (6) domains that are not served ---------------------------------------

def test_stanzas_to_unserved_domain_bounce_remote_server_not_found(vserver):
    a = vserver.adduser("alice@example.test")
    vserver.start()

    async def run():
        alice = await vconnect(vserver, a)
        # a foreign domain, a subdomain of a served one, a suffix of one
        for to in (f"bob@{UNSERVED}", f"bob@{UNSERVED}/res", "bob@other.example.test",
                   "bob@test", UNSERVED, "bob@xample.test"):
            alice.send_message(mto=to, mbody="hello?", mtype="chat")
            m = await asyncio.wait_for(alice.messages.get(), 5)
            assert m["type"] == "error", to
            assert m["error"]["condition"] == "remote-server-not-found", to
            assert m["error"]["type"] == "cancel", to
            assert m["from"].full == to
        with pytest.raises(IqError) as e:
            await alice["xep_0199"].ping(UNSERVED, timeout=5)
        assert e.value.iq["error"]["condition"] == "remote-server-not-found"
        assert e.value.iq["from"].full == UNSERVED
        # the session goes on
        await alice["xep_0199"].ping("example.test", timeout=5)
        await alice.close()

    asyncio.run(run())


# --- (7) case-insensitive domains ---------------------------------------------

def test_stream_header_domain_is_case_insensitive(vserver):
    vserver.adduser("alice@example.test")
    vserver.start()
    # pre-TLS header upper case, SNI lower case, restarted streams mixed case
    t, feats = secured(vserver, "EXAMPLE.test", sni="example.test",
                       cafile=vserver.certs["example.test"], after_tls_to="example.TEST")
    assert header_from(feats) == "example.test"
    assert b"<success" in plain(t, "alice", PASSWORD)
    t.sendall((HEADER % "Example.Test").encode())
    recv_until(t, b"</stream:features>")
    t.sendall(b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              b"<resource>r</resource></bind></iq>")
    assert bound_jid(recv_until(t, b"</iq>")) == "alice@example.test/r"
    t.close()
    # a direct TLS stream to the upper-case name, lower-case SNI
    t, data = login(vserver, "EXAMPLE.TEST", "alice", direct=True, sni="example.test",
                    cafile=vserver.certs["example.test"], resource="d")
    assert bound_jid(data) == "alice@example.test/d"
    t.close()


def test_jid_domains_are_case_insensitive(vserver):
    # parleyctl takes the domain in any case too
    vserver.adduser("alice@LOCALHOST")
    vserver.adduser("bob@Example.TEST")
    vserver.start()

    async def run():
        bob = await vconnect(vserver, "bob@example.test", resource="b")
        t, data = login(vserver, DOMAIN, "alice", resource="a")
        assert bound_jid(data) == "alice@localhost/a"
        for n, to in enumerate(["bob@EXAMPLE.test", "bob@example.TEST/b", "BOB@Example.Test"]):
            t.sendall(f"<message type='chat' to='{to}' id='m{n}'><body>hi {n}</body></message>"
                      .encode())
            m = await asyncio.wait_for(bob.messages.get(), 5)
            assert m["body"] == f"hi {n}" and m["type"] == "chat", to
            assert m["from"].full == "alice@localhost/a"
        # bob answers to an upper-case address of alice
        bob.send_message(mto="alice@LocalHost/a", mbody="back", mtype="chat")
        msg = await in_thread(recv_stanza, t, "message")
        assert msg is not None and b"<body>back</body>" in msg, msg
        assert attr(msg, "from") == "bob@example.test/b"
        # IQs to the host in another case are answered by it, from its name
        for n, to in enumerate(["CHAT.example.test", "Example.Test"]):
            t.sendall(f"<iq type='get' id='p{n}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"
                      .encode())
            iq = await in_thread(recv_stanza, t, "iq", f"p{n}")
            assert iq is not None and attr(iq, "type") == "result", iq
            assert attr(iq, "from") == to.lower(), iq
        # an unserved domain in upper case is still unserved
        t.sendall(b"<message type='chat' to='bob@UNSERVED.test' id='u'><body>x</body></message>")
        msg = await in_thread(recv_stanza, t, "message", "u")
        assert msg is not None and b"<remote-server-not-found" in msg, msg
        assert attr(msg, "type") == "error" and attr(msg, "from") == "bob@unserved.test", msg
        t.close()
        await bob.close()

    asyncio.run(run())


def test_sni_name_is_case_insensitive(vserver):
    """RFC 6066 §3 / RFC 4343: a DNS name in SNI compares without case;
    'EXAMPLE.test' must get example.test's certificate on direct TLS."""
    vserver.start()
    s = socket.create_connection(("127.0.0.1", vserver.c2s_tls), timeout=10)
    t = unverified_wrap(s, "EXAMPLE.test")
    assert t.getpeercert(binary_form=True) == der(vserver.certs["example.test"])
    t.close()
