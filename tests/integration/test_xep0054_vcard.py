"""XEP-0054 vcard-temp against the real server: own vCard set/get, other
accounts' vCards, the errors the XEP names, the size limit, persistence
across restarts and deletion with the account."""
import asyncio
import os
import sqlite3

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from conftest import DOMAIN
from xmpp_client import connect

NS = "vcard-temp"
V = "{%s}" % NS


async def login(server, user, **kw):
    c = await connect(server, user, **kw)
    c.register_plugin("xep_0054")
    return c


def raw_iq(c, itype, payload, to=None):
    iq = c.Iq()
    iq["type"] = itype
    if to:
        iq["to"] = to
    iq.append(ET.fromstring(payload))
    return iq.send(timeout=10)


def vcard_of(iq):
    v = iq.xml.find(V + "vCard")
    assert v is not None, str(iq)
    return v


def text(v, path):
    e = v.find("/".join(V + part for part in path.split("/")))
    return None if e is None else e.text


STPETER = (f"<vCard xmlns='{NS}'><FN>Peter Saint-Andre</FN>"
           "<N><FAMILY>Saint-Andre</FAMILY><GIVEN>Peter</GIVEN><MIDDLE/></N>"
           "<NICKNAME>stpeter</NICKNAME>"
           "<DESC>a &lt; b &amp; c &gt; d, \"quoted\" 'single' — ünïcödé 😀</DESC>"
           "<X-EXT xmlns='urn:example:ext' kind='k&amp;v'>ext</X-EXT>"
           "</vCard>")


def check_stpeter(v):
    assert text(v, "FN") == "Peter Saint-Andre"
    assert text(v, "N/GIVEN") == "Peter"
    assert text(v, "NICKNAME") == "stpeter"
    assert text(v, "DESC") == "a < b & c > d, \"quoted\" 'single' — ünïcödé 😀"
    ext = v.find("{urn:example:ext}X-EXT")
    assert ext is not None and ext.text == "ext" and ext.get("kind") == "k&v"


