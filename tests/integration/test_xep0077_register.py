"""XEP-0077 In-Band Registration with XEP-0445 invitations: off by default,
open with a per-IP limit, invite-only with one-time tokens from
`parleyctl invite`; password change and account removal in band, the
removal cancelling subscriptions toward contacts (RFC 6121 §3) and closing
every session."""
import asyncio
import ssl
import xml.etree.ElementTree as ET

import pytest

from conftest import DOMAIN, PASSWORD, STREAM_HEADER, Server, raw_connect, recv_until
from test_rfc6121_roster import C, Raw
from test_rfc6121_subscription import befriend, online
from xmpp_client import Client

NS = "jabber:iq:register"
R = "{%s}" % NS
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


def make_server(tmp_path, mode, per_ip=0):
    srv = Server(str(tmp_path), extra=f"registration: {mode}\n"
                 f"limits.registrations_per_ip: {per_ip}\n")
    return srv


@pytest.fixture
def reg_server(request, tmp_path):
    mode, per_ip = request.param
    srv = make_server(tmp_path, mode, per_ip)
    yield srv
    rc = srv.stop()
    log = srv.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
    assert rc == 0, log[-5000:]


class PreAuth:
    """A TLS stream before authentication, for registration IQs."""

    def __init__(self, server):
        s = raw_connect(server.c2s)
        s.sendall((STREAM_HEADER % DOMAIN).encode())
        recv_until(s, b"</stream:features>")
        s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in recv_until(s, b"/>")
        self.sock = ssl.create_default_context(cafile=server.cert).wrap_socket(
            s, server_hostname=DOMAIN)
        self.sock.sendall((STREAM_HEADER % DOMAIN).encode())
        self.features = recv_until(self.sock, b"</stream:features>").decode()
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.parser.feed("<stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams'>")
        self.depth = 0
        self.n = 0

    def next_stanza(self, timeout=10):
        self.sock.settimeout(timeout)
        while True:
            for ev, el in self.parser.read_events():
                self.depth += 1 if ev == "start" else -1
                if ev == "end" and self.depth == 1:
                    return el
            data = self.sock.recv(65536)
            assert data, "stream closed"
            self.parser.feed(data)

    def iq(self, type, payload):
        self.n += 1
        i = f"reg{self.n}"
        self.sock.sendall(f"<iq type='{type}' id='{i}'>{payload}</iq>".encode())
        e = self.next_stanza()
        assert e.tag == C + "iq" and e.get("id") == i, ET.tostring(e)
        return e

    def register(self, user, password=PASSWORD):
        return self.iq("set", f"<query xmlns='{NS}'><username>{user}</username>"
                       f"<password>{password}</password></query>")

    def close(self):
        self.sock.close()


def cond(e):
    assert e.get("type") == "error", ET.tostring(e)
    return [x.tag.split("}")[1] for x in e.find(C + "error") if x.tag.startswith(STANZAS)][0]


def can_login(server, user, password=PASSWORD):
    async def run():
        c = Client(f"{user}@{DOMAIN}/t", password, cafile=server.cert, mech="SCRAM-SHA-256",
                   channel_binding=False)
        ok = await c.login(server.c2s, presence=False)
        await c.close()
        return ok
    return asyncio.run(run())


def test_off_by_default(server):
    server.start()
    p = PreAuth(server)
    assert "iq-register" not in p.features
    # Not offered: the IQ is not taken before authentication at all.
    p.sock.sendall(f"<iq type='get' id='x'><query xmlns='{NS}'/></iq>".encode())
    data = recv_until(p.sock, b"</stream:stream>").decode()
    assert "not-authorized" in data
    assert server.ctl("list").stdout.strip() == ""


@pytest.mark.parametrize("reg_server", [("open", 0)], indirect=True)
def test_open_registration(reg_server):
    server = reg_server
    server.start()
    p = PreAuth(server)
    assert "<register xmlns='http://jabber.org/features/iq-register'/>" in p.features
    assert "ibr-token" not in p.features
    form = p.iq("get", f"<query xmlns='{NS}'/>")
    q = form.find(R + "query")
    assert q.find(R + "username") is not None and q.find(R + "password") is not None
    assert cond(p.register("", "x")) == "not-acceptable"  # §3.1: fields missing
    assert cond(p.register("bad@name", "x")) == "not-acceptable"
    assert p.register("Newbie").get("type") == "result"
    assert cond(p.register("another")) == "not-allowed"  # one per connection
    p.close()
    p = PreAuth(server)
    assert cond(p.register("newbie")) == "conflict"  # normalized: Newbie == newbie
    p.close()
    assert f"newbie@{DOMAIN}" in server.ctl("list").stdout
    assert can_login(server, "newbie")
    assert not can_login(server, "newbie", "wrong password")


