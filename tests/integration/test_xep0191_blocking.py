"""XEP-0191 Blocking Command: the list and its pushes (§3.2-§3.5), what a
block does to stanzas both ways and to presence, JID matching (XEP-0016
§2.1), persistence across a restart, and slixmpp's plugin against it."""
import asyncio
import time
import xml.etree.ElementTree as ET

from conftest import DOMAIN
from test_rfc6121_roster import C, STANZAS, Raw
from test_rfc6121_subscription import befriend, is_presence, online
from xmpp_client import connect

NS = "urn:xmpp:blocking"
B = "{%s}" % NS
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def blocklist(c):
    r = c.iq("get", f"<blocklist xmlns='{NS}'/>")
    assert r.get("type") == "result", ET.tostring(r)
    return sorted(i.get("jid") for i in r.find(B + "blocklist").findall(B + "item"))


def block(c, *jids):
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    return c.iq("set", f"<block xmlns='{NS}'>{items}</block>")


def unblock(c, *jids):
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    return c.iq("set", f"<unblock xmlns='{NS}'>{items}</unblock>")


def cond(e):
    err = e.find(C + "error")
    assert err is not None, ET.tostring(e)
    return [x.tag.split("}")[1] for x in err if x.tag.startswith(STANZAS)][0]


def is_blocking_push(what):
    return lambda e: e.tag == C + "iq" and e.get("type") == "set" and \
        e.find(B + what) is not None


def push_items(e, what):
    return sorted(i.get("jid") for i in e.find(B + what).findall(B + "item"))


