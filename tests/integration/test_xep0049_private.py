"""XEP-0049 Private XML Storage against the real server: round trips per
namespace, the empty answer, the error cases of §2.3/§3, the size limit,
persistence and deletion with the account."""
import asyncio

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET, ElementBase

from conftest import DOMAIN
from xmpp_client import connect

NS = "jabber:iq:private"
Q = "{%s}query" % NS

EXODUS = ("<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick>"
          "<motto lang='da'>to be &amp; not &lt;to&gt; be — ünïcödé</motto></exodus>")


class Prefs(ElementBase):
    name = "exodus"
    namespace = "exodus:prefs"
    plugin_attrib = "exodus"
    interfaces = {"defaultnick"}
    sub_interfaces = interfaces


async def login(server, user):
    c = await connect(server, user)
    c.register_plugin("xep_0049")
    c["xep_0049"].register(Prefs)
    return c


def raw_iq(c, itype, payload, to=None):
    iq = c.Iq()
    iq["type"] = itype
    if to:
        iq["to"] = to
    iq.append(ET.fromstring(payload))
    return iq.send(timeout=10)


def query(children=""):
    return f"<query xmlns='{NS}'>{children}</query>"


def stored(iq, tag):
    q = iq.xml.find(Q)
    assert q is not None, str(iq)
    kids = list(q)
    assert len(kids) == 1, str(iq)
    assert kids[0].tag == tag, str(iq)
    return kids[0]


async def get(c, el):
    return await raw_iq(c, "get", query(el))


async def error_of(coro):
    with pytest.raises(IqError) as e:
        await coro
    return e.value.iq["error"]["condition"]


