"""XEP-0202 Entity Time from the server itself."""
import asyncio
import datetime
import re

import pytest
from slixmpp.exceptions import IqError

from conftest import DOMAIN
from xmpp_client import connect

NS = "urn:xmpp:time"


async def login(server, user):
    c = await connect(server, user)
    c.register_plugin("xep_0202")
    return c


def test_server_time(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        info = await alice["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        assert NS in info["disco_info"]["features"]
        before = datetime.datetime.now(datetime.timezone.utc)
        r = await alice["xep_0202"].get_entity_time(DOMAIN, timeout=10)
        after = datetime.datetime.now(datetime.timezone.utc)
        assert r["from"].full == DOMAIN
        t = r.xml.find("{%s}time" % NS)
        tzo = t.find("{%s}tzo" % NS).text
        utc = t.find("{%s}utc" % NS).text
        # §3: tzo is [+-]hh:mm, utc an XEP-0082 DateTime in UTC
        assert re.fullmatch(r"[+-]\d\d:\d\d", tzo), tzo
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", utc), utc
        when = datetime.datetime.fromisoformat(utc.replace("Z", "+00:00"))
        slack = datetime.timedelta(seconds=2)
        assert before - slack <= when <= after + slack
        # the offset is the server's own zone (the tests run it on this host)
        local = datetime.datetime.now().astimezone().utcoffset()
        sign = -1 if tzo[0] == "-" else 1
        off = sign * datetime.timedelta(hours=int(tzo[1:3]), minutes=int(tzo[4:6]))
        assert off == local
        # (slixmpp's r["entity_time"] accessors cannot be used: get_utc appends
        # a second 'Z' to the spec's format, the one its own set_utc writes.)
        await alice.close()

    asyncio.run(run())


def test_time_set_and_account_jids_not_served(server):
    """Only get, and only to the server: an account's time is its clients'."""
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        iq = alice.Iq()
        iq["type"] = "set"
        iq["to"] = DOMAIN
        iq.enable("entity_time")
        with pytest.raises(IqError) as e:
            await iq.send(timeout=10)
        assert e.value.iq["error"]["condition"] == "service-unavailable"
        with pytest.raises(IqError) as e:
            await alice["xep_0202"].get_entity_time("alice@" + DOMAIN, timeout=10)
        assert e.value.iq["error"]["condition"] == "service-unavailable"
        await alice.close()

    asyncio.run(run())