def test_disco_feature(server):
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        info = await alice["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        assert NS in info["disco_info"]["features"]
        await alice.close()

    asyncio.run(run())


def test_set_and_get_own_and_others(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        # §3.2: set with no 'to'
        r = await raw_iq(alice, "set", STPETER)
        assert r["type"] == "result"
        # §3.1: get with no 'to'
        check_stpeter(vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>")))
        # to one's own bare JID is the same thing
        check_stpeter(vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>",
                                            to="alice@" + DOMAIN)))
        # §3.3: anyone reads another account's vCard, answered by the server
        r = await raw_iq(bob, "get", f"<vCard xmlns='{NS}'/>", to="alice@" + DOMAIN)
        assert r["from"].bare == "alice@" + DOMAIN
        check_stpeter(vcard_of(r))
        # and through slixmpp's plugin
        r = await bob["xep_0054"].get_vcard("alice@" + DOMAIN, timeout=10)
        assert r["vcard_temp"]["FN"] == "Peter Saint-Andre"
        assert r["vcard_temp"]["NICKNAME"] == ["stpeter"]
        # a new vCard replaces the old one whole (§3.2: no partial updates)
        v = bob["xep_0054"].make_vcard()
        v["FN"] = "Alice Liddell"
        await alice["xep_0054"].publish_vcard(v, timeout=10)
        got = vcard_of(await raw_iq(bob, "get", f"<vCard xmlns='{NS}'/>", to="alice@" + DOMAIN))
        assert text(got, "FN") == "Alice Liddell"
        assert text(got, "NICKNAME") is None
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_no_vcard(server):
    """Own account: an empty <vCard/> (§3.1 allows it). Others: item-not-found,
    the same for an account that does not exist (§3.3)."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice")
        r = await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>")
        assert r["type"] == "result"
        assert len(vcard_of(r)) == 0
        for who in ("bob", "nobody"):
            with pytest.raises(IqError) as e:
                await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>", to=f"{who}@{DOMAIN}")
            assert e.value.iq["error"]["condition"] == "item-not-found", who
        await alice.close()

    asyncio.run(run())


def test_set_for_another_account_forbidden(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await login(server, "alice")
        bob = await login(server, "bob")
        await raw_iq(alice, "set", f"<vCard xmlns='{NS}'><FN>Alice</FN></vCard>")
        with pytest.raises(IqError) as e:
            await raw_iq(bob, "set", f"<vCard xmlns='{NS}'><FN>Mallory</FN></vCard>",
                         to="alice@" + DOMAIN)
        assert e.value.iq["error"]["condition"] == "forbidden"
        got = vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>"))
        assert text(got, "FN") == "Alice"
        # and bob's own vCard was not touched either
        assert len(vcard_of(await raw_iq(bob, "get", f"<vCard xmlns='{NS}'/>"))) == 0
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_size_limit(server):
    """At most 64 KiB of serialized vCard; larger gets not-acceptable and the
    stored one stays."""
    server.adduser("alice")
    server.start()

    async def run():
        alice = await login(server, "alice")
        fits = "A" * 60000
        await raw_iq(alice, "set", f"<vCard xmlns='{NS}'><DESC>{fits}</DESC></vCard>")
        with pytest.raises(IqError) as e:
            await raw_iq(alice, "set", f"<vCard xmlns='{NS}'><DESC>{'B' * 70000}</DESC></vCard>")
        assert e.value.iq["error"]["condition"] == "not-acceptable"
        got = vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>"))
        assert text(got, "DESC") == fits
        await alice.close()

    asyncio.run(run())


def test_survives_restart(server):
    server.adduser("alice")
    server.start()

    async def set_it():
        alice = await login(server, "alice")
        await raw_iq(alice, "set", STPETER)
        await alice.close()

    async def get_it():
        alice = await login(server, "alice")
        check_stpeter(vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>")))
        await alice.close()

    asyncio.run(set_it())
    assert server.stop() == 0
    server.start()
    asyncio.run(get_it())


def test_deleting_the_account_deletes_the_vcard(server):
    server.adduser("alice")
    server.start()

    async def set_it():
        alice = await login(server, "alice")
        await raw_iq(alice, "set", STPETER)
        check_stpeter(vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>")))
        await alice.close()

    async def get_it():
        alice = await login(server, "alice")
        r = await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>")
        assert len(vcard_of(r)) == 0
        await alice.close()

    asyncio.run(set_it())
    server.ctl("deluser", "alice@" + DOMAIN)
    server.adduser("alice")
    asyncio.run(get_it())


def test_damaged_stored_vcard_is_not_relayed(server):
    """Stored XML is parsed again with the server's own parser: what does not
    parse back (here a comment and a second element, planted in the
    database) is answered with internal-server-error, never sent as is."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def set_it():
        alice = await login(server, "alice")
        await raw_iq(alice, "set", f"<vCard xmlns='{NS}'><FN>ok</FN></vCard>")
        await alice.close()

    asyncio.run(set_it())
    assert server.stop() == 0
    db = sqlite3.connect(os.path.join(server.dir, "data", "parley.db"))
    bad = {
        "alice": f"<vCard xmlns='{NS}'><FN>x</FN><!-- planted --></vCard>",
        "bob": f"<vCard xmlns='{NS}'/><evil xmlns='jabber:client'/>",
    }
    for user, xml in bad.items():
        db.execute("INSERT OR REPLACE INTO vcards (host, username, vcard) VALUES (?, ?, ?)",
                   (DOMAIN, user, xml))
    db.commit()
    db.close()
    server.start()

    async def get_it():
        alice = await login(server, "alice")
        for user in bad:
            with pytest.raises(IqError) as e:
                await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>", to=f"{user}@{DOMAIN}")
            assert e.value.iq["error"]["condition"] == "internal-server-error"
        # the server keeps serving, and a new vCard heals it
        await raw_iq(alice, "set", f"<vCard xmlns='{NS}'><FN>healed</FN></vCard>")
        assert text(vcard_of(await raw_iq(alice, "get", f"<vCard xmlns='{NS}'/>")), "FN") == "healed"
        await alice.close()

    asyncio.run(get_it())
