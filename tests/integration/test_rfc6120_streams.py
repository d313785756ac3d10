"""RFC 6120 streams: features at each stage, binding, STARTTLS edge cases,
keepalives, the handshake timeout and the TLS versions on offer.

Byte-exact wire behaviour lives in tests/transcripts/; these tests parse the
XML instead, for behaviour that is about content rather than form.
"""
import asyncio
import base64
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import DOMAIN, PASSWORD, Server, raw_connect
from xmpp_client import connect

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_LIMITS = "urn:xmpp:stream-limits:0"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CLIENT = "jabber:client"
HEADER = (f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' "
          f"xmlns:stream='{NS_STREAMS}' to='{DOMAIN}' version='1.0'>")


def q(ns, name):
    return f"{{{ns}}}{name}"


class StreamClosed(Exception):
    pass


class RawStream:
    """A client speaking XMPP by hand: one XML parser per stream, parsed
    top-level elements returned one at a time."""

    def __init__(self, server, direct_tls=False, alpn=None):
        self.server = server
        port = server.c2s_tls if direct_tls else server.c2s
        self.sock = raw_connect(port, tls=direct_tls, cafile=server.cert, alpn=alpn)
        self.parser = None
        self.depth = 0
        self.elements = []
        self.header = None
        self.closed = False  # </stream:stream> seen
        self.eof = False

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _feed(self, data):
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
                if self.depth == 1:
                    self.header = el
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.elements.append(el)
                elif self.depth == 0:
                    self.closed = True

    def _read(self, deadline):
        remaining = deadline - time.time()
        if remaining <= 0 or self.eof:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLEOFError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self._feed(chunk)
        return True

    def open(self, header=HEADER, timeout=10):
        """Starts a stream; returns the features element."""
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.header = None
        self.send(header)
        return self.element(timeout)

    def element(self, timeout=10):
        """The next top-level element; raises StreamClosed at the end."""
        deadline = time.time() + timeout
        while not self.elements:
            if self.closed or self.eof:
                raise StreamClosed()
            if not self._read(deadline):
                if self.eof or self.closed:
                    raise StreamClosed()
                raise TimeoutError("no element within %ss" % timeout)
        return self.elements.pop(0)

    def nothing_for(self, seconds):
        """True if nothing at all arrives for that long."""
        deadline = time.time() + seconds
        while self._read(deadline):
            pass
        return not self.elements and not self.eof and not self.closed

    def starttls(self):
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = self.element()
        assert el.tag == q(NS_TLS, "proceed"), ET.tostring(el)
        self.tls_upgrade()

    def tls_upgrade(self):
        ctx = self.server.ssl_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)

    def auth(self, user, features=None):
        """SASL PLAIN; opens the stream first unless its features are given."""
        features = features if features is not None else self.open()
        assert features.find(q(NS_SASL, "mechanisms")) is not None, ET.tostring(features)
        creds = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>")
        el = self.element()
        assert el.tag == q(NS_SASL, "success"), ET.tostring(el)
        return self.open()

    def login(self, user):
        """STARTTLS and SASL; returns the features of the authenticated stream."""
        self.open()
        self.starttls()
        return self.auth(user)

    def bind(self, resource_xml, id="bind1"):
        self.send(f"<iq type='set' id='{id}'><bind xmlns='{NS_BIND}'>{resource_xml}</bind></iq>")
        return self.element()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def children(el):
    return [c.tag for c in el]


def stream_error(el):
    assert el.tag == q(NS_STREAMS, "error"), ET.tostring(el)
    conds = [c.tag for c in el if c.tag != q(NS_STREAM_ERRORS, "text")]
    assert len(conds) == 1, ET.tostring(el)
    return conds[0].split("}")[1]


@pytest.fixture
def alice(server):
    server.adduser("alice")
    server.start()
    streams = []

    def make(**kw):
        s = RawStream(server, **kw)
        streams.append(s)
        return s

    yield make
    for s in streams:
        s.close()


# --- stream features --------------------------------------------------------

def test_features_before_tls_offer_only_required_starttls_and_limits(alice):
    s = alice()
    f = s.open()
    assert s.header.tag == q(NS_STREAMS, "stream")
    assert s.header.get("version") == "1.0"
    assert s.header.get("from") == DOMAIN
    assert s.header.get("id")
    assert children(f) == [q(NS_TLS, "starttls"), q(NS_LIMITS, "limits")]
    assert children(f.find(q(NS_TLS, "starttls"))) == [q(NS_TLS, "required")]
    # XEP-0478: before authentication the smaller limit applies (16k).
    limits = f.find(q(NS_LIMITS, "limits"))
    assert limits.findtext(q(NS_LIMITS, "max-bytes")) == "16384"
    assert limits.findtext(q(NS_LIMITS, "idle-seconds")) == "840"