def test_list_block_unblock_and_pushes(server):
    server.adduser("alice")
    server.start()
    one = Raw(server, "alice", "one")
    two = Raw(server, "alice", "two")
    quiet = Raw(server, "alice", "quiet")  # never asked: gets no pushes (§3.3)
    info = one.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=DOMAIN)
    assert NS in [f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")]
    assert blocklist(one) == []
    assert blocklist(two) == []
    # JIDs are normalized, duplicates collapse.
    r = block(one, "Romeo@Montague.Lit", "romeo@montague.lit", "iago@evil.example/Res")
    assert r.get("type") == "result", ET.tostring(r)
    for c in (one, two):
        p = c.expect(is_blocking_push("block"), what="block push")
        assert p.get("from") in (None, ALICE)
        assert push_items(p, "block") == ["iago@evil.example/Res", "romeo@montague.lit"]
        c.send(f"<iq type='result' id='{p.get('id')}'/>")
    quiet.expect_none(is_blocking_push("block"), 0.5, "push to a resource that never asked")
    assert blocklist(two) == ["iago@evil.example/Res", "romeo@montague.lit"]
    # Unblock one (§3.4); unblocking something not blocked is harmless.
    assert unblock(two, "romeo@montague.lit", "nobody@x.example").get("type") == "result"
    for c in (one, two):
        p = c.expect(is_blocking_push("unblock"), what="unblock push")
        assert "romeo@montague.lit" in push_items(p, "unblock")
    assert blocklist(one) == ["iago@evil.example/Res"]
    # Unblock all (§3.5): an empty <unblock/>, pushed empty.
    block(one, "a.example", "b.example")
    for c in (one, two):
        c.expect(is_blocking_push("block"))
    assert unblock(one).get("type") == "result"
    for c in (one, two):
        p = c.expect(is_blocking_push("unblock"))
        assert push_items(p, "unblock") == []
    assert blocklist(one) == []
    for c in (one, two, quiet):
        c.close()


def test_bad_requests(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = Raw(server, "alice")
    assert cond(block(a)) == "bad-request"  # §3.3: at least one item
    assert cond(block(a, "a@b@c")) == "jid-malformed"
    assert cond(a.iq("set", f"<block xmlns='{NS}'><item/></block>")) == "bad-request"
    # Someone else's list is not ours to read or change.
    r = a.iq("get", f"<blocklist xmlns='{NS}'/>", to=BOB)
    assert r.get("type") == "error"
    r = a.iq("set", f"<block xmlns='{NS}'><item jid='x@y'/></block>", to=BOB)
    assert r.get("type") == "error"
    assert blocklist(a) == []  # a failed block changed nothing
    a.close()


def test_blocked_stanzas_both_ways(server):
    for u in ("alice", "bob", "carol"):
        server.adduser(u)
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    c = online(server, "carol")
    assert block(a, BOB).get("type") == "result"
    # Inbound (from alice's view): bob's message bounces service-unavailable
    # and alice never sees it.
    b.send(f"<message to='{ALICE}' id='m1' type='chat'><body>hi</body></message>")
    e = b.expect(lambda e: e.tag == C + "message" and e.get("id") == "m1")
    assert e.get("type") == "error" and cond(e) == "service-unavailable"
    b.send(f"<message to='{a.jid}' id='m2'><body>full</body></message>")
    assert cond(b.expect(lambda e: e.get("id") == "m2")) == "service-unavailable"
    # IQ get: service-unavailable; presence: dropped without an answer.
    r = b.iq("get", "<query xmlns='jabber:iq:version'/>", to=a.jid)
    assert cond(r) == "service-unavailable"
    b.send(f"<presence to='{a.jid}'><status>directed</status></presence>")
    b.send(f"<presence to='{ALICE}' type='subscribe'/>")
    a.expect_none(lambda e: e.get("from", "").startswith(BOB), 1.0, "stanza from bob")
    b.expect_none(lambda e: e.tag == C + "presence" and e.get("from", "").startswith(ALICE),
                  0.2, "answer to a blocked presence")
    # Outbound: alice's own stanzas to bob are refused with <blocked/>.
    a.send(f"<message to='{BOB}' id='m3' type='chat'><body>no</body></message>")
    e = a.expect(lambda e: e.get("id") == "m3")
    assert e.get("type") == "error" and cond(e) == "not-acceptable"
    assert e.find(C + "error/{urn:xmpp:blocking:errors}blocked") is not None
    r = a.iq("get", "<query xmlns='jabber:iq:version'/>", to=b.jid)
    assert cond(r) == "not-acceptable"
    b.expect_none(lambda e: e.get("from", "").startswith(ALICE), 0.5, "stanza from alice")
    # Others are unaffected.
    c.send(f"<message to='{ALICE}' id='m4' type='chat'><body>still here</body></message>")
    a.expect(lambda e: e.tag == C + "message" and e.get("id") == "m4")
    # After unblocking, bob gets through again.
    assert unblock(a, BOB).get("type") == "result"
    b.send(f"<message to='{ALICE}' id='m5' type='chat'><body>again</body></message>")
    a.expect(lambda e: e.tag == C + "message" and e.get("id") == "m5")
    for x in (a, b, c):
        x.close()


def test_blocked_message_not_stored_offline(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = Raw(server, "alice")
    assert block(a, BOB).get("type") == "result"
    a.close()
    b = online(server, "bob")
    b.send(f"<message to='{ALICE}' id='off1' type='chat'><body>stored?</body></message>")
    assert cond(b.expect(lambda e: e.get("id") == "off1")) == "service-unavailable"
    b.close()
    a = online(server, "alice", "back")
    a.expect_none(lambda e: e.tag == C + "message", 1.0, "offline message from a blocked JID")
    a.close()


def test_stored_before_the_block_is_not_delivered(server):
    """A message stored offline and a subscription request that waited,
    both from bob before alice blocked him: neither reaches her at login."""
    server.adduser("alice")
    server.adduser("bob")
    server.adduser("carol")
    server.start()
    b = online(server, "bob")
    b.send(f"<message to='{ALICE}' type='chat'><body>before the block</body></message>")
    b.send(f"<presence to='{ALICE}' type='subscribe'/>")
    c = online(server, "carol")
    c.send(f"<message to='{ALICE}' type='chat'><body>from carol</body></message>")
    time.sleep(0.5)  # both stored
    a = Raw(server, "alice", "blocker")  # not available: nothing delivered yet
    assert block(a, BOB).get("type") == "result"
    a.close()
    a = online(server, "alice", "back")
    got = a.expect(lambda e: e.tag == C + "message", what="carol's offline message")
    assert "from carol" in ET.tostring(got, encoding="unicode")
    a.expect_none(lambda e: e.get("from", "").startswith(BOB), 1.0,
                  "bob's stored message or waiting subscription request")
    a.close()
    b.close()
    c.close()


def test_presence_on_block_and_unblock(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(a, b)
    befriend(b, a)  # both
    a.drain(0.3)
    b.drain(0.3)
    # §3.3: bob, subscribed to alice, sees her go unavailable.
    assert block(a, BOB).get("type") == "result"
    b.expect_presence(a.jid, "unavailable")
    # From now on neither sees the other's presence.
    a.presence("<presence><status>secret</status></presence>")
    b.expect_none(is_presence(a.jid), 0.7, "presence to a blocked contact")
    b.presence("<presence><status>bob busy</status></presence>")
    a.expect_none(is_presence(b.jid), 0.7, "presence from a blocked contact")
    # A probe by bob is not answered.
    b.send(f"<presence to='{ALICE}' type='probe'/>")
    b.expect_none(lambda e: e.tag == C + "presence" and e.get("from", "").startswith(ALICE),
                  0.7, "probe answered")
    # §3.4: unblock: bob gets alice's current presence, alice bob's.
    assert unblock(a, BOB).get("type") == "result"
    assert b.expect_presence(a.jid).findtext(C + "status") == "secret"
    assert a.expect_presence(b.jid).findtext(C + "status") == "bob busy"
    a.close()
    b.close()


def test_jid_matching(server):
    for u in ("alice", "bob"):
        server.adduser(u)
    server.start()
    a = online(server, "alice")
    evil = Raw(server, "bob", "evil")
    good = Raw(server, "bob", "good")
    # A full JID blocks that resource only (XEP-0016 §2.1).
    assert block(a, f"{BOB}/evil").get("type") == "result"
    evil.send(f"<message to='{ALICE}' id='x1'><body>1</body></message>")
    assert cond(evil.expect(lambda e: e.get("id") == "x1")) == "service-unavailable"
    good.send(f"<message to='{ALICE}' id='x2'><body>2</body></message>")
    a.expect(lambda e: e.tag == C + "message" and e.get("id") == "x2")
    # A domain blocks everyone there; remote or not.
    assert block(a, "evil.example").get("type") == "result"
    a.send("<message to='someone@evil.example' id='x3'><body>3</body></message>")
    e = a.expect(lambda e: e.get("id") == "x3")
    assert cond(e) == "not-acceptable"
    # A domain/resource item matches that resource at any user of the domain.
    assert block(a, f"{DOMAIN}/good").get("type") == "result"
    good.send(f"<message to='{ALICE}' id='x4'><body>4</body></message>")
    assert cond(good.expect(lambda e: e.get("id") == "x4")) == "service-unavailable"
    for x in (a, evil, good):
        x.close()


def test_persists_across_restart(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = Raw(server, "alice")
    assert block(a, BOB, "spam.example").get("type") == "result"
    a.close()
    server.stop()
    server.start()
    a = online(server, "alice")
    assert blocklist(a) == [BOB, "spam.example"]
    b = online(server, "bob")
    b.send(f"<message to='{ALICE}' id='p1'><body>x</body></message>")
    assert cond(b.expect(lambda e: e.get("id") == "p1")) == "service-unavailable"
    a.close()
    b.close()


def test_deleted_account_takes_its_list(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    assert block(a, BOB).get("type") == "result"
    a.close()
    server.stop()
    server.ctl("deluser", ALICE)
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    assert blocklist(a) == []
    a.close()


def test_slixmpp_plugin(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        alice = await connect(server, "alice")
        alice.register_plugin("xep_0191")
        bob = await connect(server, "bob")
        empty = await alice["xep_0191"].get_blocked(timeout=10)
        assert len(empty["blocklist"]["items"]) == 0
        await alice["xep_0191"].block([BOB], timeout=10)
        blocked = await alice["xep_0191"].get_blocked(timeout=10)
        assert [str(j) for j in blocked["blocklist"]["items"]] == [BOB]
        bob.send_message(mto=ALICE, mbody="blocked?", mtype="chat")
        await asyncio.sleep(0.5)
        assert alice.messages.empty()
        await alice["xep_0191"].unblock([BOB], timeout=10)
        bob.send_message(mto=ALICE, mbody="through", mtype="chat")
        m = await asyncio.wait_for(alice.messages.get(), 5)
        assert m["body"] == "through"
        await alice.close()
        await bob.close()

    asyncio.run(run())


def test_list_size_limit(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    first = [f"u{i}@limit.example" for i in range(600)]
    assert block(a, *first).get("type") == "result"
    # 1000 JIDs at most: a change that would pass it is refused whole.
    r = block(a, *[f"v{i}@limit.example" for i in range(600)])
    assert cond(r) == "resource-constraint"
    assert blocklist(a) == sorted(first)
    a.close()
