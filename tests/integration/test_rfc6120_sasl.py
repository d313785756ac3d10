"""RFC 6120 §6 SASL negotiation: SCRAM-SHA-1/256/512 (RFC 5802, RFC 7677)
with and without channel binding (-PLUS; tls-exporter, RFC 9266;
tls-server-end-point, RFC 5929; offered per XEP-0440), PLAIN (RFC 4616), and
the failure cases of §6.4.5 and §6.5.

Three clients: tests/tools/scram-client (C, OpenSSL; the only one that can
do channel binding, and it verifies the server signature), slixmpp (a real
client library), and raw sockets for exact wire behaviour.
"""
import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import select
import socket
import ssl
import time
import subprocess
import threading

import pytest

from conftest import BUILD, DOMAIN, PASSWORD, Server, raw_connect
from xmpp_client import connect

SCRAM_CLIENT = os.path.join(BUILD, "tests", "tools", "scram-client")
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
STREAM_HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
                 b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
FAILURE_RE = re.compile(rb"<failure xmlns=['\"]" + NS_SASL.encode() + rb"['\"]\s*>.*?</failure>"
                        rb"|<failure xmlns=['\"]" + NS_SASL.encode() + rb"['\"]\s*/>", re.S)


# --- scram-client ---------------------------------------------------------

def scram_client(server, mech, cb=None, direct=False, tls12=False, user="alice",
                 password=PASSWORD, extra=()):
    """Runs scram-client; returns (exit status, stdout line, offered mechanisms,
    offered channel-binding types)."""
    args = [SCRAM_CLIENT, "--port", str(server.c2s_tls if direct else server.c2s),
            "--ca", server.cert, "--user", user, "--password", password, "--mech", mech]
    if cb:
        args += ["--cb", cb]
    if direct:
        args.append("--direct-tls")
    if tls12:
        args.append("--tls12")
    args += list(extra)
    r = subprocess.run(args, capture_output=True, text=True, timeout=90)
    mechs = cbtypes = None
    for line in r.stderr.splitlines():
        if line.startswith("MECHS"):
            mechs = line.split()[1:]
        elif line.startswith("CBTYPES"):
            cbtypes = line.split()[1:]
    return r.returncode, r.stdout.strip(), mechs, cbtypes


def assert_failed_with(result, condition):
    rc, out, _, _ = result
    assert rc == 1, out
    assert out.startswith("FAIL sasl-failure "), out
    assert f"<failure xmlns='{NS_SASL}'><{condition}/></failure>" in out, out


TRANSPORTS = [pytest.param(False, id="starttls"), pytest.param(True, id="direct-tls")]


