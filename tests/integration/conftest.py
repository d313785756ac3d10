"""Fixtures: a real parleyd per test, with its own directory, ports and users.

The binaries come from $PARLEY_BUILD (default: ./build). Each server is
started through the documented commands (parleyctl to create users, parleyd
--config) and stopped with SIGTERM; a non-zero exit or a sanitizer report in
its log fails the test.
"""
import asyncio
import logging
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PARLEY_BUILD", os.path.join(ROOT, "build"))
PARLEYD = os.path.join(BUILD, "parleyd")
PARLEYCTL = os.path.join(BUILD, "tools", "parleyctl")
DOMAIN = "localhost"
PASSWORD = "correct horse battery staple"


def _below_ephemeral():
    """The highest port below the kernel's range for outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return min(32767, int(f.read().split()[0]) - 1)
    except (OSError, ValueError, IndexError):
        return 32767


_PORTS_GIVEN = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on. It comes from below
    the ephemeral range, so that no outgoing connection (a client, a server
    connecting to a peer) can take it between this check and the server's
    bind; a port is given out once per test run."""
    import random
    hi = _below_ephemeral()
    for _ in range(2000):
        port = random.randint(10000, hi)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError("no free port")


class Server:
    def __init__(self, tmp_path, workers=2, extra=""):
        self.dir = tmp_path
        self.c2s = free_port()
        self.c2s_tls = free_port()
        self.conf = os.path.join(tmp_path, "parley.conf")
        self.log_path = os.path.join(tmp_path, "parleyd.log")
        self.cert = os.path.join(tmp_path, DOMAIN + ".crt")
        self.key = os.path.join(tmp_path, DOMAIN + ".key")
        self.workers = workers
        self.configure(extra)
        subprocess.run([PARLEYCTL, "cert", "generate", DOMAIN, "--dir", str(tmp_path)],
                       check=True, capture_output=True)
        self.proc = None

    def configure(self, extra=""):
        """(Re)writes the configuration with these extra top-level lines;
        before start(), or followed by a SIGHUP for reloadable options."""
        base = f"""log_level: debug
workers: {self.workers}
interfaces: ["127.0.0.1"]
c2s_port: {self.c2s}
c2s_tls_port: {self.c2s_tls}
s2s_port: 0
s2s_tls_port: 0
http_port: 0
scram_iterations: 4096
"""
        # A key given in extra replaces the default above (keys may appear once).
        given = {line.split(":", 1)[0].strip() for line in extra.splitlines() if ":" in line}
        base = "".join(line + "\n" for line in base.splitlines()
                       if line.split(":", 1)[0] not in given)
        with open(self.conf, "w") as f:
            f.write(f"""# written by tests/integration/conftest.py
{base}{extra}
hosts:
  - domain: {DOMAIN}
    certificate: {DOMAIN}.crt
    key: {DOMAIN}.key
""")

    def ctl(self, *args, input=None, check=True):
        return subprocess.run([PARLEYCTL, "--config", self.conf, *args], input=input,
                              capture_output=True, text=True, check=check)

    def adduser(self, user, password=PASSWORD):
        self.ctl("adduser", f"{user}@{DOMAIN}", input=password + "\n")
        return f"{user}@{DOMAIN}"

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PARLEYD, "--config", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("parleyd exited at start:\n" + self.log())
            try:
                for p in (self.c2s, self.c2s_tls):
                    socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("parleyd did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("parleyd did not stop on SIGTERM\n" + self.log())
        self.logf.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        return ctx


@pytest.fixture
def server(tmp_path):
    srv = Server(str(tmp_path))
    yield srv
    rc = srv.stop()
    log = srv.log()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-5000:]
    assert rc == 0, f"parleyd exited with {rc}\n{log[-5000:]}"


def raw_connect(port, tls=False, cafile=None, alpn=None):
    """A plain socket (optionally direct TLS) for wire-level tests."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.create_default_context(cafile=cafile)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        s = ctx.wrap_socket(s, server_hostname=DOMAIN)
    return s


def recv_until(sock, needle, timeout=10):
    """Reads until needle (bytes) appears or the peer closes; returns all."""
    sock.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while needle not in data and time.time() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock, timeout=10):
    """Reads until the peer closes."""
    sock.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while time.time() < end:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


logging.getLogger("slixmpp").setLevel(logging.WARNING)


STREAM_HEADER = ("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


def raw_login(server, user, password=PASSWORD, resource="raw", header=None):
    """STARTTLS + SASL PLAIN + bind on a raw socket; returns (tls socket, bytes read).
    header, if given, opens the stream after SASL instead of STREAM_HEADER.
    The server's domain is server.domain if it has one (else DOMAIN), and its
    certificate is checked against server.cafile if set (else server.cert),
    unless server.c2s_unverified is true."""
    domain = getattr(server, "domain", DOMAIN)
    cafile = getattr(server, "cafile", None) or server.cert
    import base64
    s = raw_connect(server.c2s)
    s.sendall((STREAM_HEADER % domain).encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in recv_until(s, b"/>")
    ctx = ssl.create_default_context(cafile=cafile)
    if getattr(server, "c2s_unverified", False):
        # A test that gives the server a deliberately bad certificate (for
        # its server-to-server side) still logs its users in.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s, server_hostname=domain)
    t.sendall((STREAM_HEADER % domain).encode())
    recv_until(t, b"</stream:features>")
    auth = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    t.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
              .encode())
    assert b"<success" in recv_until(t, b"</success>")
    t.sendall((header or STREAM_HEADER % domain).encode())
    recv_until(t, b"</stream:features>")
    t.sendall(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              f"<resource>{resource}</resource></bind></iq>".encode())
    data = recv_until(t, b"</iq>")
    assert b"type='result'" in data, data
    return t, data
