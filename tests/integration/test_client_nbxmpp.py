"""Gajim's XMPP library, python3-nbxmpp (GLib based), against a real parleyd.

Two nbxmpp clients log in the way Gajim does (STARTTLS or direct TLS, the
self-signed certificate pinned with set_accepted_certificates, SASL chosen by
nbxmpp itself), then: roster add + mutual subscription, presence, messages
both ways, disco/ping/time/version, vcard-temp, private-storage bookmarks and
the blocklist, each through nbxmpp's own modules; then a clean disconnect.

Every wait runs the GLib main loop with a deadline and fails with the
client's stanza transcript when it passes, so nothing can hang.
"""
import logging
import re
import time

from gi.repository import Gio, GLib

from nbxmpp.client import Client
from nbxmpp.const import ConnectionProtocol, ConnectionType, StreamError
from nbxmpp.modules.vcard_temp import VCard
from nbxmpp.namespaces import Namespace
from nbxmpp.protocol import JID, Message, Presence
from nbxmpp.structs import BookmarkData, StanzaHandler

from conftest import DOMAIN, PASSWORD

WAIT = 10  # seconds for any single expected event


class SaslLog(logging.Handler):
    """Collects what nbxmpp's SASL code logs (it names the chosen mechanism)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


class NbClient:
    """One nbxmpp Client with queues for what the test waits on."""

    def __init__(self, server, user, resource="gajim", direct_tls=False, pin=True):
        self.user = user
        self.bare = f"{user}@{DOMAIN}"
        self.full = None  # the bound JID, once logged in
        self.transcript = []
        self.signals = []
        self.messages = []
        self.presences = []
        self.roster_pushes = []
        self.blocking_pushes = []
        c = self.client = Client(log_context=user)
        c.set_domain(DOMAIN)
        c.set_username(user)
        c.set_password(PASSWORD)
        c.set_resource(resource)
        port, ctype = ((server.c2s_tls, ConnectionType.DIRECT_TLS) if direct_tls
                       else (server.c2s, ConnectionType.START_TLS))
        c.set_custom_host(f"127.0.0.1:{port}", ConnectionProtocol.TCP, ctype)
        if pin:
            # Gajim's "trust this certificate": only UNKNOWN_CA is forgiven,
            # and only for this exact certificate.
            c.set_accepted_certificates([Gio.TlsCertificate.new_from_file(server.cert)])
        for sig in ("connected", "disconnected", "connection-failed"):
            c.subscribe(sig, self._on_signal)
        c.subscribe("stanza-sent", lambda _c, _s, data: self.transcript.append(("C", str(data))))
        c.subscribe("stanza-received",
                    lambda _c, _s, data: self.transcript.append(("S", str(data))))
        c.register_handler(StanzaHandler(name="message", callback=self._on_message))
        c.register_handler(StanzaHandler(name="presence", callback=self._on_presence))
        c.register_handler(StanzaHandler(name="iq", callback=self._on_roster_push,
                                         typ="set", ns=Namespace.ROSTER))
        c.register_handler(StanzaHandler(name="iq", callback=self._on_blocking_push,
                                         typ="set", ns=Namespace.BLOCKING))

    def _on_signal(self, _client, name, *args):
        self.signals.append(name)

    def _on_message(self, _client, stanza, props):
        self.messages.append(props)

    def _on_presence(self, _client, stanza, props):
        self.presences.append(props)

    def _on_roster_push(self, _client, stanza, props):
        if props.roster is not None:
            self.roster_pushes.append(props.roster.item)

    def _on_blocking_push(self, _client, stanza, props):
        if props.blocking is not None:
            self.blocking_pushes.append(props.blocking)


    def dump(self, limit=12000):
        text = "\n".join(f"{d}: {x}" for d, x in self.transcript)
        return f"--- {self.user} transcript (C=client, S=server) ---\n{text[-limit:]}"

    def send(self, stanza):
        self.client.send_stanza(stanza)

    # Waiting ----------------------------------------------------------

    def wait(self, cond, what, timeout=WAIT, others=()):
        pump(cond, what, timeout, (self, *others))

    def wait_for(self, items, pred, what, timeout=WAIT):
        """Waits for an element of the list items matching pred; removes it."""
        found = []

        def check():
            for i, x in enumerate(items):
                if pred(x):
                    found.append(items.pop(i))
                    return True
            return False

        self.wait(check, what, timeout)
        return found[0]

    def call(self, method, *args, timeout=WAIT, **kw):
        """Runs an nbxmpp iq_request_task to completion; returns or raises its result."""
        box = {}

        def done(task):
            try:
                box["result"] = task.finish()
            except Exception as e:  # noqa: BLE001 - re-raised below
                box["error"] = e

        method(*args, callback=done, timeout=timeout, **kw)
        self.wait(lambda: box, f"{method.__name__} result", timeout + 2)
        if "error" in box:
            raise box["error"]
        return box["result"]

    # Life cycle -------------------------------------------------------

    def login(self):
        self.client.connect()
        self.wait(lambda: self.signals, "login")
        assert self.signals[0] == "connected", (
            f"{self.user} did not log in: {self.signals} {self.client.get_error()}\n"
            + self.dump())
        self.full = str(self.client.get_bound_jid())

    def close(self):
        """Ends the stream (</stream:stream> both ways); safe to call twice."""
        if self.client is None:
            return
        try:
            if "connected" in self.signals and "disconnected" not in self.signals:
                self.client.disconnect()
                self.wait(lambda: "disconnected" in self.signals, "disconnect")
        finally:
            self.client.destroy()
            self.client = None


def pump(cond, what, timeout, clients=()):
    """Runs the default GLib main context until cond() or the deadline."""
    ctx = GLib.MainContext.default()
    tick = GLib.timeout_add(50, lambda: True)  # wakes the blocking iteration
    try:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                                     + "\n".join(c.dump() for c in clients))
            ctx.iteration(True)
    finally:
        GLib.source_remove(tick)


def settle(seconds):
    """Runs the loop for a while (to show that something does NOT arrive)."""
    end = time.monotonic() + seconds
    pump(lambda: time.monotonic() >= end, "settle", seconds + 1)


def sent_auth_mechanisms(c):
    return re.findall(r"<auth [^>]*mechanism=\"([^\"]+)\"", "".join(
        x for d, x in c.transcript if d == "C"))


def test_nbxmpp_login_picks_scram_over_starttls_and_direct_tls(server):
    server.adduser("alice")
    server.start()
    sasl_log = SaslLog()
    sasl_logger = logging.getLogger("nbxmpp.sasl")
    old_level = sasl_logger.level
    sasl_logger.setLevel(logging.INFO)
    sasl_logger.addHandler(sasl_log)
    try:
        for direct in (False, True):
            sasl_log.lines.clear()
            a = NbClient(server, "alice", resource=f"gajim-{int(direct)}", direct_tls=direct)
            try:
                a.login()
                assert a.full == f"alice@{DOMAIN}/gajim-{int(direct)}"
                assert a.client.is_stream_secure and a.client.is_stream_authenticated
                assert a.client.tls_version == Gio.TlsProtocolVersion.TLS_1_3
                # The server offers SCRAM-SHA-1/256/512 (and -PLUS, which nbxmpp
                # cannot do over GLib, and PLAIN): nbxmpp must take the strongest
                # SCRAM, never PLAIN, and verify the server signature.
                chosen = [m for m in sasl_log.lines if "Chosen auth mechanism" in m]
                assert chosen and chosen[-1].endswith("SCRAM-SHA-512"), sasl_log.lines
                assert any("Validated success data" in m for m in sasl_log.lines), sasl_log.lines
                assert sent_auth_mechanisms(a) == ["SCRAM-SHA-512"], a.dump()
                offered = "".join(x for d, x in a.transcript if d == "S")
                for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"):
                    assert f"<mechanism>{mech}</mechanism>" in offered
            finally:
                a.close()
            assert "disconnected" in a.signals
        # parleyd agrees on what was used.
        assert server.log().count(f"authenticated alice@{DOMAIN} with SCRAM-SHA-512") == 2
    finally:
        sasl_logger.removeHandler(sasl_log)
        sasl_logger.setLevel(old_level)


def test_nbxmpp_restricted_to_one_mechanism_still_logs_in(server):
    """What older servers offer: Gajim's mechanism filter still logs in."""
    server.adduser("alice")
    server.start()
    for mechs, wire in (({"SCRAM-SHA-1"}, "SCRAM-SHA-1"),
                        ({"SCRAM-SHA-256"}, "SCRAM-SHA-256"),
                        ({"PLAIN"}, "PLAIN")):
        a = NbClient(server, "alice")
        a.client.set_mechs(set(mechs))
        try:
            a.login()
            assert sent_auth_mechanisms(a) == [wire]
        finally:
            a.close()


