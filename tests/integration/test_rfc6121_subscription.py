"""RFC 6121 §3 and Appendix A: presence subscriptions between two local
accounts, with what both sides see: roster pushes, subscription stanzas,
presence. Raw XML throughout (see test_rfc6121_roster.Raw)."""
import asyncio
import xml.etree.ElementTree as ET

from conftest import DOMAIN
from test_rfc6121_roster import C, Raw, items
from xmpp_client import connect

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def online(server, user, resource="raw"):
    """Logged in, interested (roster fetched) and available."""
    c = Raw(server, user, resource)
    c.roster_get()
    c.presence()
    c.expect_presence(c.jid)  # our own broadcast comes back (§4.2.2)
    return c


def sub(c, to, type):
    c.send(f"<presence to='{to}' type='{type}'/>")


def is_presence(frm, type=None):
    return lambda e: e.tag == C + "presence" and e.get("from") == frm and e.get("type") == type


def is_push(jid):
    def match(e):
        it = e.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
        return e.tag == C + "iq" and e.get("type") == "set" and it is not None and \
            it.get("jid") == jid
    return match


def befriend(x, y):
    """x subscribes to y and y approves: x 'to' y, y 'from' x."""
    sub(x, y.bare, "subscribe")
    x.push(y.bare, ask="subscribe")
    y.expect_presence(x.bare, "subscribe")
    sub(y, x.bare, "subscribed")
    y.push(x.bare)
    x.push(y.bare, ask=None)
    x.expect_presence(y.bare, "subscribed")
    x.expect_presence(y.jid)  # y's presence follows the approval (§3.1.5)


def sub_state(c, jid):
    it = items(c.roster_get()).get(jid)
    if it is None:
        return None
    return (it.get("subscription"), it.get("ask"), it.get("approved"))


