"""RFC 6121 §4: presence. Broadcast to subscribers only (the privacy
matrix none/to/from/both), probes at login, directed presence and its
unavailable at logout, unavailable when a connection drops."""
from conftest import DOMAIN
from test_rfc6121_roster import C, Raw
from test_rfc6121_subscription import befriend, is_presence, online


def setup_matrix(server):
    """alice and four contacts, one per subscription state (alice's view):
    bob none, carol to, dave from, eve both."""
    for u in ("alice", "bob", "carol", "dave", "eve"):
        server.adduser(u)
    server.start()
    c = {u: online(server, u) for u in ("alice", "bob", "carol", "dave", "eve")}
    a = c["alice"]
    # bob: none, but in the roster.
    assert a.roster_set(f"bob@{DOMAIN}").get("type") == "result"
    befriend(a, c["carol"])  # alice -> carol: to
    befriend(c["dave"], a)  # dave -> alice: from
    befriend(a, c["eve"])
    befriend(c["eve"], a)  # both
    for x in c.values():
        x.drain(0.3)
    return c


def test_privacy_matrix(server):
    c = setup_matrix(server)
    a = c["alice"]
    # §4.4.2: alice's broadcast reaches exactly those with 'from'/'both'.
    a.presence("<presence><show>dnd</show><status>busy</status></presence>")
    for u in ("dave", "eve"):
        p = c[u].expect_presence(a.jid)
        assert p.findtext(C + "status") == "busy"
    for u in ("bob", "carol"):
        c[u].expect_none(is_presence(a.jid), 0.5, "presence without subscription")
    # And the other way: alice hears carol and eve (she has 'to'), not
    # bob or dave.
    for u in ("bob", "carol", "dave", "eve"):
        c[u].presence(f"<presence><status>{u} here</status></presence>")
    for u in ("carol", "eve"):
        assert a.expect_presence(c[u].jid).findtext(C + "status") == f"{u} here"
    for u in ("bob", "dave"):
        a.expect_none(is_presence(c[u].jid), 0.3, "presence without subscription")
    for x in c.values():
        x.close()


def test_probes_at_login(server):
    c = setup_matrix(server)
    c["alice"].close()
    for u in ("bob", "carol", "dave", "eve"):
        c[u].presence(f"<presence><status>{u} waits</status></presence>")
    # §4.2.2 / §4.3: alice's initial presence probes carol and eve; their
    # last presence comes back. bob's and dave's do not.
    a = online(server, "alice", "again")
    for u in ("carol", "eve"):
        assert a.expect_presence(c[u].jid).findtext(C + "status") == f"{u} waits"
    for u in ("bob", "dave"):
        a.expect_none(is_presence(c[u].jid), 0.5, "presence of a non-contact")
    # dave and eve learn alice is back; bob and carol do not.
    for u in ("dave", "eve"):
        c[u].expect_presence(a.jid)
    for u in ("bob", "carol"):
        c[u].expect_none(is_presence(a.jid), 0.3, "presence without subscription")
    for x in list(c.values())[1:] + [a]:
        x.close()


def test_probe_of_offline_contact_gets_unavailable(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(a, b)
    b.close()
    a.expect_presence(b.jid, "unavailable")
    a.close()
    a = online(server, "alice", "again")
    # §4.3.2: bob has no available resource: unavailable from his bare JID.
    a.expect_presence(f"bob@{DOMAIN}", "unavailable")
    a.close()


def test_probe_from_non_subscriber(server):
    server.adduser("alice")
    server.adduser("mallory")
    server.start()
    a = online(server, "alice")
    m = online(server, "mallory")
    # §4.3.2: a probe by someone without a subscription reveals nothing.
    # (alice's server answers 'unsubscribed', which mallory's server drops
    # as it changes nothing: Appendix A.3.4.)
    m.send(f"<presence to='alice@{DOMAIN}' type='probe'/>")
    m.expect_none(lambda e: e.tag == C + "presence" and
                  (e.get("from") or "").startswith(f"alice@{DOMAIN}"), 0.7, "presence leak")
    # The probe itself is never delivered to alice.
    a.expect_none(lambda e: e.get("type") == "probe", 0.3, "probe delivered")
    a.close()
    m.close()


def test_own_resources_see_each_other(server):
    server.adduser("alice")
    server.start()
    one = online(server, "alice", "one")
    one.presence("<presence><status>first</status></presence>")
    one.expect_presence(one.jid)
    two = online(server, "alice", "two")
    # §4.2.2: the new resource learns about the other; the other about it.
    assert two.expect_presence(one.jid).findtext(C + "status") == "first"
    one.expect_presence(two.jid)
    one.close()
    two.expect_presence(one.jid, "unavailable")
    two.close()


def test_directed_presence_and_unavailable_at_logout(server):
    server.adduser("alice")
    server.adduser("bob")
    server.adduser("carol")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    c = online(server, "carol")
    # §4.6: no subscription, but directed presence is delivered.
    a.send(f"<presence to='bob@{DOMAIN}'><status>psst</status></presence>")
    assert b.expect_presence(a.jid).findtext(C + "status") == "psst"
    # A later broadcast does not reach bob (no subscription)...
    a.presence("<presence><status>all</status></presence>")
    b.expect_none(is_presence(a.jid), 0.5, "broadcast to a directed target")
    # ...but the end of the session does (§4.6.3); carol learns nothing.
    a.close()
    b.expect_presence(a.jid, "unavailable")
    c.expect_none(is_presence(a.jid, "unavailable"), 0.3, "unavailable to a stranger")
    b.close()
    c.close()


def test_directed_unavailable_forgets_target(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    a.send(f"<presence to='bob@{DOMAIN}'/>")
    b.expect_presence(a.jid)
    a.send(f"<presence to='bob@{DOMAIN}' type='unavailable'/>")
    b.expect_presence(a.jid, "unavailable")
    a.close()
    b.expect_none(is_presence(a.jid, "unavailable"), 0.7, "second unavailable")
    b.close()


def test_dropped_connection_broadcasts_unavailable(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(b, a)  # bob sees alice
    a.drain(0.2)
    # No </stream:stream>: the TCP connection just goes away (§4.5.3 /
    # RFC 6120 §4.4: the server generates the unavailable presence).
    a.sock.close()
    b.expect_presence(a.jid, "unavailable", timeout=10)
    b.close()


def test_explicit_unavailable_then_logout_sends_once(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(b, a)
    a.presence("<presence type='unavailable'><status>bye</status></presence>")
    p = b.expect_presence(a.jid, "unavailable")
    assert p.findtext(C + "status") == "bye"
    a.close()
    b.expect_none(is_presence(a.jid, "unavailable"), 0.7, "second unavailable")
    b.close()


def test_shutdown_with_contacts_online(server):
    """SIGTERM while contacts are online and subscription work is in flight:
    the unavailable presences and pending jobs of closing sessions run to the
    end and parleyd exits cleanly (the fixture checks the exit code and the
    sanitizer reports)."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(a, b)
    befriend(b, a)
    a.send(f"<presence to='bob@{DOMAIN}' type='unsubscribe'/>")
    assert server.stop() == 0, server.log()[-3000:]
