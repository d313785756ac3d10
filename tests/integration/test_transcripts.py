"""Runs every tests/transcripts/*.xmpp file against a fresh parleyd.

The format is described in tests/transcripts/README.md. Each transcript gets
its own server; afterwards a slixmpp client must still log in and ping it,
and the server must stop on SIGTERM with exit code 0.
"""
import asyncio
import base64
import difflib
import glob
import os
import re
import socket
import ssl
import time

import pytest

from conftest import DOMAIN, PASSWORD, Server
from xmpp_client import connect

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSCRIPTS = os.path.join(os.path.dirname(HERE), "transcripts")

READ_TIMEOUT = 10.0  # seconds an S: line may wait for its bytes
PROBE_USER = "probe"  # logs in after the transcript to show the server still serves

NS_STREAMS = "http://etherx.jabber.org/streams"
HEADER = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          f"xmlns:stream='{NS_STREAMS}' to='{DOMAIN}' version='1.0'>")
SERVER_HEADER = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 f"xmlns:stream='{NS_STREAMS}' id='{{id}}' from='{DOMAIN}' version='1.0' "
                 f"xml:lang='en'>")
BIND_RESOURCE = "transcript"


class TranscriptError(Exception):
    pass


# --- parsing ---------------------------------------------------------------

def unescape(text, where):
    """Applies the escapes of README.md: \\xHH, \\n, \\r, \\t, \\\\, and
    {repeat N:TEXT}. Returns bytes."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1:i + 2]
            if nxt == "x":
                hexd = text[i + 2:i + 4]
                if not re.fullmatch(r"[0-9A-Fa-f]{2}", hexd):
                    raise TranscriptError(f"{where}: bad \\x escape")
                out.append(int(hexd, 16))
                i += 4
                continue
            simple = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", "{": b"{"}
            if nxt in simple:
                out += simple[nxt]
                i += 2
                continue
            raise TranscriptError(f"{where}: unknown escape \\{nxt}")
        if text.startswith("{repeat ", i):
            m = re.compile(r"\{repeat (\d+):([^}]*)\}").match(text, i)
            if not m:
                raise TranscriptError(f"{where}: malformed {{repeat N:TEXT}}")
            out += unescape(m.group(2), where) * int(m.group(1))
            i = m.end()
            continue
        out += ch.encode()
        i += 1
    return bytes(out)


def expectation(text, where):
    """Turns an S: line into segments: ('lit', bytes), ('id',), ('any',)."""
    segs = []
    for part in re.split(r"(?<!\\)(\{id\}|\{any\})", text):
        if part == "{id}":
            segs.append(("id",))
        elif part == "{any}":
            segs.append(("any",))
        elif part:
            segs.append(("lit", unescape(part, where)))
    if segs and segs[-1] == ("any",):
        raise TranscriptError(f"{where}: an S: line cannot end with {{any}}")
    return segs


def macro_starttls():
    return [
        ("C", HEADER.encode(), "STARTTLS"),
        ("S", expectation(SERVER_HEADER + "<stream:features><starttls "
                          "xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                          "{any}</stream:features>", "STARTTLS"), "STARTTLS"),
        ("C", b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "STARTTLS"),
        ("S", expectation("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", "STARTTLS"),
         "STARTTLS"),
        ("TLS", None, "STARTTLS"),
    ]


def macro_auth(user, where):
    creds = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    jid = f"{user}@{DOMAIN}/{BIND_RESOURCE}"
    return [
        ("C", HEADER.encode(), where),
        ("S", expectation(SERVER_HEADER + "<stream:features><mechanisms "
                          "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{any}<mechanism>PLAIN"
                          "</mechanism>{any}</mechanisms>{any}</stream:features>", where), where),
        ("C", f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}"
              "</auth>".encode(), where),
        ("S", expectation("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></success>", where), where),
        ("C", HEADER.encode(), where),
        ("S", expectation(SERVER_HEADER + "<stream:features><bind "
                          "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>{any}</stream:features>",
                          where), where),
        ("C", f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              f"<resource>{BIND_RESOURCE}</resource></bind></iq>".encode(), where),
        ("S", expectation(f"<iq type='result' id='bind1' to='{jid}'><bind "
                          f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{jid}</jid></bind>"
                          "</iq>", where), where),
    ]


class Transcript:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.config = []
        self.users = set()
        self.xfail = None
        self.port = "c2s"
        self.steps = []
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for n, line in enumerate(lines, 1):
            where = f"{self.name}:{n}"
            line = line.rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("C: ") or line == "C:":
                self.steps.append(("C", unescape(line[3:], where), where))
            elif line.startswith("S: "):
                self.steps.append(("S", expectation(line[3:], where), where))
            elif line.startswith("CONFIG: "):
                self.config.append(line[len("CONFIG: "):])
            elif line.startswith("XFAIL: "):
                self.xfail = line[len("XFAIL: "):]
            elif line == "CONNECT c2s" or line == "CONNECT c2s_tls":
                if self.steps:
                    raise TranscriptError(f"{where}: CONNECT must come before any step")
                self.port = line.split()[1]
            elif line == "STARTTLS":
                self.steps += macro_starttls()
            elif line == "TLS":
                self.steps.append(("TLS", None, where))
            elif re.fullmatch(r"AUTH [a-z0-9]+", line):
                user = line.split()[1]
                self.users.add(user)
                self.steps += macro_auth(user, where)
            elif re.fullmatch(r"NOTHING \d+(\.\d+)?", line):
                self.steps.append(("NOTHING", float(line.split()[1]), where))
            elif re.fullmatch(r"SLEEP \d+(\.\d+)?", line):
                self.steps.append(("SLEEP", float(line.split()[1]), where))
            elif line == "CLOSED":
                self.steps.append(("CLOSED", None, where))
            else:
                raise TranscriptError(f"{where}: cannot parse line: {line!r}")
        if not self.steps:
            raise TranscriptError(f"{self.name}: no steps")


# --- matching --------------------------------------------------------------

MORE = "more"  # the data read so far is a prefix of something that could match
ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def match(segs, data, pos=0):
    """Returns the end of the shortest match of segs at data[pos:], MORE if
    more data might complete a match, or None if none can."""
    if not segs:
        return pos
    seg, rest = segs[0], segs[1:]
    if seg[0] == "lit":
        lit = seg[1]
        avail = data[pos:pos + len(lit)]
        if avail == lit:
            return match(rest, data, pos + len(lit))
        return MORE if lit.startswith(avail) else None
    if seg[0] == "id":
        end = pos
        while end < len(data) and data[end] in ID_CHARS:
            end += 1
        if end == len(data):
            return MORE
        if end == pos:
            return None
        return match(rest, data, end)
    # any: shortest run that lets the rest match
    more = False
    for k in range(pos, len(data) + 1):
        r = match(rest, data, k)
        if r == MORE:
            more = True
        elif r is not None:
            return r
    return MORE if more else None


def render(segs):
    out = b""
    for s in segs:
        out += s[1] if s[0] == "lit" else ("{%s}" % s[0]).encode()
    return out


def show(data):
    """Readable form of wire bytes: one line per element boundary."""
    text = data.decode("utf-8", errors="backslashreplace")
    return text.replace("><", ">\n<").split("\n")


def diff(expected, got):
    lines = difflib.unified_diff(show(expected), show(got), "expected (S:)", "received",
                                 lineterm="", n=3)
    return "\n".join(lines)


# --- running ---------------------------------------------------------------

class Wire:
    def __init__(self, server, port):
        self.server = server
        self.tls = port == "c2s_tls"
        self.sock = socket.create_connection(("127.0.0.1", getattr(server, port)), timeout=10)
        if self.tls:
            self.sock = self.context().wrap_socket(self.sock, server_hostname=DOMAIN)
        self.buf = b""
        self.eof = False

    def context(self):
        ctx = ssl.create_default_context(cafile=self.server.cert)
        ctx.set_alpn_protocols(["xmpp-client"])
        return ctx

    def read(self, deadline):
        """Reads what arrives before deadline; False on timeout or EOF."""
        if self.eof:
            return False
        remaining = deadline - time.time()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, ssl.SSLEOFError, BrokenPipeError):
            chunk = b""
        except ssl.SSLError as e:
            raise AssertionError(f"TLS error while reading: {e}")
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError) as e:
            return str(e)
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def run_steps(t, wire):
    for i, (kind, arg, where) in enumerate(t.steps):
        if kind == "C":
            # A failed send is not an error here: the server may already
            # have closed (a limit hit mid-send); the next S: line checks
            # what it said.
            wire.send(arg)
        elif kind == "S":
            deadline = time.time() + READ_TIMEOUT
            while True:
                r = match(arg, wire.buf)
                if r not in (None, MORE):
                    wire.buf = wire.buf[r:]
                    break
                if r is None or not wire.read(deadline):
                    why = ("the server closed the connection" if wire.eof else
                           "no match" if r is None else f"timed out after {READ_TIMEOUT}s")
                    pytest.fail(f"{where}: server output does not match ({why})\n"
                                f"{diff(render(arg), wire.buf)}", pytrace=False)
        elif kind == "TLS":
            if wire.buf:
                pytest.fail(f"{where}: unexpected bytes before the TLS handshake:\n"
                            f"{wire.buf!r}", pytrace=False)
            wire.sock = wire.context().wrap_socket(wire.sock, server_hostname=DOMAIN)
            wire.tls = True
        elif kind == "NOTHING":
            deadline = time.time() + arg
            while wire.read(deadline):
                pass
            if wire.buf or wire.eof:
                pytest.fail(f"{where}: expected nothing for {arg}s, got "
                            f"{wire.buf!r}{' and EOF' if wire.eof else ''}", pytrace=False)
        elif kind == "SLEEP":
            time.sleep(arg)
        elif kind == "CLOSED":
            deadline = time.time() + READ_TIMEOUT
            while not wire.eof and wire.read(deadline):
                pass
            if wire.buf:
                pytest.fail(f"{where}: expected the connection to close, got more output:\n"
                            + "\n".join(show(wire.buf)), pytrace=False)
            if not wire.eof:
                pytest.fail(f"{where}: the server did not close the connection within "
                            f"{READ_TIMEOUT}s", pytrace=False)
    if wire.buf:
        pytest.fail(f"{t.name}: unmatched server output after the last step:\n"
                    + "\n".join(show(wire.buf)), pytrace=False)


def collect():
    params = []
    for path in sorted(glob.glob(os.path.join(TRANSCRIPTS, "*.xmpp"))):
        t = Transcript(path)
        marks = [pytest.mark.xfail(strict=True, reason=t.xfail)] if t.xfail else []
        params.append(pytest.param(t, id=t.name, marks=marks))
    return params


@pytest.mark.parametrize("transcript", collect())
def test_transcript(tmp_path, transcript):
    srv = Server(str(tmp_path), extra="\n".join(transcript.config))
    for user in sorted(transcript.users | {PROBE_USER}):
        srv.adduser(user)
    srv.start()
    try:
        wire = Wire(srv, transcript.port)
        try:
            run_steps(transcript, wire)
        finally:
            wire.close()

        async def probe():
            c = await connect(srv, PROBE_USER)
            await c["xep_0199"].ping(DOMAIN, timeout=5)
            await c.close()

        asyncio.run(probe())
    finally:
        rc = srv.stop()
    log = srv.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
    assert rc == 0, f"parleyd exited with {rc}\n{log[-5000:]}"


def test_matcher():
    """The matcher itself: placeholders, prefixes and failures."""
    segs = expectation("<a id='{id}'>{any}</a>", "t")
    assert match(segs, b"<a id='abc'>x<b/></a>rest") == len(b"<a id='abc'>x<b/></a>")
    assert match(segs, b"<a id='abc'>x") == MORE
    assert match(segs, b"<a id='ab") == MORE
    assert match(segs, b"<b") is None
    assert match(segs, b"<a id=''>") is None
    assert match(expectation("<x/>", "t"), b"<x/><y/>") == 4
    assert unescape("{repeat 3:ab}\\x00\\n", "t") == b"ababab\x00\n"
    assert render(expectation("a\\{id}", "t")) == b"a{id}"
    with pytest.raises(TranscriptError):
        expectation("<a>{any}", "t")