def test_round_trip(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        r = await raw_iq(alice, "set", query(EXODUS))
        assert r["type"] == "result"
        e = stored(await get(alice, "<exodus xmlns='exodus:prefs'/>"), "{exodus:prefs}exodus")
        assert e.find("{exodus:prefs}defaultnick").text == "Hamlet"
        motto = e.find("{exodus:prefs}motto")
        assert motto.text == "to be & not <to> be — ünïcödé" and motto.get("lang") == "da"
        # another namespace is stored beside it
        await raw_iq(alice, "set", query("<storage xmlns='storage:bookmarks'>"
                                         "<url name='x' url='https://example.org/'/></storage>"))
        b = stored(await get(alice, "<storage xmlns='storage:bookmarks'/>"),
                   "{storage:bookmarks}storage")
        assert b.find("{storage:bookmarks}url").get("url") == "https://example.org/"
        # a set replaces what that namespace held, and only that
        await raw_iq(alice, "set", query("<exodus xmlns='exodus:prefs'>"
                                         "<defaultnick>Ophelia</defaultnick></exodus>"))
        e = stored(await get(alice, "<exodus xmlns='exodus:prefs'/>"), "{exodus:prefs}exodus")
        assert e.find("{exodus:prefs}defaultnick").text == "Ophelia"
        assert e.find("{exodus:prefs}motto") is None
        stored(await get(alice, "<storage xmlns='storage:bookmarks'/>"),
               "{storage:bookmarks}storage")
        # to one's own bare JID is the same as no 'to'
        r = await raw_iq(alice, "get", query("<exodus xmlns='exodus:prefs'/>"),
                         to="alice@" + DOMAIN)
        stored(r, "{exodus:prefs}exodus")
        # slixmpp's plugin reads what we stored
        r = await alice["xep_0049"].retrieve("exodus", timeout=10)
        assert r["private"]["exodus"]["defaultnick"] == "Ophelia"
        await alice.close()

    asyncio.run(run())


def test_slixmpp_plugin_store(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        p = Prefs()
        p["defaultnick"] = "Horatio"
        await alice["xep_0049"].store(p, timeout=10)
        r = await alice["xep_0049"].retrieve("exodus", timeout=10)
        assert r["private"]["exodus"]["defaultnick"] == "Horatio"
        await alice.close()

    asyncio.run(run())


def test_nothing_stored_returns_the_empty_element(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        r = await get(alice, "<prefs xmlns='urn:example:nothing'/>")
        e = stored(r, "{urn:example:nothing}prefs")
        assert len(e) == 0 and not (e.text or "").strip()
        await alice.close()

    asyncio.run(run())


def test_other_accounts_forbidden(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await raw_iq(alice, "set", query(EXODUS))
        a = "alice@" + DOMAIN
        assert await error_of(raw_iq(bob, "get", query("<exodus xmlns='exodus:prefs'/>"),
                                     to=a)) == "forbidden"
        assert await error_of(raw_iq(bob, "set", query("<exodus xmlns='exodus:prefs'>"
                                                       "<defaultnick>Macbeth</defaultnick>"
                                                       "</exodus>"), to=a)) == "forbidden"
        # nothing leaked into alice's data, nor appeared in bob's own
        e = stored(await get(alice, "<exodus xmlns='exodus:prefs'/>"), "{exodus:prefs}exodus")
        assert e.find("{exodus:prefs}defaultnick").text == "Hamlet"
        e = stored(await get(bob, "<exodus xmlns='exodus:prefs'/>"), "{exodus:prefs}exodus")
        assert len(e) == 0
        await alice.close()
        await bob.close()

    asyncio.run(run())


@pytest.mark.parametrize("ns", [NS, "jabber:client", "jabber:iq:roster", "vcard-temp",
                                "http://jabber.org/protocol/disco#info",
                                "urn:ietf:params:xml:ns:xmpp-stanzas", ""])
def test_reserved_namespaces_not_acceptable(server, ns):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        el = f"<x xmlns='{ns}'><y/></x>"
        assert await error_of(raw_iq(alice, "set", query(el))) == "not-acceptable"
        assert await error_of(raw_iq(alice, "get", query(f"<x xmlns='{ns}'/>"))) == \
            "not-acceptable"
        await alice.close()

    asyncio.run(run())


def test_bad_requests(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        for t in ("get", "set"):
            assert await error_of(raw_iq(alice, t, query())) == "bad-request"
            assert await error_of(raw_iq(alice, t, query("  text only  "))) == "bad-request"
            two = "<a xmlns='urn:example:a'/><b xmlns='urn:example:b'/>"
            assert await error_of(raw_iq(alice, t, query(two))) == "bad-request"
        # nothing of the refused set was stored
        e = stored(await get(alice, "<a xmlns='urn:example:a'/>"), "{urn:example:a}a")
        assert len(e) == 0
        await alice.close()

    asyncio.run(run())


def test_size_limit(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        fits = "A" * 60000
        await raw_iq(alice, "set", query(f"<big xmlns='urn:example:big'>{fits}</big>"))
        too_big = query(f"<big xmlns='urn:example:big'>{'B' * 70000}</big>")
        assert await error_of(raw_iq(alice, "set", too_big)) == "not-acceptable"
        e = stored(await get(alice, "<big xmlns='urn:example:big'/>"), "{urn:example:big}big")
        assert e.text == fits
        await alice.close()

    asyncio.run(run())


def test_survives_restart_and_dies_with_the_account(server):
    server.adduser("alice")
    server.start()

    async def set_it():
        alice = await login(server, "alice")
        await raw_iq(alice, "set", query(EXODUS))
        await alice.close()

    async def get_it():
        alice = await login(server, "alice")
        e = stored(await get(alice, "<exodus xmlns='exodus:prefs'/>"), "{exodus:prefs}exodus")
        nick = e.find("{exodus:prefs}defaultnick")
        await alice.close()
        return None if nick is None else nick.text

    asyncio.run(set_it())
    assert server.stop() == 0
    server.start()
    assert asyncio.run(get_it()) == "Hamlet"
    server.ctl("deluser", "alice@" + DOMAIN)
    server.adduser("alice")
    assert asyncio.run(get_it()) is None
