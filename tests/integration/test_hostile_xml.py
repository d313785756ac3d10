"""Hostile XML against the real parleyd (issue 5), each case a real
connection: XML bombs, huge and deep documents streamed in chunks, stanzas
at the exact byte limits, malformed UTF-8 and illegal characters, 10,000
handshakes abandoned half way, and a reader that never reads.

What must hold (docs/SECURITY.md): restricted XML (RFC 6120 §11.1) is
refused at the DOCTYPE, before anything could expand; every limit trips as
the bytes arrive, with the stream error RFC 6120 §4.9.3 names; the server's
memory and descriptors stay bounded; and nobody else notices.

How the numbers are read: the server's resident memory is VmRSS from
/proc/<pid>/status and its open descriptors are /proc/<pid>/fd. Under
AddressSanitizer the servers here run without ASan's quarantine (see
start()), which would otherwise hold on to every freed block and make RSS
measure the quarantine instead of the server. Servers shared by many tests
take each hostile connection from a loopback address of its own, so the
per-address connection limits stay on at their defaults.

Known deviations are strict xfails, each with its reason:
test_doctype_after_login_is_restricted_xml (bad-format where RFC 6120
recommends restricted-xml). test_long_start_tag_in_small_writes_costs_linear_time
found expat 2.5's quadratic reparse of unfinished tokens (CVE-2023-52425),
fixed in src/xml/xmlstream.c (should_hold()).
"""
import base64
import itertools
import multiprocessing
import os
import random
import re
import select
import socket
import ssl
import struct
import threading
import time

import pytest

from conftest import DOMAIN, PASSWORD, STREAM_HEADER, Server, recv_until

NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
HEADER = (STREAM_HEADER % DOMAIN).encode()
KiB = 1024
MiB = 1024 * 1024

# What a single hostile connection may leave behind in the server's RSS
# once it is gone (the brief of issue 5: under 1 MiB).
RSS_MARGIN = 1 * MiB


# --- the server -------------------------------------------------------------

def start(tmp_path, extra="", users=()):
    srv = Server(str(tmp_path), extra=extra)
    for u in users:
        srv.adduser(u)
    # ASan's quarantine (256 MiB by default) keeps freed memory on purpose
    # to catch use after free; with it RSS only ever grows. Turned off for
    # the servers of this file, whose point is to measure memory; every
    # other ASan and UBSan check stays on. Popen copies the environment at
    # start, so it is restored at once.
    old = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = ((old + ":") if old else "") + \
        "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    try:
        srv.start()
    finally:
        if old is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = old
    return srv


def stop(srv):
    rc = srv.stop()
    log = srv.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
    assert "LeakSanitizer" not in log, log[-5000:]
    assert rc == 0, log[-5000:]


def rss(srv):
    """The server's resident set, in bytes."""
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def asan(srv):
    """True if the server runs under AddressSanitizer."""
    with open(f"/proc/{srv.proc.pid}/maps") as f:
        return "libasan" in f.read()


def fds(srv):
    """The server's open descriptors."""
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def settle(srv, target, timeout=15):
    """Waits until the server holds at most `target` descriptors (closed
    connections are freed at the end of a loop iteration); returns the
    count."""
    end = time.time() + timeout
    while fds(srv) > target and time.time() < end:
        time.sleep(0.05)
    time.sleep(0.1)
    return fds(srv)


