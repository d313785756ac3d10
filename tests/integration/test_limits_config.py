"""The per-account limits are configuration keys (docs/CONFIG.md) and the
server enforces the configured value, not only its default: roster items,
offline messages, vCard size, blocklist length."""
import xml.etree.ElementTree as ET

import pytest

from conftest import DOMAIN, Server
from test_rfc6121_roster import C, STANZAS, Raw

ROSTER = "jabber:iq:roster"


def cond(e):
    assert e.get("type") == "error", ET.tostring(e)
    return [x.tag.split("}")[1] for x in e.find(C + "error") if x.tag.startswith(STANZAS)][0]


@pytest.fixture
def small(tmp_path):
    srv = Server(str(tmp_path), extra="limits:\n  roster_items: 10\n  offline_messages: 3\n"
                 "  vcard_bytes: 4k\n  blocklist_items: 10\n")
    srv.adduser("alice")
    srv.adduser("bob")
    srv.start()
    yield srv
    assert srv.stop() == 0


def test_roster_items(small):
    a = Raw(small, "alice")
    for i in range(10):
        assert a.roster_set(f"c{i}@example.com").get("type") == "result"
    assert cond(a.roster_set("c10@example.com")) == "not-allowed"
    a.close()


def test_offline_messages(small):
    b = Raw(small, "bob")
    for i in range(3):
        b.send(f"<message to='alice@{DOMAIN}' id='o{i}' type='chat'><body>{i}</body></message>")
    b.send(f"<message to='alice@{DOMAIN}' id='o3' type='chat'><body>3</body></message>")
    e = b.expect(lambda e: e.get("id") == "o3")
    assert cond(e) == "resource-constraint"
    b.expect_none(lambda e: e.get("id") in ("o0", "o1", "o2"), 0.5, "error for a stored one")
    b.close()


def test_vcard_bytes(small):
    a = Raw(small, "alice")
    ok = a.iq("set", f"<vCard xmlns='vcard-temp'><DESC>{'a' * 3000}</DESC></vCard>")
    assert ok.get("type") == "result", ET.tostring(ok)
    big = a.iq("set", f"<vCard xmlns='vcard-temp'><DESC>{'b' * 5000}</DESC></vCard>")
    assert cond(big) == "not-acceptable"
    a.close()


def test_blocklist_items(small):
    a = Raw(small, "alice")
    items = "".join(f"<item jid='u{i}@example.com'/>" for i in range(10))
    assert a.iq("set", f"<block xmlns='urn:xmpp:blocking'>{items}</block>").get("type") == "result"
    r = a.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='x@example.com'/></block>")
    assert cond(r) == "resource-constraint"
    a.close()