@pytest.mark.parametrize("reg_server", [("open", 2)], indirect=True)
def test_per_ip_limit(reg_server):
    server = reg_server
    server.start()
    for i in range(2):
        p = PreAuth(server)
        assert p.register(f"user{i}").get("type") == "result"
        p.close()
    p = PreAuth(server)
    e = p.register("user3")
    assert cond(e) == "policy-violation"
    p.close()
    assert "user3" not in server.ctl("list").stdout


def test_key_derivations_are_capped_server_wide(tmp_path):
    """At most 8 accounts have their SCRAM keys derived at once, whatever
    the addresses asking: the rest get resource-constraint (type wait) and
    nothing is written for them."""
    srv = Server(str(tmp_path), extra="registration: open\nlimits.registrations_per_ip: 0\n"
                 # slow derivations, so that 12 requests overlap
                 "scram_iterations: 300000\n")
    srv.start()
    try:
        streams = [PreAuth(srv) for _ in range(12)]
        for i, p in enumerate(streams):
            p.sock.sendall(f"<iq type='set' id='cap'><query xmlns='{NS}'><username>u{i}"
                           f"</username><password>{PASSWORD}</password></query></iq>".encode())
        answers = [p.next_stanza(timeout=120) for p in streams]
        ok = [i for i, e in enumerate(answers) if e.get("type") == "result"]
        busy = [i for i, e in enumerate(answers) if e.get("type") == "error"]
        assert len(ok) >= 8 and busy, [ET.tostring(e) for e in answers]
        for i in busy:
            assert cond(answers[i]) == "resource-constraint"
            assert answers[i].find(C + "error").get("type") == "wait"
        listed = srv.ctl("list").stdout.split()
        assert sorted(listed) == sorted(f"u{i}@{DOMAIN}" for i in ok)
        for p in streams:
            p.close()
        assert "key derivations running already" in srv.log()
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("reg_server", [("invite", 0)], indirect=True)
def test_invite_only(reg_server):
    server = reg_server
    uri = server.ctl("invite", DOMAIN).stdout.strip()
    assert uri.startswith(f"xmpp:{DOMAIN}?register;preauth=")
    token = uri.split("preauth=")[1]
    server.start()
    p = PreAuth(server)
    assert "<register xmlns='urn:xmpp:ibr-token:0'/>" in p.features
    assert cond(p.register("nobody")) == "not-allowed"  # no invitation yet
    e = p.iq("set", "<preauth xmlns='urn:xmpp:pars:0' token='wrong'/>")
    assert cond(e) == "item-not-found"
    assert p.iq("set", f"<preauth xmlns='urn:xmpp:pars:0' token='{token}'/>") \
        .get("type") == "result"
    assert p.register("invited").get("type") == "result"
    p.close()
    # One use only.
    p = PreAuth(server)
    assert cond(p.iq("set", f"<preauth xmlns='urn:xmpp:pars:0' token='{token}'/>")) == \
        "item-not-found"
    p.close()
    assert can_login(server, "invited")


@pytest.mark.parametrize("reg_server", [("open", 0)], indirect=True)
def test_aioxmpp_registers(reg_server):
    """aioxmpp's IBR client (slixmpp 1.8 from Debian holds every IQ back
    until a session starts, so it cannot register in band at all)."""
    import aioxmpp
    import aioxmpp.connector
    import aioxmpp.ibr
    import aioxmpp.node
    server = reg_server
    server.start()

    async def run():
        meta = aioxmpp.make_security_layer(None, no_verify=True)
        _, stream, features = await aioxmpp.node.connect_xmlstream(
            aioxmpp.JID.fromstr(DOMAIN), meta,
            override_peer=[("127.0.0.1", server.c2s, aioxmpp.connector.STARTTLSConnector())])
        q = await aioxmpp.ibr.get_registration_fields(stream)
        assert q.username == "" or q.username is not None
        await aioxmpp.ibr.register(stream, aioxmpp.ibr.Query("fresh", "s3cret pass"))
        # (aioxmpp's register() does not look at the answer: a refusal,
        # one account per connection, shows in the account list.)
        await aioxmpp.ibr.register(stream, aioxmpp.ibr.Query("again", "x"))
        stream.close()

    asyncio.run(run())
    assert can_login(server, "fresh", "s3cret pass")
    assert "again" not in server.ctl("list").stdout