def cpu_seconds(srv):
    """User plus system CPU time the server has used so far."""
    with open(f"/proc/{srv.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_alive(srv):
    assert srv.proc.poll() is None, "parleyd died:\n" + srv.log()[-5000:]


# --- connections ------------------------------------------------------------

# Each hostile connection of the shared servers comes from an address of its
# own (127.77.x.y), so the per-address connection limits can stay at their
# defaults without a quick series of tests tripping them.
_sources = itertools.count(1)


def fresh_source():
    n = next(_sources)
    return f"127.77.{n // 250 % 250}.{n % 250 + 1}"


def stream_error(cond):
    return f"<stream:error><{cond} xmlns='{NS_STREAM_ERRORS}'/>".encode()


class Conn:
    """A client connection driven by hand, byte for byte."""

    def __init__(self, srv, direct_tls=False, source="127.0.0.1", rcvbuf=None):
        self.srv = srv
        raw = socket.socket()
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(10)
        raw.bind((source, 0))
        raw.connect(("127.0.0.1", srv.c2s_tls if direct_tls else srv.c2s))
        # Small writes go out as written, not when Nagle lets them.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._wrap(raw) if direct_tls else raw

    def _wrap(self, raw):
        ctx = ssl.create_default_context(cafile=self.srv.cert)
        return ctx.wrap_socket(raw, server_hostname=DOMAIN)

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_until(self, needle, timeout=10):
        return recv_until(self.sock, needle, timeout)

    def open_stream(self):
        self.send(HEADER)
        data = self.read_until(b"</stream:features>")
        assert b"</stream:features>" in data, data
        self.features = data
        return data

    def starttls(self):
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        assert b"<proceed" in self.read_until(b"/>")
        self.sock = self._wrap(self.sock)

    def auth(self, user, password=PASSWORD):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        data = self.read_until(b"</success>")
        assert b"<success" in data, data

    def bind(self, resource):
        self.send(f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'>"
                  f"<resource>{resource}</resource></bind></iq>")
        data = self.read_until(b"</iq>")
        assert b"type='result'" in data, data

    def read_to_close(self, timeout=10):
        """Reads until the server closes; returns (bytes, closed), closed
        False if it was still open at the timeout."""
        data = b""
        end = time.time() + timeout
        while time.time() < end:
            self.sock.settimeout(max(0.01, end - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return data, True  # reset, or TLS ended without close_notify
            if not chunk:
                return data, True
            data += chunk
        return data, False

    def expect_close(self, cond, text=None, timeout=10):
        """The stream ends with this stream error, then the connection closes."""
        data, closed = self.read_to_close(timeout)
        assert closed, f"still open after {timeout} s; got {data[-300:]!r}"
        assert stream_error(cond) in data, data[-500:]
        if text is not None:
            assert f"<text xmlns='{NS_STREAM_ERRORS}'>{text}</text>".encode() in data, \
                data[-500:]
        assert data.endswith(b"</stream:stream>"), data[-300:]
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# Handshake stages a connection can be driven to, in order. "tcp": connected,
# nothing sent. "stream": stream open in the clear, features read. "tls": TLS
# up (after STARTTLS, or direct TLS), the next bytes start a stream.
# "tls-stream": that stream open. "authed": SASL success, the next bytes
# restart the stream (RFC 6120 §6.4.6). "bound": logged in, resource bound.
STAGES = ["tcp", "stream", "tls", "tls-stream", "authed", "bound"]


def reach(srv, stage, direct_tls=False, user="mallory", resource="hx", **kw):
    want = STAGES.index(stage)
    kw.setdefault("source", fresh_source())
    c = Conn(srv, direct_tls=direct_tls, **kw)
    if not direct_tls:
        if want == 0:
            return c
        c.open_stream()
        if want == 1:
            return c
        c.starttls()
    else:
        assert want >= 2, "direct TLS starts at 'tls'"
    if want == 2:
        return c
    c.open_stream()
    if want == 3:
        return c
    c.auth(user)
    if want == 4:
        return c
    c.open_stream()
    c.bind(resource)
    return c


class Bystanders:
    """Two logged-in users who must keep talking whatever happens to others."""

    def __init__(self, srv):
        self.srv = srv
        self.alice = reach(srv, "bound", user="alice", source="127.0.0.1")
        self.bob = reach(srv, "bound", user="bob", source="127.0.0.1")
        self.n = 0

    def assert_talk(self):
        self.n += 1
        body = f"still here {self.n}"
        self.bob.send(f"<message to='alice@{DOMAIN}/hx' type='chat' id='by{self.n}'>"
                      f"<body>{body}</body></message>")
        data = self.alice.read_until(f"<body>{body}</body>".encode())
        assert f"<body>{body}</body>".encode() in data, data
        assert f"from='bob@{DOMAIN}/hx'".encode() in data, data
        return data  # with anything else alice got since the last time

    def close(self):
        self.alice.close()
        self.bob.close()


def chunked(pieces, size):
    """Re-cuts an iterable of byte strings into writes of exactly `size`."""
    buf = bytearray()
    for p in pieces:
        buf += p
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def pump(conn, pieces, chunk, seconds=60):
    """Writes `pieces` in writes of `chunk` bytes until the server closes
    (the socket turns readable: its stream error is there) or a write fails;
    returns the bytes handed to the socket, the last write included even if
    it failed part way: the most that can have reached the server. Bounded
    by the input and by `seconds`."""
    sock = conn.sock
    sock.settimeout(10)
    fd = sock.fileno()
    sent = unchecked = 0
    end = time.time() + seconds
    for piece in chunked(pieces, chunk):
        sent += len(piece)
        try:
            sock.sendall(piece)
        except OSError:
            break  # reset: the server is gone (ssl.SSLError is an OSError too)
        unchecked += len(piece)
        if unchecked >= 1024:
            unchecked = 0
            if select.select([fd], [], [], 0)[0] or time.time() > end:
                break
    return sent


# --- 1. XML bombs (RFC 6120 §11.1) ------------------------------------------

class Canary:
    """A listener that external entities point at: nothing may connect."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hx.dtd"

    def assert_untouched(self):
        self.sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            self.sock.accept()

    def close(self):
        self.sock.close()


def bombs(url):
    """name -> (internal DTD subset, what the document then references)."""
    lol = "<!ENTITY lol0 'lol'>" + "".join(
        f"<!ENTITY lol{i} '{f'&lol{i - 1};' * 10}'>" for i in range(1, 10))
    return {
        # 10^9 "lol"s from under 1 KB.
        "billion-laughs": (lol, "&lol9;"),
        # One 32 KB entity referenced 10,000 times: 320 MB, no nesting
        # needed, so limits on expansion depth do not help.
        "quadratic-blowup": (f"<!ENTITY a '{'a' * 32768}'>", "&a;" * 10000),
        # XXE: a file of the server's and a URL the server would fetch.
        "external-entity-file": ("<!ENTITY xxe SYSTEM 'file:///etc/passwd'>", "&xxe;"),
        "external-entity-url": (f"<!ENTITY xxe SYSTEM '{url}'>", "&xxe;"),
        # Parameter entities: an external one (out-of-band exfiltration
        # fetches a DTD this way) and an internal one declaring a bomb.
        "parameter-entity-external": (f"<!ENTITY % ext SYSTEM '{url}'> %ext;", "&exfil;"),
        "parameter-entity-internal": (
            "<!ENTITY % decl \"<!ENTITY b '&#x26;lol9;&#x26;lol9;'>\">"
            + lol + " %decl;", "&b;"),
    }


BOMB_NAMES = list(bombs("http://x/"))


def bomb_document(name, url):
    subset, refs = bombs(url)[name]
    return (f"<?xml version='1.0'?><!DOCTYPE stream:stream [{subset}]>"
            f"<stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
            f"<message to='bob@{DOMAIN}' type='chat'><body>{refs}</body></message>"
            ).encode()


@pytest.fixture(scope="module")
def bomb_server(tmp_path_factory):
    """One server for every bomb; alice and bob stay logged in throughout."""
    srv = start(tmp_path_factory.mktemp("bombs"), users=["alice", "bob", "mallory"])
    by = Bystanders(srv)
    by.assert_talk()
    yield srv, by
    by.close()
    stop(srv)


@pytest.fixture
def canary():
    c = Canary()
    yield c
    c.close()


def send_tolerant(conn, data, chunk=16 * KiB):
    """Sends data until the server closes on us; returns bytes sent."""
    return pump(conn, [data], chunk, seconds=20)


# Where a DOCTYPE can stand: before the first byte of a stream (RFC 6120
# §4.2), in the clear; as the prolog of the stream restarted after TLS
# (§5.4.3.3), and after SASL success (§6.4.6).
PROLOG_POINTS = {
    "before-tls": ("tcp", False),
    "starttls-before-auth": ("tls", False),
    "direct-tls-before-auth": ("tls", True),
    "starttls-after-auth": ("authed", False),
    "direct-tls-after-auth": ("authed", True),
}


@pytest.mark.parametrize("where", list(PROLOG_POINTS))
@pytest.mark.parametrize("bomb", BOMB_NAMES)
def test_xml_bomb_in_prolog_is_refused_at_the_doctype(bomb_server, canary, bomb, where):
    """RFC 6120 §11.1: a DTD is restricted XML; the stream is closed with
    restricted-xml (§4.9.3.18) as soon as the DOCTYPE is seen, so no entity
    is declared, let alone expanded or fetched. Memory does not move and
    other users keep talking."""
    srv, by = bomb_server
    base_fds = fds(srv)
    before = rss(srv)
    stage, direct = PROLOG_POINTS[where]
    c = reach(srv, stage, direct_tls=direct)
    source = c.sock.getsockname()[0]
    t0 = time.time()
    send_tolerant(c, bomb_document(bomb, canary.url))
    data = c.expect_close("restricted-xml", timeout=10)
    took = time.time() - t0
    c.close()
    # Our header answers the bomb's (RFC 6120 §4.9.1.2), then the error.
    assert data.startswith(b"<?xml version='1.0'?><stream:stream "), data[:200]
    # Refused at the DOCTYPE itself, not at a reference or a limit.
    assert f"XML error from {source}: DOCTYPE" in srv.log(), srv.log()[-2000:]
    canary.assert_untouched()
    assert settle(srv, base_fds) <= base_fds
    grown = rss(srv) - before
    print(f"\n{bomb} {where}: closed after {took * 1000:.0f} ms, RSS {grown / KiB:+.0f} KiB")
    assert grown < RSS_MARGIN, grown
    assert_alive(srv)
    by.assert_talk()


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("bomb", BOMB_NAMES)
def test_entity_references_after_login_are_restricted_xml(bomb_server, canary, bomb, direct):
    """Once logged in a DOCTYPE can no longer come, but the references a
    bomb makes still can: without a DTD only the five predefined entities
    exist (RFC 6120 §11.1), so the first other reference closes the stream
    with restricted-xml."""
    srv, by = bomb_server
    base_fds = fds(srv)
    before = rss(srv)
    c = reach(srv, "bound", direct_tls=direct)
    refs = bombs(canary.url)[bomb][1]
    send_tolerant(c, f"<message to='bob@{DOMAIN}' type='chat'><body>{refs}</body>"
                     f"</message>".encode())
    c.expect_close("restricted-xml")
    c.close()
    canary.assert_untouched()
    assert settle(srv, base_fds) <= base_fds
    grown = rss(srv) - before
    assert grown < RSS_MARGIN, grown
    by.assert_talk()


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
def test_doctype_after_login_closes_the_stream(bomb_server, canary, direct):
    """A whole bomb, DOCTYPE and all, pasted into a logged-in stream (where
    XML allows no DOCTYPE): the stream is closed at the DOCTYPE with a stream
    error, nothing is expanded, nobody else notices. Which condition: see
    the next test."""
    srv, by = bomb_server
    base_fds = fds(srv)
    before = rss(srv)
    c = reach(srv, "bound", direct_tls=direct)
    subset, refs = bombs(canary.url)["billion-laughs"]
    send_tolerant(c, f"<!DOCTYPE m [{subset}]><message to='bob@{DOMAIN}'><body>{refs}"
                     f"</body></message>".encode())
    data, closed = c.read_to_close()
    c.close()
    assert closed and data.endswith(b"</stream:stream>"), data
    assert stream_error("bad-format") in data or stream_error("restricted-xml") in data, data
    assert settle(srv, base_fds) <= base_fds
    assert rss(srv) - before < RSS_MARGIN
    by.assert_talk()


@pytest.mark.xfail(strict=True, reason=(
    "server bug: a DOCTYPE inside an open stream is answered bad-format, not "
    "restricted-xml: expat reports an invalid token there, which c2s.c maps to "
    "bad-format, while a comment or PI in the same place gets restricted-xml"))
def test_doctype_after_login_is_restricted_xml(bomb_server):
    """RFC 6120 §4.9.3.18: restricted-xml is for "restricted XML features
    such as a comment, processing instruction, DTD subset, or XML entity
    reference"; this server answers the others with it in the same place
    (tests/transcripts/comment-after-auth.xmpp,
    processing-instruction-after-auth.xmpp). bad-format is allowed by
    §4.9.3.1, but the specific condition is RECOMMENDED."""
    srv, by = bomb_server
    c = reach(srv, "bound")
    c.send("<!DOCTYPE m [<!ENTITY e 'x'>]>")
    data, closed = c.read_to_close()
    c.close()
    assert closed
    assert stream_error("restricted-xml") in data, data


# --- 2. Huge and deep documents, streamed -----------------------------------

# Under these limits: the defaults of docs/CONFIG.md, except a stanza limit
# of 64 KiB instead of 256 KiB (a start tag written a byte at a time costs
# the server time quadratic in its length, see
# test_long_start_tag_in_small_writes_costs_linear_time, and this file must run
# in minutes), and a text limit below it, so that a big text node meets its
# own limit.
STANZA_BYTES = 64 * KiB
TEXT_LEN = 32 * KiB
DEPTH = 64
CHILDREN = 10000


def repeat(unit, count, piece=64 * KiB):
    """`unit` `count` times, as pieces of about `piece` bytes."""
    per = max(1, piece // len(unit))
    while count > 0:
        n = min(per, count)
        yield unit * n
        count -= n


def numbered_attrs(count):
    for i in range(0, count, 1000):
        yield "".join(f" a{j}=''" for j in range(i, min(count, i + 1000))).encode()


# name -> (the stream of pieces, the limit that must trip, and the longest
# prefix of the stanza still within it: the server closes only past it)
SHAPES = {
    # <message><a><a><a>... 10^6 deep: the 65th level is refused.
    "depth-1e6": (lambda: itertools.chain([b"<message>"], repeat(b"<a>", 10 ** 6)),
                  "max_depth", len(b"<message>") + 3 * DEPTH),
    # 10^6 empty siblings inside one stanza.
    "siblings-1e6": (lambda: itertools.chain([b"<message>"], repeat(b"<a/>", 10 ** 6)),
                     "max_children", len(b"<message>") + 4 * (CHILDREN + 1)),
    # 10^5 attributes on one element: a start tag is parsed whole, so the
    # stanza limit is what ends it, before the attribute count is known.
    "attributes-1e5": (lambda: itertools.chain([b"<message"], numbered_attrs(10 ** 5)),
                       "max_stanza_bytes", STANZA_BYTES),
    # A 100 MB text node.
    "text-100MB": (lambda: itertools.chain([b"<message><body>"],
                                           repeat(b"x", 100 * MiB)),
                   "max_text_len", len(b"<message><body>") + TEXT_LEN),
    # A 100 MB attribute value: as for many attributes, the start tag is
    # still open when the stanza limit is reached.
    "attribute-value-100MB": (lambda: itertools.chain([b"<message to='"],
                                                      repeat(b"x", 100 * MiB)),
                              "max_stanza_bytes", STANZA_BYTES),
}


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("big"), users=["alice", "bob", "mallory"], extra=(
        f"limits.stanza_bytes: {STANZA_BYTES}\n"
        f"limits.xml_text_len: {TEXT_LEN}\n"
        # Off: the writer must meet the parser's limits. With the byte
        # bucket on, reading pauses after 320 KB and the writer would only
        # measure the bucket (test_hostile_rates.py covers it).
        "limits.bytes_per_second: 0\n"))
    by = Bystanders(srv)
    by.assert_talk()
    yield srv, by
    by.close()
    stop(srv)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536], ids=lambda c: f"{c}B-writes")
@pytest.mark.parametrize("shape", list(SHAPES))
def test_huge_stanza_is_cut_at_its_limit(big_server, shape, chunk):
    """A stanza far past a limit, streamed after login: the stream is
    closed with policy-violation (RFC 6120 §4.9.3.14) naming the limit as
    soon as the bytes cross it, whatever the write size; the server takes
    no more than the limit (the writer sees the close long before it is
    done), keeps no memory, and other users keep talking."""
    srv, by = big_server
    pieces, limit, most = SHAPES[shape]
    base_fds = fds(srv)
    before = rss(srv)
    c = reach(srv, "bound")
    t0 = time.time()
    sent = pump(c, pieces(), chunk)
    c.expect_close("policy-violation", text=limit)
    took = time.time() - t0
    c.close()
    assert settle(srv, base_fds) <= base_fds
    grown = rss(srv) - before
    print(f"\n{shape} in {chunk} B writes: closed after {took:.2f} s; {sent / KiB:.1f} "
          f"KiB written (the limit: past {most / KiB:.1f} KiB); RSS {grown / KiB:+.0f} KiB")
    # The limit tripped no earlier than it should (the server read more
    # than `most`, or it would not have closed); the rest of what was
    # written is what the sockets held when it closed: far from the whole.
    assert sent > most, sent
    assert sent < most + 16 * MiB, sent
    assert grown < RSS_MARGIN, grown
    assert_alive(srv)
    by.assert_talk()


def one_byte_records_cpu(srv, opening, size, closing):
    """Server CPU seconds to take `opening`, then `size` bytes of 'x' each in
    a TLS record of its own, then `closing`, and to answer the stanza."""
    c = reach(srv, "bound")
    c.send(opening)
    before = cpu_seconds(srv)
    for _ in range(size):
        c.sock.sendall(b"x")
    c.send(closing)
    # Once the stanza is parsed whole an answer comes: the message itself,
    # an error stanza, or the stream error of a limit.
    assert b"</" in c.read_until(b"</", timeout=120)
    c.close()
    return cpu_seconds(srv) - before


def test_long_start_tag_in_small_writes_costs_linear_time(tmp_path):
    """A stanza's cost must stay linear in its size however it is cut
    (docs/SECURITY.md: limits are checked as bytes arrive). The same 64 KiB
    in the same 65,536 one-byte TLS records cost the server about the same
    CPU time whether they are the text of a body, which expat hands over as
    it comes, or an attribute value, which it holds until the tag ends. (A
    start tag of many short attributes costs the same as one long value.)"""
    srv = start(tmp_path, users=["mallory"], extra=(
        "limits.bytes_per_second: 0\n"))  # the writer must not be paused
    try:
        size = 64 * KiB
        text = one_byte_records_cpu(
            srv, f"<message to='mallory@{DOMAIN}/hx' type='chat'><body>".encode(), size,
            b"</body></message>")
        attr = one_byte_records_cpu(srv, b"<message to='", size, b"'/>")
        print(f"\n64 KiB in 1-byte TLS records: as text {text:.2f} s of server CPU, as an "
              f"attribute value {attr:.2f} s ({attr / max(text, 0.01):.1f}x)")
        assert attr <= 2 * text + 0.25, (text, attr)
    finally:
        stop(srv)


# --- 2b. Linear cost of big stanzas -----------------------------------------

def deliver(sender, receiver, size, tag):
    """Seconds from the first byte of a message with a body of `size` bytes
    leaving the sender to its last byte reaching the receiver."""
    body = b"x" * size
    stanza = (f"<message to='bob@{DOMAIN}/hx' type='chat' id='{tag}'><body>".encode()
              + body + b"</body></message>")
    errors = []

    def write():
        try:
            sender.sock.sendall(stanza)
        except OSError as e:
            errors.append(e)

    buf = bytearray(size + 64 * KiB)
    view = memoryview(buf)
    got = 0
    end = b"</message>"
    receiver.sock.settimeout(60)
    t0 = time.perf_counter()
    w = threading.Thread(target=write)
    w.start()
    while buf[max(0, got - len(end)):got] != end:
        n = receiver.sock.recv_into(view[got:])
        assert n, "closed"
        got += n
    took = time.perf_counter() - t0
    w.join()
    assert not errors, errors
    data = bytes(buf[:got])
    assert f"id='{tag}'".encode() in data[:500] and body in data, data[:300]
    return took


def test_big_message_costs_linear_time(tmp_path):
    """The path of a stanza (read, parse, route, serialize, write) is linear
    in its size, with limits.stanza_bytes at its 16 MiB maximum: a 10 MB
    body is delivered in at most 12 times the time of a 1 MB one, plus a
    constant for the noise of a shared machine (the best of 3 each,
    interleaved); and the server spends no more CPU on one 10 MB message
    than on ten of 1 MB."""
    srv = start(tmp_path, users=["alice", "bob"], extra=(
        "limits.stanza_bytes: 16m\nlimits.xml_text_len: 16m\n"
        "limits.out_queue_bytes: 64m\n"
        # Off: the byte bucket would pause reading 10 MB, and measure itself.
        "limits.bytes_per_second: 0\n"))
    try:
        a = reach(srv, "bound", user="alice", source="127.0.0.1")
        b = reach(srv, "bound", user="bob", source="127.0.0.1")
        deliver(a, b, MiB, "warm1")
        deliver(a, b, 10 * MiB, "warm10")
        t1, t10 = [], []
        for i in range(3):
            t1.append(deliver(a, b, MiB, f"one{i}"))
            t10.append(deliver(a, b, 10 * MiB, f"ten{i}"))
        c0 = cpu_seconds(srv)
        for i in range(10):
            deliver(a, b, MiB, f"cpu1-{i}")
        cpu1 = cpu_seconds(srv) - c0
        c0 = cpu_seconds(srv)
        deliver(a, b, 10 * MiB, "cpu10")
        cpu10 = cpu_seconds(srv) - c0
        print(f"\n1 MB message delivered in {min(t1) * 1000:.0f} ms, 10 MB in "
              f"{min(t10) * 1000:.0f} ms ({min(t10) / min(t1):.1f}x; all: "
              f"{[round(t * 1000) for t in t1]} / {[round(t * 1000) for t in t10]} ms); "
              f"server CPU for 10 x 1 MB {cpu1 * 1000:.0f} ms, for 1 x 10 MB "
              f"{cpu10 * 1000:.0f} ms")
        assert min(t10) <= 12 * min(t1) + 0.3, (t1, t10)
        assert cpu10 <= 1.5 * cpu1 + 0.05, (cpu1, cpu10)
        a.close()
        b.close()
    finally:
        stop(srv)


# --- 3. Stanza size at the limit --------------------------------------------

# What counts (src/xml/xmlstream.c, feed_bytes(), and test_stanza_limit in
# tests/unit/test_xmlstream.c): every byte from the '<' that opens a
# top-level element to the '>' that closes it. Whitespace between stanzas
# is not counted. A stanza of exactly the limit passes; the byte after the
# limit, if the stanza is not over, ends the stream.
PREAUTH_LIMIT = 4096
AUTH_LIMIT = 10000


def sized(head, tail, size, fill=b"A"):
    n = size - len(head) - len(tail)
    assert n >= 0
    data = head + fill * n + tail
    assert len(data) == size
    return data


# phase -> (stage, direct TLS, limit, stanza of a given size and tag, the
# answer that shows it was parsed whole)
def size_phases():
    sasl = f"<auth xmlns='{NS_SASL}' mechanism='%s'>"
    return {
        # Before TLS, SASL is refused only after the element is parsed
        # (RFC 6120 §6.5.4 encryption-required), and the stream goes on.
        "before-tls": ("stream", False, PREAUTH_LIMIT,
                       lambda size, tag: sized((sasl % "PLAIN").encode(), b"</auth>", size),
                       lambda tag: b"<encryption-required/></failure>"),
        # Over TLS, an unknown mechanism is refused the same way (§6.5.7
        # invalid-mechanism).
        "direct-tls-before-auth": ("tls-stream", True, PREAUTH_LIMIT,
                                   lambda size, tag: sized((sasl % "X-HOSTILE").encode(),
                                                           b"</auth>", size),
                                   lambda tag: b"<invalid-mechanism/></failure>"),
        # Logged in: a message to oneself comes back.
        "after-login": ("bound", False, AUTH_LIMIT,
                        lambda size, tag: sized(
                            f"<message to='mallory@{DOMAIN}/hx' type='chat' id='{tag}'><body>"
                            .encode(), b"</body></message>", size, b"x"),
                        lambda tag: f"id='{tag}'".encode()),
    }


@pytest.fixture(scope="module")
def sized_server(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("sized"), users=["alice", "bob", "mallory"], extra=(
        f"limits.stanza_bytes: {AUTH_LIMIT}\n"
        f"limits.stanza_bytes_preauth: {PREAUTH_LIMIT}\n"))
    by = Bystanders(srv)
    yield srv, by
    by.close()
    stop(srv)


def write_in(conn, data, chunk):
    for i in range(0, len(data), chunk):
        conn.sock.sendall(data[i:i + chunk])


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536], ids=lambda c: f"{c}B-writes")
@pytest.mark.parametrize("phase", list(size_phases()))
def test_stanza_size_limit_is_exact(sized_server, phase, chunk):
    """limits.stanza_bytes_preauth before authentication and
    limits.stanza_bytes after it (advertised per XEP-0478): stanzas of
    L-1 and L bytes are processed, one of L+1 bytes closes the stream with
    policy-violation (RFC 6120 §4.9.3.14) as its byte L+1 arrives, in
    writes of any size."""
    srv, by = sized_server
    stage, direct, limit, stanza, answer = size_phases()[phase]
    c = reach(srv, stage, direct_tls=direct)
    assert f"<max-bytes>{limit}</max-bytes>".encode() in c.features, c.features
    for size in (limit - 1, limit):
        tag = f"s{size}"
        # Whitespace before a stanza (a keepalive, RFC 6120 §4.6.1) is not
        # part of it.
        write_in(c, b"\r\n \t" + stanza(size, tag), chunk)
        data = c.read_until(answer(tag))
        assert answer(tag) in data, (size, data[-300:])
        if phase == "after-login":
            # Delivered whole: the body that comes back is the one sent.
            sent_body = re.search(rb"<body>(x*)</body>", stanza(size, tag)).group(1)
            assert b"<body>" + sent_body + b"</body>" in data, (size, data[-300:])
    over = stanza(limit + 1, "over")
    write_in(c, over[:limit], chunk)
    # Its first L bytes are still within the limit: nothing happens...
    assert not select.select([c.sock.fileno()], [], [], 0.2)[0], c.sock.recv(1000)
    # ...until byte L+1.
    c.send(over[limit:])
    c.expect_close("policy-violation", text="max_stanza_bytes")
    c.close()
    by.assert_talk()


# --- 4. Bytes that are not UTF-8, characters that are not XML ---------------

# Malformed UTF-8 (RFC 3629 §3, §10): a UTF-8 decoder must refuse each.
BAD_UTF8 = {
    "overlong-2-byte": b"\xc0\xaf",          # '/'
    "overlong-3-byte": b"\xe0\x80\xaf",
    "overlong-4-byte": b"\xf0\x80\x80\xaf",
    "overlong-nul": b"\xc0\x80",              # "modified UTF-8" NUL
    "surrogate-high": b"\xed\xa0\x80",        # U+D800
    "surrogate-low": b"\xed\xbf\xbf",         # U+DFFF
    "surrogate-pair": b"\xed\xa0\xbd\xed\xb8\x80",  # CESU-8 for U+1F600
    "truncated-2-byte": b"\xc3",
    "truncated-3-byte": b"\xe2\x82",
    "truncated-4-byte": b"\xf0\x9f\x98",
    "lone-continuation": b"\x80",
    "byte-fe": b"\xfe",
    "byte-ff": b"\xff",
    "above-u+10ffff": b"\xf4\x90\x80\x80",
    "5-byte-form": b"\xf8\x88\x80\x80\x80",
}
# Well-formed UTF-8 that XML 1.0 §2.2 does not allow as a character, raw or
# as a character reference (§4.1, WFC: Legal Character).
ILLEGAL_CHARS = {
    "nul": b"\x00",
    "control-01": b"\x01",
    "control-08": b"\x08",
    "vertical-tab": b"\x0b",
    "control-1f": b"\x1f",
    "u+fffe": b"\xef\xbf\xbe",
    "u+ffff": b"\xef\xbf\xbf",
    "ref-x1": b"&#x1;",
    "ref-0": b"&#0;",
    "ref-x1f": b"&#x1F;",
    "ref-surrogate": b"&#xD800;",
    "ref-xfffe": b"&#xFFFE;",
    "ref-above-max": b"&#x110000;",
}
# Where the bytes go: the text of a body, an attribute value, an element name.
# Addressed to a bystander, who must not get it.
HOSTILE = f"<message to='alice@{DOMAIN}/hx' type='chat' id='hostile'>".encode()
CONTEXTS = {
    "text": lambda x: HOSTILE + b"<body>a" + x + b"b</body></message>",
    "attribute": lambda x: HOSTILE + b"<body xml:lang='a" + x + b"b'>hi</body></message>",
    "name": lambda x: HOSTILE + b"<a" + x + b"b/><body>hi</body></message>",
}
CHAR_PHASES = {"before-tls": ("stream", False), "after-login": ("bound", False),
               "after-login-direct-tls": ("bound", True)}

# The server's answer to each (c2s.c, xs_condition()): malformed bytes and
# illegal characters are not well-formed XML, bad-format (RFC 6120 §4.9.3.1,
# as in tests/transcripts/invalid-utf8-*.xmpp); a stream in another encoding
# than UTF-8 is unsupported-encoding (§11.6, §4.9.3.22).
BAD_CHAR_CONDITION = "bad-format"
ENCODING_CONDITION = "unsupported-encoding"


@pytest.fixture(scope="module")
def char_server(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("chars"), users=["alice", "bob", "mallory"])
    by = Bystanders(srv)
    yield srv, by
    by.close()
    stop(srv)


def char_cases():
    for phase in CHAR_PHASES:
        for ctx in CONTEXTS:
            for table in (BAD_UTF8, ILLEGAL_CHARS):
                for name, data in table.items():
                    if ctx == "name" and data.startswith(b"&"):
                        continue  # no references in names: just '&'
                    yield pytest.param(phase, ctx, data, id=f"{name}-in-{ctx}-{phase}")


@pytest.mark.parametrize("phase,context,bad", list(char_cases()))
def test_bad_characters_close_the_stream(char_server, phase, context, bad):
    """Malformed UTF-8 (RFC 6120 §11.6 allows UTF-8 alone) and characters
    XML does not allow (§11.3: well-formed XML only) close the stream with
    a stream error, before authentication and after, wherever they appear;
    nothing is delivered."""
    srv, by = char_server
    stage, direct = CHAR_PHASES[phase]
    c = reach(srv, stage, direct_tls=direct)
    c.send(CONTEXTS[context](bad))
    c.expect_close(BAD_CHAR_CONDITION)
    c.close()
    assert b"id='hostile'" not in by.assert_talk()


def encodings():
    """name -> the first bytes of a stream in that encoding."""
    body = HEADER[len(b"<?xml version='1.0'?>"):].decode()

    def decl(enc):
        return f"<?xml version='1.0' encoding='{enc}'?>{body}".encode()

    return {
        "decl-iso-8859-1": decl("ISO-8859-1"),
        "decl-us-ascii": decl("US-ASCII"),
        "decl-utf-16": decl("UTF-16"),
        "decl-windows-1252": decl("windows-1252"),
        "decl-shift-jis": decl("Shift_JIS"),
        "decl-utf8-misspelt": decl("UTF8"),
        "utf-16le-bom": b"\xff\xfe" + body.encode("utf-16-le"),
        "utf-16be-bom": b"\xfe\xff" + body.encode("utf-16-be"),
        "utf-16le-no-bom": body.encode("utf-16-le"),
        "utf-32le-bom": b"\xff\xfe\x00\x00" + body.encode("utf-32-le"),
        "utf-32be-bom": b"\x00\x00\xfe\xff" + body.encode("utf-32-be"),
    }


@pytest.mark.parametrize("where", list(PROLOG_POINTS))
@pytest.mark.parametrize("encoding", list(encodings()))
def test_other_encodings_are_unsupported_encoding(char_server, encoding, where):
    """RFC 6120 §11.6: UTF-8 only. A stream declared or encoded otherwise
    (byte order marks included) is closed with unsupported-encoding
    (§4.9.3.22), in the first stream, after TLS and after SASL alike."""
    srv, by = char_server
    stage, direct = PROLOG_POINTS[where]
    c = reach(srv, stage, direct_tls=direct)
    pump(c, [encodings()[encoding]], 4096)
    c.expect_close(ENCODING_CONDITION)
    c.close()
    by.assert_talk()


@pytest.mark.parametrize("where", list(PROLOG_POINTS))
@pytest.mark.parametrize("lead", ["decl-utf-8-lowercase", "utf-8-bom"])
def test_utf8_declared_or_marked_is_accepted(char_server, lead, where):
    """The control: encoding='utf-8' in any case, and a UTF-8 byte order
    mark, are UTF-8 (XML 1.0 §4.3.3), and the stream goes on."""
    srv, by = char_server
    stage, direct = PROLOG_POINTS[where]
    c = reach(srv, stage, direct_tls=direct)
    rest = HEADER[len(b"<?xml version='1.0'?>"):]
    c.send(b"<?xml version='1.0' encoding='utf-8'?>" + rest if lead.startswith("decl")
           else b"\xef\xbb\xbf" + HEADER)
    assert b"</stream:features>" in c.read_until(b"</stream:features>")
    c.close()


@pytest.mark.parametrize("decl", ["<?xml version='1.0'?>",
                                  "<?xml version='1.0' encoding='ISO-8859-1'?>"])
def test_xml_declaration_inside_a_stream_closes_it(char_server, decl):
    """An XML declaration may only open a document (XML 1.0 §2.8); one in
    the middle of a logged-in stream, whatever encoding it names, is not
    well-formed: bad-format (RFC 6120 §4.9.3.1)."""
    srv, by = char_server
    c = reach(srv, "bound")
    c.send(decl)
    c.expect_close("bad-format")
    c.close()
    by.assert_talk()


# --- 5. Handshakes abandoned half way ---------------------------------------

def careless_context():
    """A client that does not check the certificate: an abandoning client
    does not care, and the handshakes cost the test less CPU."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello(ctx):
    """The bytes of a TLS ClientHello, made without a socket."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=DOMAIN)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class Abandoner:
    """Drives one connection to a point of the handshake, then leaves."""

    def __init__(self, port, tls_port, rng):
        self.port, self.tls_port, self.rng = port, tls_port, rng
        self.ctx = careless_context()

    def connect(self, direct):
        s = socket.socket()
        s.settimeout(10)
        n = self.rng.randrange(1, 250 * 250)
        s.bind((f"127.88.{n // 250}.{n % 250 + 1}", 0))
        s.connect(("127.0.0.1", self.tls_port if direct else self.port))
        return s

    def tls(self, s):
        return self.ctx.wrap_socket(s, server_hostname=DOMAIN)

    def header(self, s):
        s.sendall(HEADER)
        assert b"</stream:features>" in recv_until(s, b"</stream:features>")

    def starttls(self, s):
        self.header(s)
        s.sendall(f"<starttls xmlns='{NS_TLS}'/>".encode())
        assert b"<proceed" in recv_until(s, b"/>")

    def to_tls(self, direct):
        s = self.connect(direct)
        if not direct:
            self.starttls(s)
        return self.tls(s)

    def run(self, stage, direct):
        """Returns the socket, left where `stage` says."""
        rng = self.rng
        if stage == "tcp-connect":
            return self.connect(direct)
        if stage == "mid-stream-header":
            s = self.connect(False)
            s.sendall(HEADER[:rng.randrange(1, len(HEADER))])
            return s
        if stage == "after-stream-header":
            s = self.connect(False)
            s.sendall(HEADER)
            if rng.random() < 0.5:
                recv_until(s, b"</stream:features>")
            return s
        if stage == "after-starttls":
            s = self.connect(False)
            self.starttls(s)
            return s
        if stage in ("mid-client-hello", "after-client-hello"):
            s = self.connect(direct)
            if not direct:
                self.starttls(s)
            hello = client_hello(self.ctx)
            if stage == "mid-client-hello":
                hello = hello[:rng.randrange(1, len(hello))]
            s.sendall(hello)
            return s
        s = self.to_tls(direct)
        if stage == "after-tls":
            return s
        if stage == "mid-tls-stream-header":
            s.sendall(HEADER[:rng.randrange(1, len(HEADER))])
            return s
        self.header(s)
        if stage == "mid-sasl":
            first = base64.b64encode(b"n,,n=mallory,r=abandoned0123456789").decode()
            s.sendall(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>"
                      .encode())
            assert b"<challenge" in recv_until(s, b"</challenge>")
            return s
        token = base64.b64encode(f"\0mallory\0{PASSWORD}".encode()).decode()
        s.sendall(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>".encode())
        assert b"<success" in recv_until(s, b"</success>")
        if stage == "after-auth":
            return s
        assert stage == "after-auth-restart"
        self.header(s)
        return s


# stage -> ports it applies to (False: STARTTLS port, True: direct TLS)
ABANDON_STAGES = {
    "tcp-connect": (False, True),
    "mid-stream-header": (False,),
    "after-stream-header": (False,),
    "after-starttls": (False,),
    "mid-client-hello": (False, True),
    "after-client-hello": (False, True),
    "after-tls": (False, True),
    "mid-tls-stream-header": (False, True),
    "mid-sasl": (False, True),
    "after-auth": (False, True),
    "after-auth-restart": (False, True),
}


def abandon_many(port, tls_port, seed, count, result):
    """Child process: `count` connections, each left at a random stage and
    then closed with a FIN or a reset (SO_LINGER 0); a few are held open a
    while, so that many half-done handshakes coexist. Four threads."""
    counts = [{} for _ in range(4)]  # one per thread: no lock needed
    errors = []

    def thread(k):
        rng = random.Random(seed * 100 + k)
        ab = Abandoner(port, tls_port, rng)
        done = counts[k]
        held = []
        for _ in range(count // 4):
            stage = rng.choice(list(ABANDON_STAGES))
            direct = rng.choice(ABANDON_STAGES[stage])
            key = f"{stage}{'-direct' if direct else ''}"
            try:
                s = ab.run(stage, direct)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{key}: {e!r}")
                continue
            done[key] = done.get(key, 0) + 1
            held.append(s)
            if len(held) > rng.randrange(1, 32):
                victim = held.pop(rng.randrange(len(held)))
                if rng.random() < 0.5:
                    victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                victim.close()
        for s in held:
            s.close()

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = {}
    for c in counts:
        for key, n in c.items():
            done[key] = done.get(key, 0) + n
    result.put((done, errors))


def abandon_round(srv, total, seed, procs=4):
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    children = [ctx.Process(target=abandon_many,
                            args=(srv.c2s, srv.c2s_tls, seed * 10 + i, total // procs, result))
                for i in range(procs)]
    for p in children:
        p.start()
    done, errors = {}, []
    for _ in children:
        d, e = result.get(timeout=120)
        errors += e
        for k, v in d.items():
            done[k] = done.get(k, 0) + v
    for p in children:
        p.join(10)
    return done, errors


def test_ten_thousand_abandoned_handshakes_leave_nothing_behind(tmp_path):
    """10,000 connections left at random points of the handshake (RFC 6120
    §4-§7: before, in and after the stream header, STARTTLS and the TLS
    handshake, SASL and the restart) and then dropped, by FIN or by reset:
    every descriptor is released and memory comes back to a bounded margin
    of where it was, round after round; a user still logs in afterwards."""
    srv = start(tmp_path, users=["mallory", "alice", "bob"], extra=(
        # Off: 10,000 handshakes from loopback in seconds are the point
        # here, not what the per-address limits do with them
        # (test_hostile_rates.py covers those).
        "limits.connections_per_ip: 0\n"
        "limits.connections_per_second_per_ip: 0\n"))
    try:
        # No client connection yet: listeners, event loops, log, store.
        base_fds = fds(srv)
        # Warm up every worker's TLS and store paths, then measure.
        _, errors = abandon_round(srv, 400, seed=99)
        assert not errors, errors[:5]
        assert settle(srv, base_fds) <= base_fds
        base_rss = rss(srv)
        rounds = []
        for r in range(2):
            t0 = time.time()
            done, errors = abandon_round(srv, 10000, seed=r)
            took = time.time() - t0
            assert not errors, errors[:5]
            assert sum(done.values()) == 10000, done
            now_fds = settle(srv, base_fds, timeout=30)
            rounds.append((took, now_fds, rss(srv)))
            print(f"\nround {r + 1}: 10,000 abandoned in {took:.1f} s; "
                  f"fds {base_fds} -> {now_fds}; RSS {base_rss / MiB:.1f} -> "
                  f"{rss(srv) / MiB:.1f} MiB\n  {sorted(done.items())}")
            assert now_fds <= base_fds, (base_fds, now_fds)
        assert_alive(srv)
        by = Bystanders(srv)
        by.assert_talk()
        by.close()
        # Measured (normal build): the first round leaves about 10 MiB, the
        # TLS session cache filling up to its 4096 sessions (src/server/
        # tls.c) and the allocator keeping what the workers used; further
        # rounds add under 1 MiB. Under ASan the first round leaves 11-14
        # MiB and RSS then wanders by a few MiB either way, as its
        # allocator hands memory back on a timer of its own.
        grown1 = rounds[0][2] - base_rss
        grown2 = rounds[1][2] - rounds[0][2]
        print(f"RSS after round 1: {grown1 / MiB:+.1f} MiB, after round 2: "
              f"{grown2 / MiB:+.1f} MiB more")
        assert grown1 < (24 if asan(srv) else 16) * MiB, grown1
        assert grown2 < (8 if asan(srv) else 2) * MiB, grown2
    finally:
        stop(srv)


# --- 6. A reader that never reads -------------------------------------------

def test_reader_that_never_reads_is_closed_at_its_queue_cap(tmp_path):
    """limits.out_queue_bytes (docs/SECURITY.md): a logged-in user stops
    reading while another sends it large messages; once what the server
    holds for it passes the cap the session is closed, so the server's
    memory for it stays bounded, and the sender and a third user notice
    nothing."""
    cap = 256 * KiB
    srv = start(tmp_path, users=["stalled", "sender", "third"], extra=(
        f"limits.out_queue_bytes: {cap}\n"
        "limits.stanza_bytes: 64k\n"
        # Off: the sender must get megabytes through quickly; its own
        # throttling is test_hostile_rates.py's subject.
        "limits.bytes_per_second: 0\n"))
    try:
        base_fds = fds(srv)
        stalled = reach(srv, "bound", user="stalled", source="127.0.0.1", rcvbuf=4096)
        third = reach(srv, "bound", user="third", source="127.0.0.1")
        sender = reach(srv, "bound", user="sender", source="127.0.0.1")
        before = rss(srv)
        body = "y" * (60 * KiB)
        sent = 0
        deadline = time.time() + 60
        closed_line = f"output queue over {cap} bytes: closing"
        while closed_line not in srv.log() and time.time() < deadline and sent < 64 * MiB:
            sender.send(f"<message to='stalled@{DOMAIN}/hx' type='chat' id='m{sent}'>"
                        f"<body>{body}</body></message>")
            sent += len(body)
            time.sleep(0.002)
        assert closed_line in srv.log(), f"not closed after {sent} bytes"
        at_close = sent
        peak = rss(srv) - before
        # What comes after the close is not queued for it any more.
        for i in range(20):
            sender.send(f"<message to='stalled@{DOMAIN}/hx' type='chat' id='late{i}'>"
                        f"<body>{body}</body></message>")
        # The sender and the third user go on as if nothing happened.
        for i in range(3):
            sender.send(f"<message to='third@{DOMAIN}/hx' type='chat'><body>after {i}"
                        f"</body></message>")
            assert f"<body>after {i}</body>".encode() in third.read_until(
                f"<body>after {i}</body>".encode())
        # The stalled reader finds what was queued before the close, then
        # the end of the connection.
        got, closed = stalled.read_to_close(timeout=30)
        assert closed
        print(f"\na reader that never reads was closed after {at_close / MiB:.1f} MiB were "
              f"sent to it (kernel buffers, then the {cap // KiB} KiB cap); it could then "
              f"read {len(got) / MiB:.1f} MiB; server RSS at the close {peak / KiB:+.0f} KiB")
        assert b"id='late" not in got
        assert len(got) < at_close + 2 * len(body) + 4 * KiB
        # What the server held for it: the cap, one message past it, and
        # the buffer that holds them (measured: 0.5 MiB, 1.1 under ASan).
        assert peak < 4 * cap + MiB, peak
        stalled.close()
        sender.close()
        third.close()
        assert settle(srv, base_fds) <= base_fds
        assert_alive(srv)
    finally:
        stop(srv)
