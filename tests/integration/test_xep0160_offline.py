"""XEP-0160 offline messages (RFC 6121 §8.5.2.2.1) with XEP-0203 delay stamps,
against the real parleyd with slixmpp clients."""
import asyncio
import calendar
import os
import sqlite3
import time

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import DOMAIN
from xmpp_client import Client

NS_DELAY = "{urn:xmpp:delay}delay"
NS_ERR = "{jabber:client}error"


async def login(server, user, resource="r", presence=True, priority=None):
    """Logs in without the automatic presence; sends it as asked."""
    c = Client(f"{user}@{DOMAIN}/{resource}", cafile=server.cert, mech="SCRAM-SHA-256",
               channel_binding=False)
    # slixmpp's "message" event skips messages without a body (chat
    # states, errors to them): collect every <message/> instead.
    c.all_messages = asyncio.Queue()
    c.register_handler(Callback("all messages", MatchXPath("{jabber:client}message"),
                                c.all_messages.put_nowait))
    ok = await c.login(server.c2s, presence=False)
    assert ok, f"login of {user} failed"
    if presence:
        c.send_presence(ppriority=priority)
    return c


async def sync(c):
    """A round trip to the server: everything c sent before is routed, and
    the store requests it caused are queued ahead of any later one."""
    await c["xep_0199"].ping(DOMAIN, timeout=5)