def test_subscribe_subscribed_to_both(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")

    # §3.1.2: alice asks; her item for bob is 'none' + ask (None + Pending Out).
    a.send(f"<presence to='{BOB}' type='subscribe'><status>hi, it is alice</status></presence>")
    a.push(BOB, subscription="none", ask="subscribe")
    # §3.1.3: bob gets the request from alice's bare JID; his roster is untouched.
    req = b.expect_presence(ALICE, "subscribe")
    assert req.findtext(C + "status") == "hi, it is alice"
    assert sub_state(b, ALICE) is None
    b.expect_none(is_push(ALICE), 0.3, "push")

    # §3.1.5: bob approves: his item for alice says 'from'.
    sub(b, ALICE, "subscribed")
    b.push(ALICE, subscription="from")
    # §3.1.6: alice: 'to', no ask, the 'subscribed', then bob's presence.
    a.push(BOB, subscription="to", ask=None)
    a.expect_presence(BOB, "subscribed")
    a.expect_presence(b.jid)
    assert sub_state(a, BOB) == ("to", None, None)
    assert sub_state(b, ALICE) == ("from", None, None)

    # And the other way round: both.
    sub(b, ALICE, "subscribe")
    b.push(ALICE, subscription="from", ask="subscribe")
    a.expect_presence(BOB, "subscribe")
    sub(a, BOB, "subscribed")
    a.push(BOB, subscription="both")
    b.push(ALICE, subscription="both", ask=None)
    b.expect_presence(ALICE, "subscribed")
    b.expect_presence(a.jid)
    assert sub_state(a, BOB) == ("both", None, None)
    assert sub_state(b, ALICE) == ("both", None, None)

    # §3.1.3: with the subscription in place, a new request is answered by
    # bob's server (and that answer changes nothing for alice, A.3.2); bob
    # is not asked again, and nobody's roster changes.
    sub(a, BOB, "subscribe")
    b.expect_none(lambda e: is_presence(ALICE, "subscribe")(e) or is_push(ALICE)(e), 0.5,
                  "repeated request")
    a.expect_none(is_push(BOB), 0.1, "push")
    a.close()
    b.close()


def test_deny(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    sub(a, BOB, "subscribe")
    a.push(BOB, ask="subscribe")
    b.expect_presence(ALICE, "subscribe")
    # §3.2: bob refuses.
    sub(b, ALICE, "unsubscribed")
    a.push(BOB, subscription="none", ask=None)
    a.expect_presence(BOB, "unsubscribed")
    assert sub_state(a, BOB) == ("none", None, None)
    # Nothing was added for bob, and the request is gone: not re-sent at login.
    assert sub_state(b, ALICE) is None
    b.close()
    b2 = online(server, "bob", "again")
    b2.expect_none(is_presence(ALICE, "subscribe"), 0.5, "request after denial")
    a.expect_none(is_presence(b2.jid), 0.1, "presence leak")
    a.close()
    b2.close()


def test_unsubscribe(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(a, b)
    # §3.3: alice no longer wants bob's presence.
    sub(a, BOB, "unsubscribe")
    a.push(BOB, subscription="none")
    b.expect_presence(ALICE, "unsubscribe")
    b.push(ALICE, subscription="none")
    # §3.3.3: bob's server tells alice bob is (for her) unavailable.
    a.expect_presence(b.jid, "unavailable")
    # And bob's presence no longer reaches her.
    b.presence("<presence><status>still here</status></presence>")
    a.expect_none(is_presence(b.jid), 0.5, "presence after unsubscribe")
    a.close()
    b.close()


def test_cancel(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(a, b)
    # §3.2: bob cancels alice's subscription to him.
    sub(b, ALICE, "unsubscribed")
    b.push(ALICE, subscription="none")
    a.push(BOB, subscription="none")
    a.expect_presence(BOB, "unsubscribed")
    a.expect_presence(b.jid, "unavailable")  # §3.2.2
    b.presence("<presence><show>away</show></presence>")
    a.expect_none(is_presence(b.jid), 0.5, "presence after cancel")
    a.close()
    b.close()


def test_preapproval(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    # §3.4: bob approves before alice asks: not routed, the item is marked.
    sub(b, ALICE, "subscribed")
    b.push(ALICE, subscription="none", approved="true")
    a.expect_none(is_presence(BOB, "subscribed"), 0.5, "routed pre-approval")
    assert sub_state(b, ALICE) == ("none", None, "true")
    # alice asks: approved at once, bob is not asked.
    sub(a, BOB, "subscribe")
    a.push(BOB, subscription="none", ask="subscribe")
    a.push(BOB, subscription="to")
    a.expect_presence(BOB, "subscribed")
    a.expect_presence(b.jid)
    b.push(ALICE, subscription="from")
    b.expect_none(is_presence(ALICE, "subscribe"), 0.5, "request despite pre-approval")
    assert sub_state(b, ALICE) == ("from", None, None)
    a.close()
    b.close()


def test_preapproval_cancelled(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    sub(b, ALICE, "subscribed")
    b.push(ALICE, approved="true")
    # Appendix A.2.4 [1]: 'unsubscribed' withdraws the pre-approval.
    sub(b, ALICE, "unsubscribed")
    b.push(ALICE, approved=None)
    sub(a, BOB, "subscribe")
    b.expect_presence(ALICE, "subscribe")  # asked as usual
    a.expect_none(is_presence(BOB, "subscribed"), 0.5, "auto-approval")
    a.close()
    b.close()


def test_request_to_offline_user_delivered_at_login(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    sub(a, BOB, "subscribe")
    a.push(BOB, ask="subscribe")
    # §3.1.3: a duplicate changes nothing.
    sub(a, BOB, "subscribe")
    a.drain(0.5)

    # bob logs in: connected but not yet available gets no request...
    b = Raw(server, "bob")
    b.roster_get()
    b.expect_none(is_presence(ALICE, "subscribe"), 0.5, "request before initial presence")
    # ...initial presence brings it, once.
    b.presence()
    b.expect_presence(ALICE, "subscribe")
    b.expect_none(is_presence(ALICE, "subscribe"), 0.5, "second copy")
    b.close()

    # Not answered: delivered again at the next login (§3.1.3).
    b = online(server, "bob", "two")
    b.expect_presence(ALICE, "subscribe")
    sub(b, ALICE, "subscribed")
    b.push(ALICE, subscription="from")
    a.push(BOB, subscription="to")
    b.close()

    # Answered: not any more.
    b = online(server, "bob", "three")
    b.expect_none(is_presence(ALICE, "subscribe"), 0.5, "answered request")
    b.close()
    a.close()


def test_subscribe_to_unknown_account(server):
    server.adduser("alice")
    server.start()
    a = online(server, "alice")
    sub(a, f"nobody@{DOMAIN}", "subscribe")
    a.push(f"nobody@{DOMAIN}", ask="subscribe")
    # §3.1.3: the contact's server answers for an account that does not exist.
    a.expect_presence(f"nobody@{DOMAIN}", "unsubscribed")
    a.push(f"nobody@{DOMAIN}", subscription="none", ask=None)
    a.close()


def test_stale_subscribed_is_ignored(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    # bob approves something alice never asked for (and that is not a
    # pre-approval as alice sees it): alice's roster does not change.
    b.send(f"<presence to='{ALICE}' type='subscribed'/>")
    b.push(ALICE, approved="true")
    a.expect_none(lambda e: is_presence(BOB, "subscribed")(e) or is_push(BOB)(e), 0.5,
                  "effect of an unsolicited subscribed")
    assert sub_state(a, BOB) is None
    a.close()
    b.close()


def test_remove_item_cancels_both_ways(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(a, b)
    befriend(b, a)
    assert sub_state(a, BOB)[0] == "both"
    # §2.5.2: removing the item unsubscribes and cancels.
    r = a.roster_set(BOB, remove=True)
    assert r.get("type") == "result"
    a.push(BOB, subscription="remove")
    b.expect_presence(ALICE, "unsubscribe")
    b.expect_presence(ALICE, "unsubscribed")
    b.expect_presence(a.jid, "unavailable")
    b.push(ALICE, subscription="none")
    assert sub_state(b, ALICE) == ("none", None, None)
    a.close()
    b.close()


def test_slixmpp_subscription(server):
    """Two slixmpp clients with their roster plugin: subscribe, approve."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        a = await connect(server, "alice")
        b = await connect(server, "bob")
        await a.get_roster()
        await b.get_roster()
        b.auto_authorize = True  # bob's client approves requests
        b.auto_subscribe = False
        got = asyncio.get_event_loop().create_future()
        a.add_event_handler("presence_subscribed",
                            lambda p: got.done() or got.set_result(p))
        a.send_presence_subscription(pto=BOB)
        await asyncio.wait_for(got, 5)
        for _ in range(50):
            if a.client_roster[BOB]["subscription"] == "to":
                break
            await asyncio.sleep(0.1)
        assert a.client_roster[BOB]["subscription"] == "to"
        assert b.client_roster[ALICE]["subscription"] == "from"
        await a.close()
        await b.close()

    asyncio.run(run())
