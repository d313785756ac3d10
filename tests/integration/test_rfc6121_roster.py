"""RFC 6121 §2: the roster. Get, set, remove, pushes to interested
resources, versioning (§2.6), errors (§2.3.3, §2.5.3), the item limit.

Most tests speak raw XML (class Raw, also used by the subscription and
presence tests) because what matters is the exact stanza on the wire."""
import asyncio
import time
import xml.etree.ElementTree as ET

from conftest import DOMAIN, raw_login
from xmpp_client import connect

C = "{jabber:client}"
R = "{jabber:iq:roster}"
ROSTER = "jabber:iq:roster"
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


class Raw:
    """A logged-in raw client that splits the stream into stanzas."""

    _ids = 0

    def __init__(self, server, user, resource="raw"):
        self.sock, _ = raw_login(server, user, resource=resource)
        self.user = user
        self.bare = f"{user}@{getattr(server, 'domain', DOMAIN)}"
        self.jid = f"{self.bare}/{resource}"
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.parser.feed("<stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams'>")
        self.depth = 0
        self.queue = []
        self.closed = False

    def send(self, xml):
        self.sock.sendall(xml.encode())

    def _pump(self, timeout):
        if self.closed:
            time.sleep(timeout)
            return
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, OSError):
            return
        if not data:
            self.closed = True
            return
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.queue.append(el)

    def expect(self, pred, timeout=5, what="stanza"):
        """Returns (and removes) the first stanza for which pred is true."""
        end = time.time() + timeout
        while True:
            for i, el in enumerate(self.queue):
                if pred(el):
                    return self.queue.pop(i)
            left = end - time.time()
            if left <= 0:
                seen = [ET.tostring(e).decode() for e in self.queue]
                raise AssertionError(f"{self.jid}: no {what} within {timeout}s; got {seen}")
            self._pump(min(left, 0.2))

    def expect_none(self, pred, wait=1.0, what="stanza"):
        end = time.time() + wait
        while time.time() < end:
            self._pump(0.1)
        bad = [ET.tostring(e).decode() for e in self.queue if pred(e)]
        assert not bad, f"{self.jid}: unexpected {what}: {bad}"

    def drain(self, wait=0.3):
        end = time.time() + wait
        while time.time() < end:
            self._pump(0.05)
        q, self.queue = self.queue, []
        return q

    def next_id(self):
        Raw._ids += 1
        return f"r{Raw._ids}"

    def iq(self, type, payload, to=None, timeout=5):
        """Sends an IQ and returns the answer (result or error)."""
        i = self.next_id()
        t = f" to='{to}'" if to else ""
        self.send(f"<iq type='{type}' id='{i}'{t}>{payload}</iq>")
        return self.expect(lambda e: e.tag == C + "iq" and e.get("id") == i and
                           e.get("type") in ("result", "error"), timeout, f"answer to {i}")

    # --- roster helpers ---
    def roster_get(self, ver=None):
        v = f" ver='{ver}'" if ver is not None else ""
        r = self.iq("get", f"<query xmlns='{ROSTER}'{v}/>")
        assert r.get("type") == "result", ET.tostring(r)
        return r

    def roster_set(self, jid, name=None, groups=(), remove=False):
        n = f" name='{name}'" if name else ""
        s = " subscription='remove'" if remove else ""
        g = "".join(f"<group>{x}</group>" for x in groups)
        return self.iq("set", f"<query xmlns='{ROSTER}'><item jid='{jid}'{n}{s}>{g}</item>"
                       "</query>")

    def push(self, jid, timeout=5, **attrs):
        """Waits for a roster push about jid (with these attributes); answers it."""
        def match(e):
            if e.tag != C + "iq" or e.get("type") != "set":
                return False
            it = e.find(f"{R}query/{R}item")
            if it is None or it.get("jid") != jid:
                return False
            return all(it.get(k) == v for k, v in attrs.items())
        e = self.expect(match, timeout, f"push for {jid} {attrs}")
        assert e.get("from") in (None, self.bare), ET.tostring(e)
        self.send(f"<iq type='result' id='{e.get('id')}'/>")
        return e.find(f"{R}query/{R}item"), e.find(f"{R}query")

    def presence(self, xml="<presence/>"):
        self.send(xml)

    def expect_presence(self, frm, type=None, timeout=5):
        def match(e):
            return (e.tag == C + "presence" and e.get("from") == frm and
                    e.get("type") == type)
        return self.expect(match, timeout, f"presence type={type} from {frm}")

    def close(self):
        try:
            self.send("</stream:stream>")
            self.sock.close()
        except OSError:
            pass


