"""RFC 6120 core behaviour with real clients: routing between workers,
resource conflicts, the first modules, unhandled IQs, reload and shutdown."""
import asyncio
import os
import re
import signal
import subprocess
import time

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from conftest import (DOMAIN, PARLEYCTL, Server, raw_login, recv_all, recv_until)
from xmpp_client import connect


def worker_of(server, full_jid):
    m = re.findall(r"worker (\d+) bound " + re.escape(full_jid) + r"$", server.log(), re.M)
    return int(m[-1]) if m else None


def test_chat_between_workers(server):
    """Two users whose sessions live on different worker threads chat."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await connect(server, "alice", resource="a")
        wa = worker_of(server, "alice@localhost/a")
        bob = None
        for i in range(40):  # SO_REUSEPORT hashes by source port: retry until it differs
            c = await connect(server, "bob", resource=f"b{i}")
            if worker_of(server, f"bob@localhost/b{i}") != wa:
                bob = c
                break
            await c.close()
        assert bob is not None, "never landed on another worker"
        bjid = bob.boundjid.full
        for n in range(20):
            alice.send_message(mto=bjid, mbody=f"hello {n}", mtype="chat")
        for n in range(20):
            m = await asyncio.wait_for(bob.messages.get(), 5)
            assert m["body"] == f"hello {n}"  # order is kept across workers
            assert m["from"].full == "alice@localhost/a"  # stamped by the server
        # and back, to the bare JID (highest-priority resource)
        bob.send_message(mto="alice@localhost", mbody="hi alice", mtype="chat")
        m = await asyncio.wait_for(alice.messages.get(), 5)
        assert m["body"] == "hi alice" and m["from"].full == bjid
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_message_to_unavailable_is_bounced(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await connect(server, "alice")
        alice.send_message(mto="nobody@localhost", mbody="x", mtype="chat")
        m = await asyncio.wait_for(alice.messages.get(), 5)
        assert m["type"] == "error"
        assert m["error"]["condition"] == "service-unavailable"
        # IQ to a full JID that is not online (RFC 6121 §8.5.3.1)
        with pytest.raises(IqError) as e:
            await alice["xep_0199"].ping("alice@localhost/ghost", timeout=5)
        assert e.value.iq["error"]["condition"] == "service-unavailable"
        await alice.close()

    asyncio.run(run())


def test_ping_version_disco(server):
    server.adduser("alice")
    server.start()

    async def run():
        c = await connect(server, "alice")
        await c["xep_0199"].ping(DOMAIN, timeout=5)
        v = await c["xep_0092"].get_version(DOMAIN, timeout=5)
        assert v["software_version"]["name"] == "Parley"
        assert v["software_version"]["version"]
        info = await c["xep_0030"].get_info(jid=DOMAIN, timeout=5)
        feats = set(info["disco_info"]["features"])
        assert {"urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items"} <= feats
        ids = info["disco_info"]["identities"]
        assert ("server", "im", None, "Parley") in ids
        await c.close()

    asyncio.run(run())


def test_unhandled_iq_gets_service_unavailable(server):
    server.adduser("alice")
    server.start()

    async def run():
        c = await connect(server, "alice")
        iq = c.make_iq_get(queryxmlns="urn:example:nothing", ito=DOMAIN)
        with pytest.raises(IqError) as e:
            await iq.send(timeout=5)
        assert e.value.iq["error"]["condition"] == "service-unavailable"
        assert e.value.iq["error"]["type"] == "cancel"
        # an IQ set to one's own account that nobody handles (no 'to')
        iq = c.make_iq_set()
        iq.append(slixmpp.xmlstream.ET.Element("{urn:example:nothing}query"))
        with pytest.raises(IqError) as e:
            await iq.send(timeout=5)
        assert e.value.iq["error"]["condition"] == "service-unavailable"
        await c.close()

    asyncio.run(run())


def test_resource_conflict_new_session_wins(server):
    """RFC 6120 §7.7.2.2: the old session gets a conflict stream error."""
    server.adduser("alice")
    server.start()
    old, _ = raw_login(server, "alice", resource="same")
    new, data = raw_login(server, "alice", resource="same")
    assert b"<jid>alice@localhost/same</jid>" in data
    got = recv_all(old, timeout=5)
    assert b"<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in got
    assert got.endswith(b"</stream:stream>")
    # the new session is routable
    new.sendall(b"<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"id='p'" in recv_until(new, b"id='p'")
    new.close()


def test_resource_conflict_refuse_new(tmp_path):
    srv = Server(str(tmp_path), extra="resource_conflict: refuse_new")
    srv.adduser("alice")
    srv.start()
    try:
        old, _ = raw_login(srv, "alice", resource="same")
        with pytest.raises(AssertionError) as e:
            raw_login(srv, "alice", resource="same")
        assert "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" in str(e.value)
        old.sendall(b"<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert b"id='p'" in recv_until(old, b"id='p'")
    finally:
        assert srv.stop() == 0


def test_sighup_reload_keeps_sessions(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await connect(server, "alice")
        bob = await connect(server, "bob")
        before = open(server.cert, "rb").read()
        # a new certificate, then reload: sessions stay, new logins see it
        subprocess.run([PARLEYCTL, "cert", "generate", DOMAIN, "--dir", server.dir, "--force"],
                       check=True, capture_output=True)
        assert open(server.cert, "rb").read() != before
        server.signal(signal.SIGHUP)
        for _ in range(50):
            if "reloaded" in server.log():
                break
            await asyncio.sleep(0.1)
        assert "reloaded" in server.log()
        alice.send_message(mto=bob.boundjid.full, mbody="still here", mtype="chat")
        m = await asyncio.wait_for(bob.messages.get(), 5)
        assert m["body"] == "still here"
        # the new certificate is the one served now (verification uses the new file)
        carol = await connect(server, "alice", resource="after-reload")
        await carol.close()
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_sigterm_closes_streams(server):
    server.adduser("alice")
    server.start()
    s, _ = raw_login(server, "alice")
    server.signal(signal.SIGTERM)
    got = recv_all(s, timeout=10)
    assert b"<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in got
    assert got.endswith(b"</stream:stream>")
    server.proc.wait(timeout=10)
    assert server.proc.returncode == 0


def plain_attempt(server, user, password, source_ip="127.0.0.1"):
    """One PLAIN attempt over STARTTLS from source_ip; returns (server reply, seconds)."""
    import base64
    import socket
    import ssl
    from conftest import STREAM_HEADER
    s = socket.create_connection(("127.0.0.1", server.c2s), timeout=10,
                                 source_address=(source_ip, 0))
    s.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    recv_until(s, b"/>")
    t = ssl.create_default_context(cafile=server.cert).wrap_socket(s, server_hostname=DOMAIN)
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(t, b"</stream:features>")
    auth = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    start = time.monotonic()
    t.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
              .encode())
    reply = b""
    t.settimeout(15)
    while not (b"</failure>" in reply or b"</success>" in reply or b"<success/>" in reply):
        chunk = t.recv(4096)
        if not chunk:
            break
        reply += chunk
    elapsed = time.monotonic() - start
    t.close()
    return reply, elapsed


def test_failed_logins_throttled_per_ip(tmp_path):
    srv = Server(str(tmp_path), extra="limits.auth_failures_per_ip: 3\n"
                                      "limits.auth_failures_per_account: 0")
    srv.adduser("alice")
    srv.start()
    try:
        for _ in range(3):
            reply, _ = plain_attempt(srv, "alice", "wrong")
            assert b"<not-authorized/>" in reply
        # this address must now wait, even with the right password
        reply, _ = plain_attempt(srv, "alice", "correct horse battery staple")
        assert b"<temporary-auth-failure/>" in reply
        # the legitimate user elsewhere is not affected
        reply, _ = plain_attempt(srv, "alice", "correct horse battery staple", "127.0.0.2")
        assert b"<success" in reply
    finally:
        assert srv.stop() == 0


def test_failed_logins_delayed_per_account(tmp_path):
    srv = Server(str(tmp_path), extra="limits.auth_failures_per_ip: 0\n"
                                      "limits.auth_failures_per_account: 2")
    srv.adduser("alice")
    srv.start()
    try:
        for i in range(2):  # a distributed guess: a new address each time
            reply, took = plain_attempt(srv, "alice", "wrong", f"127.0.1.{i + 1}")
            assert b"<not-authorized/>" in reply and took < 0.9
        reply, took = plain_attempt(srv, "alice", "wrong", "127.0.1.9")
        assert b"<not-authorized/>" in reply and took >= 0.9  # held back
        # an unknown account is treated alike (no enumeration by timing)
        for i in range(2):
            plain_attempt(srv, "nobody", "wrong", f"127.0.2.{i + 1}")
        reply2, took2 = plain_attempt(srv, "nobody", "wrong", "127.0.2.9")
        assert reply2 == reply and took2 >= 0.9
        # the owner is never locked out
        reply, took = plain_attempt(srv, "alice", "correct horse battery staple", "127.0.1.20")
        assert b"<success" in reply
    finally:
        assert srv.stop() == 0


def test_dropped_connection_sends_one_unavailable(server):
    """RFC 6121 §4.5.3: a resource whose connection drops is announced
    unavailable to the account's other resources, exactly once."""
    server.adduser("alice")
    server.start()
    b, _ = raw_login(server, "alice", resource="B")
    b.sendall(b"<presence/>")
    assert b"from='alice@localhost/B'" in recv_until(b, b"/>")
    a, _ = raw_login(server, "alice", resource="A")
    a.sendall(b"<presence/>")
    got = recv_until(b, b"</presence>")
    # (with the XEP-0153 avatar hash the server adds to available presence)
    assert b"<presence from='alice@localhost/A' to='alice@localhost'>" in got, got
    a.close()  # no </stream:stream>: the TCP connection just goes
    got = recv_until(b, b"never", timeout=3)
    assert got.count(b"type='unavailable' from='alice@localhost/A'") == 1, got