async def no_message(c, wait=1.5):
    try:
        m = await asyncio.wait_for(c.all_messages.get(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected message: " + str(m))


async def get_messages(c, n, timeout=10):
    return [await asyncio.wait_for(c.all_messages.get(), timeout) for _ in range(n)]


def delays(m):
    return [(d.get("from"), d.get("stamp")) for d in m.xml.findall(NS_DELAY)]


def send_chat(c, to, body, mid, mtype="chat"):
    m = c.make_message(mto=to, mbody=body, mtype=mtype)
    m["id"] = mid
    m.send()


def test_stored_and_delivered_in_order_with_delay(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        before = int(time.time())
        for i in range(3):
            send_chat(alice, "bob@localhost", f"offline {i}", f"m{i}")
        await sync(alice)
        await no_message(alice, 1)  # stored: the sender hears nothing
        bob = await login(server, "bob", "b")
        got = await get_messages(bob, 3)
        after = int(time.time())
        for i, m in enumerate(got):
            assert m["body"] == f"offline {i}"
            assert m["id"] == f"m{i}"
            assert m["type"] == "chat"
            assert m["from"].full == "alice@localhost/a"
            (dfrom, stamp), = delays(m)
            assert dfrom == DOMAIN
            t = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
            assert before - 1 <= t <= after + 1
        await no_message(bob, 1)
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_existing_delay_is_kept(server):
    """XEP-0203: a delay added elsewhere stays next to ours."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        m = alice.make_message(mto="bob@localhost", mbody="relayed", mtype="chat")
        m.xml.append(ET.Element(NS_DELAY, {"from": "elsewhere.example",
                                           "stamp": "2002-09-10T23:08:25Z"}))
        # one that pretends to be from this server is replaced by the real one
        m.xml.append(ET.Element(NS_DELAY, {"from": DOMAIN, "stamp": "1999-01-01T00:00:00Z"}))
        m.send()
        await sync(alice)
        bob = await login(server, "bob", "b")
        got, = await get_messages(bob, 1)
        ds = delays(got)
        assert ("elsewhere.example", "2002-09-10T23:08:25Z") in ds
        ours = [stamp for f, stamp in ds if f == DOMAIN]
        assert len(ds) == 2 and len(ours) == 1 and not ours[0].startswith("1999")
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_unknown_user_gets_service_unavailable(server):
    """RFC 6121 §8.5.1, with the same error as other undeliverable messages."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        send_chat(alice, "nobody@localhost", "hello?", "x1")
        e1 = await asyncio.wait_for(alice.all_messages.get(), 5)
        assert e1["type"] == "error" and e1["id"] == "x1"
        assert e1["error"]["condition"] == "service-unavailable"
        assert e1["error"]["type"] == "cancel"
        assert e1["from"].bare == "nobody@localhost"
        # groupchat to an offline account is bounced by the router (§8.5.2.1.1)
        send_chat(alice, "bob@localhost", "hello?", "x2", mtype="groupchat")
        e2 = await asyncio.wait_for(alice.all_messages.get(), 5)
        assert e2["id"] == "x2"
        assert ET.tostring(e1.xml.find(NS_ERR)) == ET.tostring(e2.xml.find(NS_ERR))
        await alice.close()

    asyncio.run(run())


def test_count_quota(server):
    """The 1001st message gets resource-constraint (wait); the 1000 are kept."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        for i in range(1000):
            send_chat(alice, "bob@localhost", f"n{i}", f"q{i}")
            if i % 100 == 99:
                await sync(alice)
        await sync(alice)
        await no_message(alice, 1)
        send_chat(alice, "bob@localhost", "one too many", "over")
        e = await asyncio.wait_for(alice.all_messages.get(), 10)
        assert e["type"] == "error" and e["id"] == "over"
        assert e["error"]["condition"] == "resource-constraint"
        assert e["error"]["type"] == "wait"
        bob = await login(server, "bob", "b")
        got = await get_messages(bob, 1000)
        assert [m["body"] for m in got] == [f"n{i}" for i in range(1000)]
        await no_message(bob, 1)
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_byte_quota(server):
    """A few large messages fill the byte cap (2 MiB) long before the count."""
    # 2 MiB from one client: not what limits.bytes_per_second is about here.
    server.configure("limits.bytes_per_second: 0\n")
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        body = "x" * (200 * 1024)
        for i in range(10):  # 10 * ~200 KiB fit
            send_chat(alice, "bob@localhost", body, f"big{i}")
        await sync(alice)
        await no_message(alice, 1)
        send_chat(alice, "bob@localhost", body, "big10")
        e = await asyncio.wait_for(alice.all_messages.get(), 10)
        assert e["id"] == "big10" and e["error"]["condition"] == "resource-constraint"
        # a small one still fits
        send_chat(alice, "bob@localhost", "small", "s")
        await sync(alice)
        await no_message(alice, 1)
        bob = await login(server, "bob", "b")
        got = await get_messages(bob, 11)
        assert [m["id"] for m in got] == [f"big{i}" for i in range(10)] + ["s"]
        assert all(m["body"] == body for m in got[:10])
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_headline_and_chat_states_not_stored(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        send_chat(alice, "bob@localhost", "news", "h1", mtype="headline")
        m = alice.make_message(mto="bob@localhost", mtype="chat")
        m["id"] = "cs"
        m.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        m.send()
        send_chat(alice, "bob@localhost", "real", "c1")
        await sync(alice)
        await no_message(alice, 1)  # none of them bounced
        bob = await login(server, "bob", "b")
        got, = await get_messages(bob, 1)
        assert got["id"] == "c1"
        await no_message(bob, 1.5)
        await alice.close()
        await bob.close()

    asyncio.run(run())


def count_stored(server):
    db = sqlite3.connect(os.path.join(server.dir, "data", "parley.db"))
    n, = db.execute("SELECT COUNT(*) FROM offline_messages").fetchone()
    db.close()
    return n


def test_delivered_once_then_deleted(server):
    """Neither a presence update nor a second login gets them again, and
    they are gone from the database."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        send_chat(alice, "bob@localhost", "once", "o1")
        await sync(alice)
        bob = await login(server, "bob", "b1")
        got, = await get_messages(bob, 1)
        assert got["body"] == "once"
        bob.send_presence(pshow="away")
        bob.send_presence(pshow="dnd", ppriority=5)
        await no_message(bob, 1)
        await bob.close()
        bob = await login(server, "bob", "b2")
        await no_message(bob, 2)
        await alice.close()
        await bob.close()

    asyncio.run(run())
    assert server.stop() == 0
    assert count_stored(server) == 0


def test_survives_restart(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run_send():
        alice = await login(server, "alice", "a")
        for i in range(2):
            send_chat(alice, "bob@localhost", f"durable {i}", f"d{i}")
        await sync(alice)
        await no_message(alice, 0.5)
        await alice.close()

    async def run_receive():
        bob = await login(server, "bob", "b")
        got = await get_messages(bob, 2)
        assert [m["body"] for m in got] == ["durable 0", "durable 1"]
        assert all(delays(m)[0][0] == DOMAIN for m in got)
        await bob.close()

    asyncio.run(run_send())
    assert server.stop() == 0
    server.start()
    asyncio.run(run_receive())


def test_negative_priority_does_not_trigger_delivery(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        send_chat(alice, "bob@localhost", "later", "l1")
        await sync(alice)
        bob = await login(server, "bob", "b", priority=-1)
        await sync(bob)
        await no_message(bob, 2)
        # RFC 6121 §8.5.2.1: with only a negative-priority resource, a
        # message to the bare JID is still offline, and is stored too.
        send_chat(alice, "bob@localhost", "later still", "l2")
        await sync(alice)
        await no_message(bob, 1)
        await no_message(alice, 0.5)
        # a usable priority now fetches both, in order
        bob.send_presence(ppriority=0)
        got = await get_messages(bob, 2)
        assert [m["id"] for m in got] == ["l1", "l2"]
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_disco_feature(server):
    server.adduser("alice")
    server.start()

    async def run():
        c = await login(server, "alice", "a")
        info = await c["xep_0030"].get_info(jid=DOMAIN, timeout=5)
        assert "msgoffline" in info["disco_info"]["features"]
        await c.close()

    asyncio.run(run())


def test_stored_rows_are_checked_before_delivery(server):
    """What comes back from the database is parsed again and must be one
    chat/normal message for this account; anything else is dropped."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run_send():
        alice = await login(server, "alice", "a")
        send_chat(alice, "bob@localhost", "good 1", "g1")
        await sync(alice)
        await alice.close()

    asyncio.run(run_send())
    assert server.stop() == 0
    db = sqlite3.connect(os.path.join(server.dir, "data", "parley.db"))
    bad = [
        b"<message to='alice@localhost' type='chat'><body>not bob's</body></message>",
        b"<message to='bob@localhost' type='chat'><body>broken</body>",
        b"<iq to='bob@localhost' type='get' id='i'><ping xmlns='urn:xmpp:ping'/></iq>",
        b"<message to='bob@localhost' type='headline'><body>hl</body></message>",
        b"<message to='bob@localhost' type='chat'><body>a</body></message>"
        b"<message to='bob@localhost' type='chat'><body>smuggled</body></message>",
        b"<!DOCTYPE x><message to='bob@localhost' type='chat'><body>dtd</body></message>",
        b"</stream:stream><message to='bob@localhost' type='chat'><body>x</body></message>",
    ]
    good = b"<message to='bob@localhost' from='alice@localhost/a' type='chat' id='g2'><body>good 2</body></message>"
    with db:
        for blob in bad + [good]:
            db.execute("INSERT INTO offline_messages (host, username, stored, size, stanza)"
                       " VALUES ('localhost', 'bob', 0, ?, ?)", (len(blob), blob))
    db.close()
    server.start()

    async def run_receive():
        bob = await login(server, "bob", "b")
        got = await get_messages(bob, 2)
        assert [m["id"] for m in got] == ["g1", "g2"]
        assert delays(got[1]) == [(DOMAIN, "1970-01-01T00:00:00Z")]
        await no_message(bob, 1.5)
        await bob.close()

    asyncio.run(run_receive())
    assert server.stop() == 0
    assert count_stored(server) == 0  # the damaged rows went too


def test_deleting_account_removes_its_messages(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice", "a")
        send_chat(alice, "bob@localhost", "gone", "g")
        await sync(alice)
        await alice.close()

    asyncio.run(run())
    assert server.stop() == 0
    assert count_stored(server) == 1
    server.ctl("deluser", f"bob@{DOMAIN}")
    assert count_stored(server) == 0