def test_features_after_tls_offer_mechanisms_and_channel_binding(alice):
    s = alice()
    s.open()
    s.starttls()
    f = s.open()
    assert q(NS_TLS, "starttls") not in children(f)
    assert q(NS_BIND, "bind") not in children(f)
    mechs = [m.text for m in f.find(q(NS_SASL, "mechanisms"))]
    for m in ("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "PLAIN"):
        assert m in mechs, mechs
    # XEP-0440: the channel-binding types; on TLS 1.3 both.
    assert s.sock.version() == "TLSv1.3"
    cb = f.find(q(NS_SASL_CB, "sasl-channel-binding"))
    assert cb is not None, ET.tostring(f)
    types = [c.get("type") for c in cb]
    assert sorted(types) == ["tls-exporter", "tls-server-end-point"]
    assert f.find(q(NS_LIMITS, "limits")).findtext(q(NS_LIMITS, "max-bytes")) == "16384"


def test_features_after_auth_offer_bind_and_optional_session(alice):
    s = alice()
    f = s.login("alice")
    assert q(NS_SASL, "mechanisms") not in children(f)
    assert q(NS_TLS, "starttls") not in children(f)
    assert f.find(q(NS_BIND, "bind")) is not None
    session = f.find(q(NS_SESSION, "session"))
    assert session is not None and children(session) == [q(NS_SESSION, "optional")]
    # After authentication the full stanza limit (256k by default).
    assert f.find(q(NS_LIMITS, "limits")).findtext(q(NS_LIMITS, "max-bytes")) == "262144"


def test_sasl_before_tls_is_refused(alice):
    """RFC 6120 §5.3.1: with TLS required, no SASL in the clear."""
    s = alice()
    s.open()
    creds = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    s.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>")
    el = s.element()
    assert el.tag == q(NS_SASL, "failure")
    assert children(el) == [q(NS_SASL, "encryption-required")]


# --- resource binding -------------------------------------------------------

def test_bind_echoes_full_jid(alice):
    s = alice()
    s.login("alice")
    iq = s.bind("<resource>phone</resource>")
    assert iq.get("type") == "result" and iq.get("id") == "bind1"
    assert iq.get("to") == f"alice@{DOMAIN}/phone"
    assert iq.findtext(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}") == f"alice@{DOMAIN}/phone"


def test_bind_result_carries_normalized_resource(alice):
    """RFC 7622 §3.4: the resource is normalized (NFC), and the bind result
    tells the client the JID actually bound."""
    s = alice()
    s.login("alice")
    iq = s.bind("<resource>cafe\u0301</resource>")
    assert iq.get("type") == "result", ET.tostring(iq)
    assert iq.findtext(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}") == f"alice@{DOMAIN}/caf\u00e9"


def test_bind_without_resource_gets_server_generated_one(alice):
    """RFC 6120 §7.6: an empty bind request gets a resource from the server,
    a different one for each stream."""
    jids = []
    for _ in range(2):
        s = alice()
        s.login("alice")
        iq = s.bind("")
        assert iq.get("type") == "result", ET.tostring(iq)
        jid = iq.findtext(f"{q(NS_BIND, 'bind')}/{q(NS_BIND, 'jid')}")
        assert jid.startswith(f"alice@{DOMAIN}/") and len(jid) > len(f"alice@{DOMAIN}/") + 4
        assert iq.get("to") == jid
        jids.append(jid)
    assert jids[0] != jids[1]


@pytest.mark.parametrize("resource", ["a&#9;b", "x" * 1024], ids=["control-char", "too-long"])
def test_bind_invalid_resource_is_bad_request(alice, resource):
    """RFC 6120 §7.7.2.1: a resource that cannot be prepared: bad-request,
    and the stream stays usable for another attempt."""
    s = alice()
    s.login("alice")
    iq = s.bind(f"<resource>{resource}</resource>")
    assert iq.get("type") == "error" and iq.get("id") == "bind1", ET.tostring(iq)
    err = iq.find(q(NS_CLIENT, "error"))
    assert err is not None and err.get("type") == "modify", ET.tostring(iq)
    assert err.find(q(NS_STANZAS, "bad-request")) is not None, ET.tostring(iq)
    iq = s.bind("<resource>ok</resource>", id="bind2")
    assert iq.get("type") == "result", ET.tostring(iq)


@pytest.mark.parametrize("when", ["before-bind", "after-bind"])
def test_rfc3921_session_iq_returns_result(alice, when):
    """RFC 6121 Appendix E: the legacy session request gets an empty result."""
    s = alice()
    s.login("alice")
    if when == "after-bind":
        assert s.bind("<resource>r</resource>").get("type") == "result"
    s.send(f"<iq type='set' id='sess1'><session xmlns='{NS_SESSION}'/></iq>")
    iq = s.element()
    assert iq.tag == q(NS_CLIENT, "iq")
    assert iq.get("type") == "result" and iq.get("id") == "sess1", ET.tostring(iq)
    assert len(iq) == 0
    # The stream goes on.
    s.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
           if when == "after-bind" else "<iq type='set' id='b'><bind xmlns='%s'/></iq>" % NS_BIND)
    assert s.element().get("type") == "result"