def test_password_change(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    r = a.iq("get", f"<query xmlns='{NS}'/>", to=DOMAIN)
    q = r.find(R + "query")
    assert q.find(R + "registered") is not None and q.findtext(R + "username") == "alice"
    # Only one's own account; never an empty password (§3.3).
    r = a.iq("set", f"<query xmlns='{NS}'><username>bob</username><password>x</password>"
             "</query>", to=DOMAIN)
    assert cond(r) == "not-allowed"
    r = a.iq("set", f"<query xmlns='{NS}'><username>alice</username><password/></query>",
             to=DOMAIN)
    assert cond(r) == "bad-request"
    r = a.iq("set", f"<query xmlns='{NS}'><username>alice</username>"
             "<password>new secret</password></query>", to=DOMAIN)
    assert r.get("type") == "result", ET.tostring(r)
    a.close()
    assert can_login(server, "alice", "new secret")
    assert not can_login(server, "alice", PASSWORD)

    async def slix_change():  # and once more through slixmpp's XEP-0077 plugin
        c = Client(f"alice@{DOMAIN}/t", "new secret", cafile=server.cert,
                   mech="SCRAM-SHA-256", channel_binding=False)
        c.register_plugin("xep_0077")
        assert await c.login(server.c2s, presence=False)
        await c["xep_0077"].change_password("third one", jid=DOMAIN, timeout=10)
        await c.close()

    asyncio.run(slix_change())
    assert can_login(server, "alice", "third one")


def test_account_removal(server):
    for u in ("alice", "bob", "carol"):
        server.adduser(u)
    server.start()
    a = online(server, "alice")
    a2 = Raw(server, "alice", "second")
    b = online(server, "bob")
    c = online(server, "carol")
    befriend(a, b)
    befriend(b, a)  # alice <-> bob: both
    befriend(c, a)  # carol -> alice: carol 'to' alice
    for x in (a, b, c):
        x.drain(0.3)
    r = a.iq("set", f"<query xmlns='{NS}'><remove/><username>x</username></query>")
    assert cond(r) == "bad-request"  # §3.2: <remove/> alone
    a.send(f"<iq type='set' id='bye'><query xmlns='{NS}'><remove/></query></iq>")
    res = a.expect(lambda e: e.get("id") == "bye")
    assert res.get("type") == "result"
    # §3.2: every session ends with not-authorized.
    for x in (a, a2):
        data = recv_until(x.sock, b"</stream:stream>", timeout=5)
        assert b"not-authorized" in data or x.closed, data
    # The contacts see the subscriptions cancelled (RFC 6121 §3.2, §3.3).
    bare = f"alice@{DOMAIN}"
    b.expect_presence(bare, "unsubscribe")
    b.expect_presence(bare, "unsubscribed")
    _, q = b.push(bare, subscription="none")
    c.expect_presence(bare, "unsubscribed")
    assert "alice" not in server.ctl("list").stdout
    assert not can_login(server, "alice")
    for x in (b, c):
        x.close()


def test_account_removal_closes_streams_not_yet_bound(server):
    """A stream that authenticated but has not bound a resource yet is not
    among the account's sessions; removal must close it too, or it would
    bind to an account that no longer exists."""
    import base64
    server.adduser("alice")
    server.start()
    a = online(server, "alice")
    s = raw_connect(server.c2s)
    s.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in recv_until(s, b"/>")
    t = ssl.create_default_context(cafile=server.cert).wrap_socket(s, server_hostname=DOMAIN)
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(t, b"</stream:features>")
    auth = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    t.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
              .encode())
    assert b"<success" in recv_until(t, b"</success>")
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    assert b"<bind" in recv_until(t, b"</stream:features>")
    a.send(f"<iq type='set' id='bye'><query xmlns='{NS}'><remove/></query></iq>")
    assert a.expect(lambda e: e.get("id") == "bye").get("type") == "result"
    data = recv_until(t, b"</stream:stream>", timeout=5)
    assert b"not-authorized" in data, data
    # Nothing more is taken on it: a bind now gets no answer.
    try:
        t.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        assert b"type='result'" not in recv_until(t, b"</iq>", timeout=2)
    except OSError:
        pass
    assert "closing an unbound stream of alice@localhost" in server.log()