def items(result):
    q = result.find(R + "query")
    assert q is not None, ET.tostring(result)
    return {i.get("jid"): i for i in q.findall(R + "item")}


def groups(item):
    return sorted(g.text for g in item.findall(R + "group"))


def error_of(stanza):
    e = stanza.find(C + "error")
    assert e is not None, ET.tostring(stanza)
    return [c.tag.replace(STANZAS, "") for c in e if c.tag.startswith(STANZAS)][0]


# --- get / set / remove ---

def test_empty_roster(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    r = a.roster_get()
    assert items(r) == {}
    a.close()


def test_set_get_remove_with_pushes_to_two_resources(server):
    server.adduser("alice")
    server.start()
    a1 = Raw(server, "alice", "one")
    a2 = Raw(server, "alice", "two")
    a3 = Raw(server, "alice", "three")  # never asks for the roster: not interested
    a3.presence()  # (but is available)
    a1.roster_get()
    a2.roster_get()

    r = a1.roster_set("romeo@example.net", name="Romeo", groups=["Friends", "Lovers"])
    assert r.get("type") == "result", ET.tostring(r)
    for c in (a1, a2):
        it, _ = c.push("romeo@example.net", subscription="none", name="Romeo")
        assert groups(it) == ["Friends", "Lovers"]
        assert it.get("ask") is None
    # RFC 6121 §2.2: pushes go to interested resources only.
    a3.expect_none(lambda e: e.tag == C + "iq" and e.get("type") == "set", 0.5, "push")

    got = items(a2.roster_get())
    assert list(got) == ["romeo@example.net"]
    assert got["romeo@example.net"].get("name") == "Romeo"
    assert got["romeo@example.net"].get("subscription") == "none"
    assert groups(got["romeo@example.net"]) == ["Friends", "Lovers"]

    # An update replaces name and groups.
    r = a2.roster_set("romeo@example.net", name="R.", groups=["Enemies"])
    assert r.get("type") == "result"
    for c in (a1, a2):
        it, _ = c.push("romeo@example.net", name="R.")
        assert groups(it) == ["Enemies"]
    got = items(a1.roster_get())
    assert got["romeo@example.net"].get("name") == "R."
    assert groups(got["romeo@example.net"]) == ["Enemies"]

    r = a1.roster_set("romeo@example.net", remove=True)
    assert r.get("type") == "result", ET.tostring(r)
    for c in (a1, a2):
        c.push("romeo@example.net", subscription="remove")
    assert items(a1.roster_get()) == {}
    for c in (a1, a2, a3):
        c.close()


def test_roster_survives_restart(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    assert a.roster_set("nurse@example.com", name="Nurse", groups=["Servants"]).get(
        "type") == "result"
    a.close()
    assert server.stop() == 0
    server.start()
    a = Raw(server, "alice")
    got = items(a.roster_get())
    assert got["nurse@example.com"].get("name") == "Nurse"
    assert groups(got["nurse@example.com"]) == ["Servants"]
    a.close()


def test_jid_is_normalized(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    assert a.roster_set("Romeo@EXAMPLE.net").get("type") == "result"
    assert list(items(a.roster_get())) == ["romeo@example.net"]
    a.close()


# --- errors (RFC 6121 §2.3.3, §2.5.3, §2.1.5) ---

def test_set_errors(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    a.roster_get()
    bad = [
        # two items
        (f"<query xmlns='{ROSTER}'><item jid='a@example.com'/><item jid='b@example.com'/>"
         "</query>", "bad-request"),
        # no item / no jid / invalid jid
        (f"<query xmlns='{ROSTER}'/>", "bad-request"),
        (f"<query xmlns='{ROSTER}'><item name='x'/></query>", "bad-request"),
        (f"<query xmlns='{ROSTER}'><item jid='@@bad@@'/></query>", "bad-request"),
        # duplicate group
        (f"<query xmlns='{ROSTER}'><item jid='a@example.com'><group>G</group><group>G</group>"
         "</item></query>", "bad-request"),
        # empty group, too long a group, too long a name
        (f"<query xmlns='{ROSTER}'><item jid='a@example.com'><group></group></item></query>",
         "not-acceptable"),
        (f"<query xmlns='{ROSTER}'><item jid='a@example.com'><group>{'g' * 2000}</group>"
         "</item></query>", "not-acceptable"),
        (f"<query xmlns='{ROSTER}'><item jid='a@example.com' name='{'n' * 2000}'/></query>",
         "not-acceptable"),
    ]
    for payload, cond in bad:
        r = a.iq("set", payload)
        assert r.get("type") == "error", payload
        assert error_of(r) == cond, (payload, ET.tostring(r))
    # Nothing was added, and no push went out.
    assert items(a.roster_get()) == {}
    a.expect_none(lambda e: e.tag == C + "iq" and e.get("type") == "set", 0.3, "push")
    # Removing what is not there.
    r = a.roster_set("nobody@example.com", remove=True)
    assert r.get("type") == "error" and error_of(r) == "item-not-found"
    a.close()


def test_ask_and_subscription_in_a_set_are_ignored(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    r = a.iq("set", f"<query xmlns='{ROSTER}'><item jid='x@example.com' subscription='both' "
             "ask='subscribe' approved='true'/></query>")
    assert r.get("type") == "result"
    it = items(a.roster_get())["x@example.com"]
    assert it.get("subscription") == "none"
    assert it.get("ask") is None and it.get("approved") is None
    a.close()


def test_another_accounts_roster_is_forbidden(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = Raw(server, "alice")
    b = Raw(server, "bob")
    b.roster_set("secret@example.com")
    r = a.iq("get", f"<query xmlns='{ROSTER}'/>", to=f"bob@{DOMAIN}")
    assert r.get("type") == "error" and error_of(r) == "forbidden"
    r = a.iq("set", f"<query xmlns='{ROSTER}'><item jid='evil@example.com'/></query>",
             to=f"bob@{DOMAIN}")
    assert r.get("type") == "error" and error_of(r) == "forbidden"
    assert list(items(b.roster_get())) == ["secret@example.com"]
    a.close()
    b.close()


def test_item_limit(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    # Fill the roster without waiting for each answer.
    ids = []
    for i in range(1000):
        ids.append(a.next_id())
        a.send(f"<iq type='set' id='{ids[-1]}'><query xmlns='{ROSTER}'>"
               f"<item jid='c{i}@example.com'/></query></iq>")
    last = ids[-1]
    r = a.expect(lambda e: e.get("id") == last, 60)
    assert r.get("type") == "result", ET.tostring(r)
    r = a.roster_set("one-too-many@example.com")
    assert r.get("type") == "error" and error_of(r) == "not-allowed", ET.tostring(r)
    # Changing an existing item is still fine.
    assert a.roster_set("c1@example.com", name="x").get("type") == "result"
    assert len(items(a.roster_get())) == 1000
    a.close()


# --- versioning (RFC 6121 §2.6) ---

def test_stream_feature_advertised(server):
    import ssl
    from conftest import STREAM_HEADER, raw_connect, recv_until, PASSWORD
    import base64
    server.adduser("alice")
    server.start()
    s = raw_connect(server.c2s)
    s.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    recv_until(s, b"/>")
    t = ssl.create_default_context(cafile=server.cert).wrap_socket(s, server_hostname=DOMAIN)
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    pre = recv_until(t, b"</stream:features>")
    assert b"urn:xmpp:features:rosterver" not in pre
    auth = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    t.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
              .encode())
    recv_until(t, b"</success>")
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    post = recv_until(t, b"</stream:features>")
    assert b"<ver xmlns='urn:xmpp:features:rosterver'/>" in post, post
    assert b"<sub xmlns='urn:xmpp:features:pre-approval'/>" in post, post
    t.close()


def test_versioning(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice", "one")
    # A client that does versioning gets 'ver' (here: empty roster).
    r = a.roster_get(ver="")
    ver0 = r.find(R + "query").get("ver")
    assert ver0
    # A client that does not, gets no 'ver'.
    assert a.roster_get().find(R + "query").get("ver") is None

    a.roster_set("a@example.com", name="A")
    _, q = a.push("a@example.com")
    ver1 = q.get("ver")
    a.roster_set("b@example.com")
    _, q = a.push("b@example.com")
    ver2 = q.get("ver")
    a.roster_set("c@example.com")
    _, q = a.push("c@example.com")
    ver3 = q.get("ver")
    assert len({ver0, ver1, ver2, ver3}) == 4

    # Current version: an empty result, no roster.
    r = a.roster_get(ver=ver3)
    assert r.find(R + "query") is None, ET.tostring(r)
    a.expect_none(lambda e: e.tag == C + "iq" and e.get("type") == "set", 0.3, "push")

    # Remove one, rename one; a client at ver2 is told exactly the changes.
    a.roster_set("a@example.com", remove=True)
    a.push("a@example.com", subscription="remove")
    a.roster_set("c@example.com", name="C")
    _, q = a.push("c@example.com", name="C")
    ver5 = q.get("ver")

    b = Raw(server, "alice", "two")
    r = b.roster_get(ver=ver2)
    assert r.find(R + "query") is None, ET.tostring(r)
    # §2.6.3: the changes as pushes, oldest first; the last one carries
    # the current version. b@ did not change since ver2 and is not sent.
    pushes = [e for e in b.drain(1.0) if e.tag == C + "iq" and e.get("type") == "set"]
    got = [(p.find(f"{R}query/{R}item").get("jid"),
            p.find(f"{R}query/{R}item").get("subscription")) for p in pushes]
    assert got == [("a@example.com", "remove"), ("c@example.com", "none")], got
    assert pushes[-1].find(R + "query").get("ver") == ver5

    # An unknown or foreign version: the whole roster, with the current version.
    for stale in ("garbage", "deadbeef-1", ver0 + "x"):
        r = b.roster_get(ver=stale)
        q = r.find(R + "query")
        assert q is not None and q.get("ver") == ver5, (stale, ET.tostring(r))
        assert sorted(items(r)) == ["b@example.com", "c@example.com"]
    # After the pushes, "one" is also current.
    r = a.roster_get(ver=ver5)
    assert r.find(R + "query") is None
    a.close()
    b.close()


def test_version_from_empty_roster_gets_changes(server):
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    ver0 = a.roster_get(ver="").find(R + "query").get("ver")
    a.roster_set("x@example.com")
    a.close()
    b = Raw(server, "alice", "b")
    r = b.roster_get(ver=ver0)
    if r.find(R + "query") is not None:
        # The whole roster is also a correct answer (§2.6.3).
        assert list(items(r)) == ["x@example.com"]
    else:
        b.push("x@example.com")
    b.close()


# --- with slixmpp, as a client library sees it ---

def test_slixmpp_roster_push(server):
    server.adduser("alice")
    server.start()

    async def run():
        c1 = await connect(server, "alice", resource="one")
        c2 = await connect(server, "alice", resource="two")
        await c1.get_roster()
        await c2.get_roster()
        got = asyncio.get_event_loop().create_future()
        c2.add_event_handler("roster_update",
                             lambda iq: got.done() or got.set_result(iq))
        c1.update_roster(f"romeo@example.net", name="Romeo", groups=["Friends"])
        await asyncio.wait_for(got, 5)
        item = c2.client_roster["romeo@example.net"]
        assert item["name"] == "Romeo"
        assert item["groups"] == ["Friends"]
        assert item["subscription"] == "none"
        await c1.close()
        await c2.close()

    asyncio.run(run())