# --- STARTTLS ---------------------------------------------------------------

def test_stanza_after_starttls_in_same_segment_is_discarded(alice):
    """RFC 6120 §5.4.3.3: what follows <starttls/> in the clear is never
    processed, even when it arrives in the same read."""
    s = alice()
    s.open()
    marker = "smuggled-7f3a"
    # Processed in the clear, either element would show: the iq as a
    # stream error, the auth as a SASL exchange in the log.
    creds = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    s.send(f"<starttls xmlns='{NS_TLS}'/>"
           f"<iq type='get' id='{marker}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
           f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>")
    el = s.element()
    assert el.tag == q(NS_TLS, "proceed")
    # Nothing else arrives in the clear, and the connection stays open.
    assert s.nothing_for(0.5)
    s.tls_upgrade()
    f = s.open()
    # Not authenticated by the smuggled <auth/>: SASL is offered again.
    assert f.find(q(NS_SASL, "mechanisms")) is not None
    s.auth("alice", f)
    s.bind("<resource>r</resource>")
    s.send(f"<iq type='get' id='p2' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    el = s.element()
    assert el.get("id") == "p2", ET.tostring(el)
    assert s.nothing_for(0.3)


def test_stanza_after_starttls_never_reaches_log(server):
    server.adduser("alice")
    server.start()
    s = RawStream(server)
    try:
        s.open()
        marker = "smuggled-91c4"
        s.send(f"<starttls xmlns='{NS_TLS}'/><iq type='get' id='{marker}' to='{DOMAIN}'>"
               f"<ping xmlns='urn:xmpp:ping'/></iq>")
        assert s.element().tag == q(NS_TLS, "proceed")
        s.tls_upgrade()
        s.auth("alice")
        s.bind("<resource>r</resource>")
        s.send(f"<iq type='get' id='p3' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert s.element().get("id") == "p3"
    finally:
        s.close()
    time.sleep(0.2)
    log = server.log()
    # Processed before or after the handshake, the iq would have ended the
    # unauthenticated stream with not-authorized, which the debug log shows.
    assert log.count(f"authenticated alice@{DOMAIN} with PLAIN") == 1, log[-3000:]
    assert marker not in log
    assert "stream error" not in log, log[-3000:]


def test_second_starttls_is_refused(alice):
    """RFC 6120 §5.4.3.1: STARTTLS once only; a second is a policy violation."""
    s = alice()
    s.open()
    s.starttls()
    s.open()
    s.send(f"<starttls xmlns='{NS_TLS}'/>")
    assert stream_error(s.element()) == "policy-violation"


# --- keepalives and timeouts -------------------------------------------------

def test_whitespace_keepalives_are_accepted(alice):
    """RFC 6120 §4.6.1: whitespace between elements, before TLS and after
    binding, needs no answer and breaks nothing."""
    s = alice()
    s.open()
    for _ in range(5):
        s.send(" ")
        time.sleep(0.05)
    s.send("\n\r\n\t")
    s.starttls()
    s.auth("alice")
    s.bind("<resource>r</resource>")
    for _ in range(10):
        s.send(" \n")
        time.sleep(0.1)
    assert s.nothing_for(0.5)
    s.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert s.element().get("type") == "result"


def test_handshake_timeout_closes_idle_unauthenticated(tmp_path):
    srv = Server(str(tmp_path), extra="limits.handshake_timeout: 5")
    srv.adduser("alice")
    srv.start()
    try:
        idle = RawStream(srv)
        t0 = time.time()
        idle.open()
        # A second connection that binds in time must survive the deadline.
        ok = RawStream(srv)
        ok.login("alice")
        ok.bind("<resource>r</resource>")
        err = idle.element(timeout=15)
        elapsed = time.time() - t0
        assert stream_error(err) == "connection-timeout"
        assert 4.5 <= elapsed <= 9, elapsed
        with pytest.raises(StreamClosed):
            idle.element(timeout=5)
        assert idle.closed
        ok.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert ok.element().get("type") == "result"
        idle.close()
        ok.close()
    finally:
        rc = srv.stop()
    assert rc == 0, srv.log()[-3000:]


def test_handshake_timeout_also_applies_after_tls(tmp_path):
    """The deadline covers the whole handshake: TLS done but no SASL."""
    srv = Server(str(tmp_path), extra="limits.handshake_timeout: 5")
    srv.start()
    try:
        s = RawStream(srv)
        t0 = time.time()
        s.open()
        s.starttls()
        s.open()
        assert stream_error(s.element(timeout=15)) == "connection-timeout"
        assert 4.5 <= time.time() - t0 <= 9
        s.close()
    finally:
        rc = srv.stop()
    assert rc == 0, srv.log()[-3000:]


# --- direct TLS and TLS versions ---------------------------------------------

@pytest.mark.parametrize("offer", [["xmpp-client"], ["h2", "xmpp-client"]], ids=["only", "among"])
def test_direct_tls_alpn_selects_xmpp_client(alice, offer):
    s = alice(direct_tls=True, alpn=offer)
    assert s.sock.selected_alpn_protocol() == "xmpp-client"
    f = s.open()
    assert q(NS_TLS, "starttls") not in children(f)
    assert f.find(q(NS_SASL, "mechanisms")) is not None
    creds = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    s.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>")
    assert s.element().tag == q(NS_SASL, "success")
    assert s.open().find(q(NS_BIND, "bind")) is not None


def test_direct_tls_login_with_slixmpp(server):
    server.adduser("alice")
    server.start()

    async def run():
        c = await connect(server, "alice", direct_tls=True)
        await c["xep_0199"].ping(DOMAIN, timeout=5)
        await c.close()

    asyncio.run(run())


def old_tls_context(cafile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def client_can_speak_tls11(server):
    """Control: the same client context completes TLS 1.1 with a local
    Python server, so a refusal by parleyd is parleyd's doing."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server.cert, server.key)
    sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    sctx.minimum_version = ssl.TLSVersion.TLSv1
    sctx.maximum_version = ssl.TLSVersion.TLSv1_1
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    result = {}

    def serve():
        conn, _ = lsock.accept()
        try:
            with sctx.wrap_socket(conn, server_side=True) as t:
                result["version"] = t.version()
        except (ssl.SSLError, OSError) as e:
            result["error"] = e

    th = threading.Thread(target=serve)
    th.start()
    try:
        with socket.create_connection(lsock.getsockname(), timeout=5) as c:
            with old_tls_context(server.cert).wrap_socket(c, server_hostname=DOMAIN) as t:
                version = t.version()
    except (ssl.SSLError, OSError):
        version = None
    th.join(5)
    lsock.close()
    return version == "TLSv1.1"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("port", ["c2s_tls", "c2s"])
def test_tls11_and_below_refused(server, port):
    server.start()
    if not client_can_speak_tls11(server):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 even as a client")
    sock = socket.create_connection(("127.0.0.1", getattr(server, port)), timeout=10)
    try:
        if port == "c2s":
            sock.sendall(HEADER.encode())
            sock.settimeout(10)
            got = b""
            while b"</stream:features>" not in got:
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
            sock.sendall(f"<starttls xmlns='{NS_TLS}'/>".encode())
            got = b""
            while b"<proceed" not in got:
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            old_tls_context(server.cert).wrap_socket(sock, server_hostname=DOMAIN)
    finally:
        sock.close()
    # TLS 1.2 is still accepted.
    ctx = ssl.create_default_context(cafile=server.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.c2s_tls), timeout=10) as c:
        with ctx.wrap_socket(c, server_hostname=DOMAIN) as t:
            assert t.version() == "TLSv1.2"