def test_nbxmpp_rejects_the_certificate_unless_pinned(server):
    server.adduser("alice")
    server.start()
    a = NbClient(server, "alice", pin=False)
    a.client.connect()
    a.wait(lambda: a.signals, "connection outcome")
    assert "connected" not in a.signals, a.signals
    cert, errors = a.client.peer_certificate
    assert cert is not None and Gio.TlsCertificateFlags.UNKNOWN_CA in errors, errors
    assert not any("<auth" in x for d, x in a.transcript if d == "C")
    a.close()


def test_nbxmpp_roster_subscription_presence_and_chat(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = NbClient(server, "alice")
    b = NbClient(server, "bob")
    try:
        a.login()
        b.login()
        # Gajim's start-up: roster, then initial presence.
        for c in (a, b):
            roster = c.call(c.client.get_module("Roster").request_roster)
            assert roster.items == [] and roster.version, roster
            c.send(Presence(priority=5, status="online"))
        settle(0.3)

        # alice adds bob with a name and a group, then asks to subscribe.
        a.call(a.client.get_module("Roster").set_item, b.bare, "Bob", ["Friends"])
        item = a.wait_for(a.roster_pushes, lambda i: str(i.jid) == b.bare, "push of bob")
        assert item.name == "Bob" and item.groups == {"Friends"} and item.subscription == "none"
        a.send(Presence(to=b.bare, typ="subscribe"))
        item = a.wait_for(a.roster_pushes, lambda i: i.ask == "subscribe", "ask=subscribe push")
        sub = b.wait_for(b.presences, lambda p: p.type.is_subscribe, "subscribe request")
        assert sub.jid.bare == a.bare

        # bob approves (Gajim's "Allow"), then subscribes back.
        b.send(Presence(to=a.bare, typ="subscribed"))
        a.wait_for(a.presences, lambda p: p.type.is_subscribed, "subscribed")
        a.wait_for(a.roster_pushes, lambda i: i.subscription == "to", "subscription=to push")
        avail = a.wait_for(a.presences,
                           lambda p: p.type.is_available and str(p.jid) == b.full,
                           "bob's presence after approval")
        assert avail.priority == 5 and avail.status == "online"
        b.wait_for(b.roster_pushes,
                   lambda i: str(i.jid) == a.bare and i.subscription == "from", "from push")

        b.send(Presence(to=a.bare, typ="subscribe"))
        a.wait_for(a.presences, lambda p: p.type.is_subscribe and p.jid.bare == b.bare,
                   "bob's subscribe")
        a.send(Presence(to=b.bare, typ="subscribed"))
        b.wait_for(b.roster_pushes, lambda i: i.subscription == "both", "both push (bob)")
        a.wait_for(a.roster_pushes, lambda i: i.subscription == "both", "both push (alice)")
        b.wait_for(b.presences, lambda p: p.type.is_available and str(p.jid) == a.full,
                   "alice's presence after approval")

        # The stored rosters, as Gajim fetches them at the next login.
        ra = a.call(a.client.get_module("Roster").request_roster)
        [bob_item] = ra.items
        assert (str(bob_item.jid), bob_item.name, bob_item.groups, bob_item.subscription) == \
            (b.bare, "Bob", {"Friends"}, "both")
        rb = b.call(b.client.get_module("Roster").request_roster)
        assert [(str(i.jid), i.subscription) for i in rb.items] == [(a.bare, "both")]

        # Presence broadcast: a status change reaches the contact.
        a.presences.clear()
        b.presences.clear()
        a.send(Presence(show="away", status="lunch", priority=1))
        p = b.wait_for(b.presences, lambda p: str(p.jid) == a.full and p.status == "lunch",
                       "alice's away presence")
        assert p.show.value == "away" and p.priority == 1

        # Messages both ways: to the full JID and to the bare JID.
        a.send(Message(to=b.full, body="hello from nbxmpp alice", typ="chat"))
        m = b.wait_for(b.messages, lambda m: m.body == "hello from nbxmpp alice", "a->b chat")
        assert str(m.from_) == a.full and m.type.is_chat
        b.send(Message(to=a.bare, body="hi alice, bob here", typ="chat"))
        m = a.wait_for(a.messages, lambda m: m.body == "hi alice, bob here", "b->a chat")
        # RFC 6121 8.5.2.1.1: delivered to the resource, "to" left as the bare JID
        assert str(m.from_) == b.full and str(m.to) == a.bare

        # bob goes offline: alice sees him leave.
        b.close()
        a.wait_for(a.presences, lambda p: p.type.is_unavailable and str(p.jid) == b.full,
                   "bob's unavailable presence")
    finally:
        b.close()
        a.close()


def test_nbxmpp_service_discovery_and_server_queries(server):
    """What Gajim asks the server right after login."""
    server.adduser("alice")
    server.start()
    a = NbClient(server, "alice")
    try:
        a.login()
        info = a.call(a.client.get_module("Discovery").disco_info, DOMAIN)
        assert any(i.category == "server" and i.type == "im" for i in info.identities)
        for feature in (Namespace.BLOCKING, Namespace.VCARD, Namespace.PING,
                        Namespace.VERSION, Namespace.TIME, Namespace.LAST):
            assert info.supports(feature), (feature, info.features)
        a.call(a.client.get_module("Discovery").disco_items, DOMAIN)
        a.call(a.client.get_module("Ping").ping, DOMAIN)
        version = a.call(a.client.get_module("SoftwareVersion").request_software_version,
                         DOMAIN)
        assert version.name
        when = a.call(a.client.get_module("EntityTime").request_entity_time, DOMAIN)
        assert when
        a.call(a.client.get_module("LastActivity").request_last_activity, DOMAIN)
    finally:
        a.close()


def test_nbxmpp_vcard_bookmarks_and_blocklist(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = NbClient(server, "alice")
    b = NbClient(server, "bob")
    try:
        a.login()
        b.login()
        for c in (a, b):
            c.send(Presence())

        # vcard-temp: Gajim's profile window, and the avatar in it.
        vcards = a.client.get_module("VCardTemp")
        card = VCard({"FN": "Alice Example", "NICKNAME": "ali",
                      "EMAIL": [{"HOME": "", "USERID": "alice@example.org"}]})
        avatar = bytes(range(256)) * 4
        card.set_avatar(avatar, "image/png")
        a.call(vcards.set_vcard, card)
        own = a.call(vcards.request_vcard)
        assert own.data["FN"] == "Alice Example" and own.data["NICKNAME"] == "ali"
        assert own.data["EMAIL"][0]["USERID"] == "alice@example.org"
        got, sha = own.get_avatar()
        assert got == avatar and own.data["PHOTO"]["TYPE"] == "image/png"
        theirs = b.call(b.client.get_module("VCardTemp").request_vcard, JID.from_string(a.bare))
        assert theirs.data["FN"] == "Alice Example" and theirs.get_avatar() == (avatar, sha)

        # Bookmarks in private XML storage (Gajim's fallback without PEP).
        bm = a.client.get_module("PrivateBookmarks")
        assert a.call(bm.request_bookmarks) == []
        room = BookmarkData(jid=JID.from_string("room@conference.example.org"),
                            name="Room", nick="ali", autojoin=True)
        a.call(bm.store_bookmarks, [room])
        [back] = a.call(bm.request_bookmarks)
        assert (back.jid, back.name, back.nick, back.autojoin) == \
            (room.jid, "Room", "ali", True)

        # Blocking (XEP-0191): list, block with push, effect, unblock.
        blocking = a.client.get_module("Blocking")
        assert a.call(blocking.request_blocking_list) == set()
        bob_jid = JID.from_string(b.bare)
        a.call(blocking.block, [bob_jid])
        push = a.wait_for(a.blocking_pushes, lambda p: p.block, "block push")
        assert push.block == {bob_jid}
        assert a.call(blocking.request_blocking_list) == {bob_jid}

        b.send(Message(to=a.full, body="can you hear me?", typ="chat"))
        err = b.wait_for(b.messages, lambda m: m.type.is_error, "bounce to the blocked sender")
        assert err.error.condition == "service-unavailable", err.error
        a.send(Message(to=b.full, body="blocked outbound", typ="chat"))
        err = a.wait_for(a.messages, lambda m: m.type.is_error, "error for blocked outbound")
        assert err.error.condition == "not-acceptable", err.error
        settle(0.3)
        assert not [m for m in a.messages if m.body == "can you hear me?"]
        assert not [m for m in b.messages if m.body == "blocked outbound"]

        a.call(blocking.unblock, [bob_jid])
        push = a.wait_for(a.blocking_pushes, lambda p: p.unblock, "unblock push")
        assert push.unblock == {bob_jid}
        assert a.call(blocking.request_blocking_list) == set()
        b.send(Message(to=a.full, body="and now?", typ="chat"))
        a.wait_for(a.messages, lambda m: m.body == "and now?", "message after unblock")
    finally:
        b.close()
        a.close()


def test_nbxmpp_bad_password_is_a_sasl_error(server):
    server.adduser("alice")
    server.start()
    a = NbClient(server, "alice")
    a.client.set_password("wrong password")
    try:
        a.client.connect()
        a.wait(lambda: a.signals, "login outcome")
        assert "connected" not in a.signals
        domain, error, _text = a.client.get_error()
        assert (domain, error) == (StreamError.SASL, "not-authorized"), a.client.get_error()
    finally:
        a.close()