@pytest.mark.parametrize("direct", TRANSPORTS)
@pytest.mark.parametrize("cb", [None, "tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("base", list(HASHES))
def test_scram_client_logs_in(server, base, cb, direct):
    server.adduser("alice")
    server.start()
    mech = base + "-PLUS" if cb else base
    rc, out, mechs, cbtypes = scram_client(server, mech, cb, direct)
    assert (rc, out) == (0, f"OK {mech} {cb or 'none'} TLSv1.3")
    assert mechs == ["SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS",
                     "SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert cbtypes == ["tls-exporter", "tls-server-end-point"]
    assert f"authenticated alice@localhost with {mech} " in server.log()


@pytest.mark.parametrize("direct", TRANSPORTS)
@pytest.mark.parametrize("base", list(HASHES))
def test_tls12_offers_end_point_binding_only(server, base, direct):
    """RFC 9266 §3: tls-exporter is for TLS 1.3 (1.2 only with extended
    master secret, which this server does not rely on)."""
    server.adduser("alice")
    server.start()
    rc, out, mechs, cbtypes = scram_client(server, base + "-PLUS", "tls-server-end-point",
                                           direct, tls12=True)
    assert (rc, out) == (0, f"OK {base}-PLUS tls-server-end-point TLSv1.2")
    assert base + "-PLUS" in mechs
    assert cbtypes == ["tls-server-end-point"]

    res = scram_client(server, base + "-PLUS", "tls-exporter", direct, tls12=True)
    assert res[3] == ["tls-server-end-point"]
    assert_failed_with(res, "not-authorized")


@pytest.mark.parametrize("direct", TRANSPORTS)
@pytest.mark.parametrize("cb", ["tls-exporter", "tls-server-end-point"])
def test_wrong_binding_data_fails(server, cb, direct):
    server.adduser("alice")
    server.start()
    assert_failed_with(scram_client(server, "SCRAM-SHA-256-PLUS", cb, direct,
                                    extra=["--bad-cb"]), "not-authorized")
    # The same exchange without the corruption succeeds.
    assert scram_client(server, "SCRAM-SHA-256-PLUS", cb, direct)[0] == 0


def test_unknown_binding_type_fails(server):
    server.adduser("alice")
    server.start()
    assert_failed_with(scram_client(server, "SCRAM-SHA-256-PLUS", "tls-unique"),
                       "not-authorized")


@pytest.mark.parametrize("base", list(HASHES))
def test_gs2_y_while_plus_offered_fails(server, base):
    """RFC 5802 §6: 'y' means the client thinks the server cannot bind; the
    server offered -PLUS, so the list was tampered with."""
    server.adduser("alice")
    server.start()
    assert_failed_with(scram_client(server, base, extra=["--gs2-y"]), "not-authorized")
    assert scram_client(server, base)[0] == 0


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_authzid(server, mech):
    """RFC 6120 §6.3.8: the own bare JID is accepted, anybody else's is not."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    rc, out, _, _ = scram_client(server, mech, extra=["--authzid", "alice@localhost"])
    assert (rc, out) == (0, f"OK {mech} none TLSv1.3")
    assert_failed_with(scram_client(server, mech, extra=["--authzid", "bob@localhost"]),
                       "invalid-authzid")
    assert "authenticated alice@localhost" in server.log()
    assert "authenticated bob@localhost" not in server.log()


# --- slixmpp -------------------------------------------------------------

@pytest.mark.parametrize("direct", TRANSPORTS)
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_slixmpp_login(server, mech, direct):
    server.adduser("alice")
    server.start()

    async def run():
        c = await connect(server, "alice", mech=mech, direct_tls=direct)
        await c["xep_0199"].ping(DOMAIN, timeout=5)
        await c.close()

    asyncio.run(run())
    assert f"authenticated alice@localhost with {mech} " in server.log()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_slixmpp_wrong_password_fails(server, mech):
    server.adduser("alice")
    server.start()

    async def run():
        await connect(server, "alice", mech=mech, password="not the password")

    with pytest.raises(AssertionError, match="login of alice failed"):
        asyncio.run(run())
    assert "authenticated alice" not in server.log()


# --- raw streams -----------------------------------------------------------

class Raw:
    """A stream on a raw socket with a receive buffer kept across reads."""

    def __init__(self, server, tls=True, direct=False):
        self.server = server
        self.buf = b""
        if direct:
            self.sock = raw_connect(server.c2s_tls, tls=True, cafile=server.cert,
                                    alpn=["xmpp-client"])
        else:
            self.sock = raw_connect(server.c2s)
        self.features = self.open()
        if tls and not direct:
            assert b"<starttls" in self.features
            self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            self.read(rb"<proceed[^>]*/>")
            assert self.buf == b""
            self.sock = server.ssl_context().wrap_socket(self.sock, server_hostname=DOMAIN)
            self.features = self.open()

    def send(self, data):
        self.sock.sendall(data)

    def read(self, pattern, timeout=10):
        """Reads until pattern (bytes regex) matches; consumes and returns
        everything up to the end of the match. Fails on close/timeout."""
        rx = re.compile(pattern, re.S)
        self.sock.settimeout(timeout)
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                raise AssertionError(f"no {pattern!r} in {self.buf!r}")
            self.buf += chunk

    def read_to_close(self, timeout=10):
        self.sock.settimeout(timeout)
        data = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        out, self.buf = self.buf + data, b""
        return out

    def open(self):
        self.send(STREAM_HEADER)
        return self.read(rb"</stream:features>")

    def auth(self, mech, data=None):
        """Sends <auth/>; returns the server's answer element."""
        payload = "" if data is None else base64.b64encode(data).decode() or "="
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{payload}</auth>".encode())
        return self.sasl_answer()

    def response(self, data):
        payload = base64.b64encode(data).decode() or "="
        self.send(f"<response xmlns='{NS_SASL}'>{payload}</response>".encode())
        return self.sasl_answer()

    def sasl_answer(self):
        return self.read(rb"<(challenge|success)[^>]*/>|</(challenge|success|failure)>"
                         rb"|<failure[^>]*/>|</stream:stream>")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def mechanisms(features):
    m = re.search(rb"<mechanisms[^>]*>(.*?)</mechanisms>", features, re.S)
    return [x.decode() for x in re.findall(rb"<mechanism>([^<]*)</mechanism>", m.group(1))] \
        if m else []


def challenge_data(answer):
    m = re.search(rb"<challenge[^>]*>([^<]*)</challenge>", answer)
    assert m, answer
    return base64.b64decode(m.group(1))


def failure_condition(answer):
    m = FAILURE_RE.search(answer)
    assert m, answer
    c = re.search(rb"<failure[^>]*>\s*<([a-z-]+)", m.group(0))
    return c.group(1).decode() if c else None


def is_success(answer):
    """<success/> without additional data (RFC 6120 §6.4.6), in either form."""
    return re.fullmatch(rb"<success xmlns='" + NS_SASL.encode() +
                        rb"'\s*(/>|>\s*</success>)", answer) is not None


def plain(user, password, authzid=""):
    return f"{authzid}\0{user}\0{password}".encode()


def scram_start(raw, mech, user, gs2="n,,"):
    """Sends client-first; returns (client-first-bare, server-first, fields)."""
    cnonce = secrets.token_urlsafe(18)
    bare = f"n={user},r={cnonce}"
    server_first = challenge_data(raw.auth(mech, gs2.encode() + bare.encode())).decode()
    raw.gs2 = gs2.encode()
    fields = dict(f.split("=", 1) for f in server_first.split(","))
    assert fields["r"].startswith(cnonce) and len(fields["r"]) > len(cnonce), server_first
    return bare, server_first, fields


def scram_finish(raw, mech, bare, server_first, fields, password, cb_data=b""):
    """Sends client-final with a proof from password; returns the answer."""
    h = HASHES[mech.replace("-PLUS", "")]
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", h)
    without_proof = f"c={base64.b64encode(raw.gs2 + cb_data).decode()},r={fields['r']}"
    auth_msg = f"{bare},{server_first},{without_proof}".encode()
    sig = hmac.digest(hashlib.new(h, client_key).digest(), auth_msg, h)
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    answer = raw.response(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    return answer, hmac.digest(hmac.digest(salted, b"Server Key", h), auth_msg, h)


@pytest.mark.parametrize("mech", list(HASHES))
def test_raw_scram_success_carries_server_signature(server, mech):
    """RFC 6120 §6.3.10: the server-final message rides in <success/>."""
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    answer, server_sig = scram_finish(raw, mech, *scram_start(raw, mech, "alice"), PASSWORD)
    m = re.search(rb"<success[^>]*>([^<]+)</success>", answer)
    assert m, answer
    assert base64.b64decode(m.group(1)) == b"v=" + base64.b64encode(server_sig)
    raw.close()


def openssl_cert(server, kind):
    """Replaces the server's certificate with one signed with another hash."""
    if kind == "ec-p256-sha256":
        return hashlib.sha256
    key = {"ec-p384-sha384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384"],
           "rsa-sha512": ["-newkey", "rsa:2048", "-sha512"],
           "rsa-sha1": ["-newkey", "rsa:2048", "-sha1"]}[kind]
    subprocess.run(["openssl", "req", "-x509", *key, "-nodes", "-keyout", server.key,
                    "-out", server.cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    text = subprocess.run(["openssl", "x509", "-in", server.cert, "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    algo = re.search(r"Signature Algorithm: (\S+)", text).group(1).lower()
    # RFC 5929 §4.1: the certificate's signature hash; MD5 and SHA-1 become SHA-256.
    for name, fn in [("sha512", hashlib.sha512), ("sha384", hashlib.sha384),
                     ("sha256", hashlib.sha256), ("sha1", hashlib.sha256)]:
        if name in algo:
            return fn
    raise AssertionError(algo)


@pytest.mark.parametrize("kind", ["ec-p256-sha256", "ec-p384-sha384", "rsa-sha512", "rsa-sha1"])
def test_raw_tls_server_end_point(server, kind):
    """The binding data computed here independently of the server and of
    scram-client (which share the way to pick the hash)."""
    hash_fn = openssl_cert(server, kind)
    server.adduser("alice")
    server.start()
    for direct in (False, True):
        raw = Raw(server, direct=direct)
        assert b"<channel-binding type='tls-server-end-point'/>" in raw.features
        cb_data = hash_fn(raw.sock.getpeercert(binary_form=True)).digest()
        mech = "SCRAM-SHA-256-PLUS"
        start = scram_start(raw, mech, "alice", gs2="p=tls-server-end-point,,")
        answer, _ = scram_finish(raw, mech, *start, PASSWORD, cb_data=cb_data)
        assert answer.startswith(b"<success"), (kind, answer)
        raw.close()


@pytest.mark.parametrize("gs2", ["n,,", "y,,"])
def test_scram_in_the_clear_when_tls_optional(optional_tls_server, gs2):
    """Without TLS there is no binding to offer: no -PLUS, and 'y' is
    right (RFC 5802 §6), so it must not be refused."""
    server = optional_tls_server
    server.adduser("alice")
    server.start()
    raw = Raw(server, tls=False)
    assert failure_condition(raw.auth("SCRAM-SHA-256-PLUS", b"p=tls-exporter,,n=alice,r=abc")) \
        == "invalid-mechanism"
    answer, sig = scram_finish(raw, "SCRAM-SHA-256",
                               *scram_start(raw, "SCRAM-SHA-256", "alice", gs2=gs2), PASSWORD)
    m = re.search(rb"<success[^>]*>([^<]+)</success>", answer)
    assert m and base64.b64decode(m.group(1)) == b"v=" + base64.b64encode(sig), answer
    raw.close()


def test_scram_without_initial_response(server):
    """RFC 6120 §6.4.2: no initial response: an empty challenge first."""
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    raw.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'/>".encode())
    empty = raw.sasl_answer()
    assert re.fullmatch(rb"<challenge xmlns='" + NS_SASL.encode() +
                        rb"'\s*(/>|>=?</challenge>)", empty), empty
    cnonce = "fyko+d2lbbFgONRv9qkxdawL"
    bare = f"n=alice,r={cnonce}"
    server_first = challenge_data(raw.response(b"n,," + bare.encode())).decode()
    raw.gs2 = b"n,,"
    fields = dict(f.split("=", 1) for f in server_first.split(","))
    assert fields["r"].startswith(cnonce)
    answer, _ = scram_finish(raw, "SCRAM-SHA-256", bare, server_first, fields, PASSWORD)
    assert answer.startswith(b"<success"), answer
    raw.close()


@pytest.mark.parametrize("mech", list(HASHES))
def test_unknown_user_looks_like_wrong_password_scram(server, mech):
    """An unknown account must not be told apart from a wrong password: the
    same server-first structure, a salt that is stable across attempts, and
    byte-identical failures."""
    server.adduser("alice")
    server.start()
    seen = {}
    for user, password in [("alice", "wrong password"), ("nobody", PASSWORD),
                           ("alice", "wrong again"), ("nobody", "other")]:
        raw = Raw(server)
        bare, server_first, fields = scram_start(raw, mech, user)
        answer, _ = scram_finish(raw, mech, bare, server_first, fields, password)
        raw.close()
        cnonce_len = len(bare.split("r=", 1)[1])
        shape = (list(fields), len(fields["r"]) - cnonce_len,
                 len(base64.b64decode(fields["s"])), fields["i"], answer)
        seen.setdefault(user, []).append((fields["s"], shape))
    (salt_a1, shape_a1), (salt_a2, shape_a2) = seen["alice"]
    (salt_n1, shape_n1), (salt_n2, shape_n2) = seen["nobody"]
    assert shape_a1 == shape_n1 == shape_a2 == shape_n2
    assert shape_a1[3] == "4096"
    assert shape_a1[4] == f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>".encode()
    # A real account's salt does not change between attempts; a fake one
    # must not either, or a second attempt gives the unknown name away.
    assert salt_a1 == salt_a2
    assert salt_n1 == salt_n2
    assert salt_n1 != salt_a1


def test_unknown_user_looks_like_wrong_password_plain(server):
    server.adduser("alice")
    server.start()
    answers = []
    for user, password in [("alice", "wrong password"), ("nobody", PASSWORD)]:
        raw = Raw(server)
        answers.append(raw.auth("PLAIN", plain(user, password)))
        raw.close()
    assert answers[0] == answers[1] == \
        f"<failure xmlns='{NS_SASL}'><not-authorized/></failure>".encode()


def test_auth_before_starttls_requires_encryption(server):
    server.adduser("alice")
    server.start()
    raw = Raw(server, tls=False)
    assert re.search(rb"<starttls[^>]*><required/></starttls>", raw.features), raw.features
    assert b"<mechanisms" not in raw.features
    # Correct credentials: a server that took them would authenticate.
    answer = raw.auth("PLAIN", plain("alice", PASSWORD))
    assert answer == f"<failure xmlns='{NS_SASL}'><encryption-required/></failure>".encode()
    raw.send(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    rest = raw.read_to_close()
    assert b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in rest, rest
    assert b"<success" not in rest and b"type='result'" not in rest
    assert "authenticated alice" not in server.log()
    raw.close()


@pytest.fixture
def optional_tls_server(tmp_path):
    srv = Server(str(tmp_path), extra="c2s_require_encryption: false")
    yield srv
    rc = srv.stop()
    log = srv.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
    assert rc == 0, f"parleyd exited with {rc}\n{log[-5000:]}"


def test_no_plain_before_tls(optional_tls_server):
    """RFC 4616 §6 / RFC 6120 §13.8: no cleartext passwords on a cleartext
    stream, even where TLS is optional."""
    server = optional_tls_server
    server.adduser("alice")
    server.start()
    raw = Raw(server, tls=False)
    assert re.search(rb"<starttls[^>]*>\s*</starttls>|<starttls[^>]*/>", raw.features), \
        raw.features
    mechs = mechanisms(raw.features)
    assert mechs == ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1"], raw.features
    assert b"sasl-channel-binding" not in raw.features
    answer = raw.auth("PLAIN", plain("alice", PASSWORD))
    assert failure_condition(answer) == "invalid-mechanism"
    raw.close()
    assert "authenticated alice" not in server.log()
    # PLAIN is enabled: it is the cleartext stream that keeps it out.
    raw = Raw(server)
    assert "PLAIN" in mechanisms(raw.features)
    assert is_success(raw.auth("PLAIN", plain("alice", PASSWORD)))
    raw.close()


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256"])
def test_three_failures_close_stream(server, mech):
    """RFC 6120 §6.4.5: the server may limit retries; here after three
    failures the stream ends with policy-violation."""
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    for attempt in range(3):
        if mech == "PLAIN":
            answer = raw.auth("PLAIN", plain("alice", f"wrong {attempt}"))
        else:
            answer, _ = scram_finish(raw, mech, *scram_start(raw, mech, "alice"), "wrong")
        assert failure_condition(answer) == "not-authorized"
        if attempt < 2:
            continue
        rest = raw.read_to_close()
        assert re.match(rb"<stream:error><policy-violation xmlns="
                        rb"'urn:ietf:params:xml:ns:xmpp-streams'/>.*</stream:error>"
                        rb"</stream:stream>$", rest, re.S), rest
    raw.close()


def test_two_failures_then_success(server):
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    for attempt in range(2):
        assert failure_condition(raw.auth("PLAIN", plain("alice", "wrong"))) == \
            "not-authorized"
    assert is_success(raw.auth("PLAIN", plain("alice", PASSWORD)))
    raw.close()


@pytest.mark.parametrize("mech", ["DIGEST-MD5", "SCRAM-SHA-384", "scram-sha-256", ""])
def test_unknown_mechanism(server, mech):
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    answer = raw.auth(mech, plain("alice", PASSWORD))
    assert answer == f"<failure xmlns='{NS_SASL}'><invalid-mechanism/></failure>".encode()
    raw.close()
    assert "authenticated alice" not in server.log()


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256"])
def test_bad_base64(server, mech):
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    good = base64.b64encode(plain("alice", PASSWORD)).decode()
    # Valid characters with a stray '*' in the middle: not base64.
    raw.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{good[:8]}*{good[8:]}</auth>"
             .encode())
    answer = raw.sasl_answer()
    assert answer == f"<failure xmlns='{NS_SASL}'><incorrect-encoding/></failure>".encode()
    raw.close()


def test_abort(server):
    """RFC 6120 §6.4.4: <abort/> ends the exchange with <aborted/>; the
    stream stays open for another attempt."""
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    scram_start(raw, "SCRAM-SHA-256", "alice")
    raw.send(f"<abort xmlns='{NS_SASL}'/>".encode())
    assert raw.sasl_answer() == f"<failure xmlns='{NS_SASL}'><aborted/></failure>".encode()
    answer, server_sig = scram_finish(raw, "SCRAM-SHA-256",
                                      *scram_start(raw, "SCRAM-SHA-256", "alice"), PASSWORD)
    assert answer.startswith(b"<success"), answer
    raw.close()


def test_response_after_abort_is_not_accepted(server):
    """The aborted exchange must be gone: a client-final for it must not
    authenticate."""
    server.adduser("alice")
    server.start()
    raw = Raw(server)
    bare, server_first, fields = scram_start(raw, "SCRAM-SHA-256", "alice")
    raw.send(f"<abort xmlns='{NS_SASL}'/>".encode())
    raw.sasl_answer()
    raw.send(b"<response xmlns='" + NS_SASL.encode() + b"'>=</response>")
    rest = raw.read(rb"</failure>|<failure[^>]*/>|</stream:error>|<success")
    assert b"<success" not in rest, rest
    raw.close()


@pytest.mark.parametrize("authzid,ok", [("alice@localhost", True), ("bob@localhost", False),
                                        ("alice@localhost/res", False), ("ALICE@localhost", True)])
def test_raw_plain_authzid(server, authzid, ok):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    raw = Raw(server)
    answer = raw.auth("PLAIN", plain("alice", PASSWORD, authzid))
    if ok:
        assert is_success(answer), answer
    else:
        assert answer == f"<failure xmlns='{NS_SASL}'><invalid-authzid/></failure>".encode()
    raw.close()


# --- a TLS-terminating proxy ---------------------------------------------

class Proxy:
    """Direct TLS in front of parleyd's direct-TLS port, with the server's
    own certificate and key (the worst case: a stolen key). It can rewrite
    what the server sends. tls-exporter binds to the client's TLS session,
    which the proxy cannot forge; tls-server-end-point binds only to the
    certificate, which it has."""

    def __init__(self, server, rewrite=None):
        self.server = server
        self.rewrite = rewrite or (lambda b: b)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(server.cert, server.key)
        self.ctx.set_alpn_protocols(["xmpp-client"])
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.lsock.settimeout(20)
        try:
            c, _ = self.lsock.accept()
            c = self.ctx.wrap_socket(c, server_side=True)
            u = raw_connect(self.server.c2s_tls, tls=True, cafile=self.server.cert,
                            alpn=["xmpp-client"])
        except OSError:
            return
        # One thread moves both directions: an ssl socket must not be read
        # in one thread while another writes it (OpenSSL objects are not
        # shared that way).
        peer = {c: u, u: c}
        pending = b""
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                ready = [x for x in peer if x.pending()]
                if not ready:
                    ready = select.select(list(peer), [], [], 1)[0]
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        raise EOFError
                    if src is c:
                        u.sendall(data)
                        continue
                    pending += data
                    # Rewrite whole elements only: a <success> split over
                    # two reads waits for its end tag.
                    if b"<success" in pending and b"</success>" not in pending:
                        continue
                    c.sendall(self.rewrite(pending))
                    pending = b""
        except Exception:  # noqa: BLE001 - any failure ends the proxy
            pass
        for x in (c, u):
            try:
                x.close()
            except OSError:
                pass
        self.lsock.close()


def via_proxy(server, proxy, mech, cb=None):
    class P:
        c2s_tls = proxy.port
        cert = server.cert
    return scram_client(P, mech, cb, direct=True)


def test_proxy_is_detected_by_tls_exporter(server):
    server.adduser("alice")
    server.start()
    # Without binding, the proxy is invisible (sanity check of the proxy).
    r = via_proxy(server, Proxy(server), "SCRAM-SHA-256")
    assert r[0] == 0, r
    # tls-server-end-point cannot see it: same certificate (RFC 5929 §4).
    assert via_proxy(server, Proxy(server), "SCRAM-SHA-256-PLUS", "tls-server-end-point")[0] == 0
    assert_failed_with(via_proxy(server, Proxy(server), "SCRAM-SHA-256-PLUS", "tls-exporter"),
                       "not-authorized")


def test_scram_client_rejects_forged_server_signature(server):
    """The tool must check v=, or the -PLUS tests above prove less."""
    server.adduser("alice")
    server.start()

    def forge(data):
        def flip(m):
            inner = base64.b64decode(m.group(1))
            assert inner.startswith(b"v="), inner
            sig = bytearray(base64.b64decode(inner[2:]))
            sig[-1] ^= 1
            forged = base64.b64encode(b"v=" + base64.b64encode(bytes(sig)))
            return m.group(0).replace(m.group(1), forged)
        return re.sub(rb"<success[^>]*>([^<]+)</success>", flip, data)

    rc, out, _, _ = via_proxy(server, Proxy(server, forge), "SCRAM-SHA-256")
    assert rc == 1 and out.startswith("FAIL wrong-server-signature"), out
