"""XEP-0012 Last Activity: server uptime (§5), an account's last logout and
status (§3), who may ask, persistence and deletion with the account."""
import asyncio
import time

import pytest
from slixmpp.exceptions import IqError

from conftest import DOMAIN
from xmpp_client import Client

NS = "jabber:iq:last"
ALICE = "alice@" + DOMAIN


async def login(server, user, presence=True, resource="test"):
    c = Client(f"{user}@{DOMAIN}/{resource}", cafile=server.cert, mech="SCRAM-SHA-256",
               channel_binding=False)
    c.register_plugin("xep_0012")
    assert await c.login(server.c2s, presence=presence)
    return c


async def last(c, jid):
    r = await c["xep_0012"].get_last_activity(jid, timeout=10)
    q = r.xml.find("{%s}query" % NS)
    return int(q.get("seconds")), (q.text or "")


async def error_of(coro):
    with pytest.raises(IqError) as e:
        await coro
    return e.value.iq["error"]["condition"]


def test_server_uptime(server):
    server.adduser("alice")
    started = time.monotonic()
    server.start()

    async def run():
        alice = await login(server, "alice")
        info = await alice["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        assert NS in info["disco_info"]["features"]
        await asyncio.sleep(2.2)
        secs, status = await last(alice, DOMAIN)
        assert 2 <= secs <= time.monotonic() - started + 1
        assert status == ""  # §5: no text for a server
        await alice.close()

    asyncio.run(run())


def test_online_account_is_zero(server):
    server.adduser("alice")
    server.start()

    async def run():
        first = await login(server, "alice", resource="one")
        await first.close()  # a logout on record
        await asyncio.sleep(1.2)
        alice = await login(server, "alice", resource="two")  # available
        assert await last(alice, ALICE) == (0, "")
        # with 'to' omitted too (RFC 6120 §10.3.3: the account itself)
        iq = alice.Iq()
        iq["type"] = "get"
        iq.enable("last_activity")
        r = await iq.send(timeout=10)
        assert r["last_activity"]["seconds"] == 0
        await alice.close()

    asyncio.run(run())


def test_last_logout_and_status(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        alice.send_presence(ptype="unavailable", pstatus="Heading Home")
        await asyncio.sleep(0.2)
        await alice.close()
        await asyncio.sleep(2.2)
        # a session without available presence sees the stored logout
        again = await login(server, "alice", presence=False, resource="quiet")
        secs, status = await last(again, ALICE)
        assert 2 <= secs <= 10
        assert status == "Heading Home"
        await again.close()
        # that quiet session's own end is a logout too, keeping the text
        await asyncio.sleep(0.3)
        third = await login(server, "alice", presence=False, resource="third")
        secs, status = await last(third, ALICE)
        assert secs <= 1 and status == "Heading Home"
        # going available and leaving without a status clears the text
        third.send_presence()
        await asyncio.sleep(0.2)
        await third.close()
        await asyncio.sleep(0.3)
        fourth = await login(server, "alice", presence=False, resource="fourth")
        secs, status = await last(fourth, ALICE)
        assert secs <= 1 and status == ""
        await fourth.close()

    asyncio.run(run())


def test_never_logged_out(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice", presence=False)
        assert await error_of(last(alice, ALICE)) == "item-not-found"
        await alice.close()

    asyncio.run(run())


def test_other_accounts_forbidden(server):
    """§3/§8: only who may see the account's presence; without rosters that
    is nobody else (existing account or not, online or not)."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice")
        await alice.close()
        bob = await login(server, "bob")
        for who in (ALICE, "nobody@" + DOMAIN):
            assert await error_of(last(bob, who)) == "forbidden", who
        await bob.close()

    asyncio.run(run())


def test_survives_restart_and_dies_with_the_account(server):
    server.adduser("alice")
    server.start()

    async def leave():
        alice = await login(server, "alice")
        alice.send_presence(ptype="unavailable", pstatus="Gone fishing")
        await asyncio.sleep(0.2)
        await alice.close()

    async def ask():
        alice = await login(server, "alice", presence=False)
        try:
            return await last(alice, ALICE)
        finally:
            await alice.close()

    asyncio.run(leave())
    time.sleep(0.3)
    assert server.stop() == 0
    time.sleep(1.2)
    server.start()
    secs, status = asyncio.run(ask())
    assert secs >= 1 and status == "Gone fishing"
    server.ctl("deluser", ALICE)
    server.adduser("alice")

    async def ask_fresh():
        alice = await login(server, "alice", presence=False)
        try:
            return await error_of(last(alice, ALICE))
        finally:
            await alice.close()

    assert asyncio.run(ask_fresh()) == "item-not-found"


def test_shutdown_with_available_sessions(server):
    """Sessions still online at SIGTERM end cleanly (the server fixture checks
    the exit status); their logout hooks run during shutdown."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        a = await login(server, "alice")
        b = await login(server, "bob")
        await asyncio.sleep(0.2)
        rc = await asyncio.get_running_loop().run_in_executor(None, server.stop)
        assert rc == 0, server.log()[-3000:]
        await a.close()
        await b.close()

    asyncio.run(run())
