"""XEP-0030 on the server and on accounts, XEP-0115 server capabilities
(the stream feature's hash matches disco#info, as slixmpp computes it),
XEP-0157 contact addresses (a XEP-0128 form), and who may discover an
account or its last activity (XEP-0012 §3: subscribed contacts)."""
import asyncio
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import DOMAIN, Server
from test_rfc6121_roster import C, STANZAS, Raw
from test_rfc6121_subscription import befriend, online
from xmpp_client import connect

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
D = "{%s}" % INFO
X = "{jabber:x:data}"


def cond(e):
    err = e.find(C + "error")
    assert err is not None, ET.tostring(e)
    return [x.tag.split("}")[1] for x in err if x.tag.startswith(STANZAS)][0]


def caps_of(features_xml):
    m = re.search(r"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='([^']+)' "
                  r"ver='([^']+)'/>", features_xml)
    assert m, features_xml
    return m.group(1), m.group(2)


def features_after_auth(server, user="alice"):
    """Stream features of the authenticated stream, as raw text."""
    import base64
    import ssl
    from conftest import STREAM_HEADER, PASSWORD, raw_connect, recv_until
    s = raw_connect(server.c2s)
    s.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    recv_until(s, b"/>")
    t = ssl.create_default_context(cafile=server.cert).wrap_socket(s, server_hostname=DOMAIN)
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(t, b"</stream:features>")
    auth = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode()).decode()
    t.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
              .encode())
    recv_until(t, b"</success>")
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    feats = recv_until(t, b"</stream:features>").decode()
    t.close()
    return feats


def test_server_caps_match_disco(server):
    server.adduser("alice")
    server.start()
    node, ver = caps_of(features_after_auth(server))

    async def run():
        c = await connect(server, "alice")
        c.register_plugin("xep_0115")
        info = await c["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        # XEP-0115 §5: slixmpp's own implementation of the hash.
        assert c["xep_0115"].generate_verstring(info["disco_info"], "sha-1") == ver
        # §6.2: the node#ver asks for the same, and is echoed.
        again = await c["xep_0030"].get_info(jid=DOMAIN, node=f"{node}#{ver}", timeout=10)
        assert again["disco_info"]["node"] == f"{node}#{ver}"
        assert set(again["disco_info"]["features"]) == set(info["disco_info"]["features"])
        await c.close()

    asyncio.run(run())
    a = Raw(server, "alice")
    r = a.iq("get", f"<query xmlns='{INFO}' node='{node}#wrong'/>", to=DOMAIN)
    assert cond(r) == "item-not-found"
    a.close()


@pytest.fixture
def contact_server(tmp_path):
    srv = Server(str(tmp_path), extra="contact:\n"
                 "  abuse: ['mailto:abuse@localhost', 'xmpp:abuse@localhost']\n"
                 "  security: ['https://localhost/security']\n")
    yield srv
    assert srv.stop() == 0


def test_contact_addresses(contact_server):
    server = contact_server
    server.adduser("alice")
    server.start()
    a = Raw(server, "alice")
    r = a.iq("get", f"<query xmlns='{INFO}'/>", to=DOMAIN)
    forms = r.findall(f"{D}query/{X}x")
    assert len(forms) == 1
    fields = {f.get("var"): [v.text for v in f.findall(X + "value")]
              for f in forms[0].findall(X + "field")}
    assert fields["FORM_TYPE"] == ["http://jabber.org/network/serverinfo"]
    assert fields["abuse-addresses"] == ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
    assert fields["security-addresses"] == ["https://localhost/security"]
    assert "admin-addresses" not in fields
    a.close()
    # The caps hash covers the form (XEP-0115 §5.4).
    _, ver = caps_of(features_after_auth(server))

    async def run():
        c = await connect(server, "alice")
        c.register_plugin("xep_0115")
        info = await c["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        assert c["xep_0115"].generate_verstring(info["disco_info"], "sha-1") == ver
        await c.close()

    asyncio.run(run())


def test_contact_address_must_be_uri(tmp_path):
    srv = Server(str(tmp_path), extra="contact.admin: ['just text']\n")
    r = srv.ctl("check", "config", check=False)
    assert r.returncode != 0 and "contact.admin" in r.stderr and "URI" in r.stderr


def test_account_disco_for_contacts_only(server):
    for u in ("alice", "bob", "mallory"):
        server.adduser(u)
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    m = online(server, "mallory")
    befriend(b, a)  # bob is subscribed to alice ('from' in alice's roster)
    for who in (a, b):
        r = who.iq("get", f"<query xmlns='{INFO}'/>", to=f"alice@{DOMAIN}")
        assert r.get("type") == "result", ET.tostring(r)
        ident = r.find(f"{D}query/{D}identity")
        assert (ident.get("category"), ident.get("type")) == ("account", "registered")
        r = who.iq("get", f"<query xmlns='{ITEMS}'/>", to=f"alice@{DOMAIN}")
        assert r.get("type") == "result"
    # A stranger learns nothing, not even whether the account exists.
    for target in (f"alice@{DOMAIN}", f"nobody@{DOMAIN}"):
        r = m.iq("get", f"<query xmlns='{INFO}'/>", to=target)
        assert cond(r) == "service-unavailable", target
    # And alice does not see into bob's account: her subscription is not there.
    r = a.iq("get", f"<query xmlns='{INFO}'/>", to=f"bob@{DOMAIN}")
    assert cond(r) == "service-unavailable"
    for x in (a, b, m):
        x.close()


def test_last_activity_for_contacts(server):
    for u in ("alice", "bob", "mallory"):
        server.adduser(u)
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    m = online(server, "mallory")
    befriend(b, a)
    a.presence("<presence type='unavailable'><status>gone fishing</status></presence>")
    a.close()
    b.drain(0.5)
    r = b.iq("get", "<query xmlns='jabber:iq:last'/>", to=f"alice@{DOMAIN}")
    assert r.get("type") == "result", ET.tostring(r)
    q = r.find("{jabber:iq:last}query")
    assert int(q.get("seconds")) >= 0 and q.text == "gone fishing"
    r = m.iq("get", "<query xmlns='jabber:iq:last'/>", to=f"alice@{DOMAIN}")
    assert cond(r) == "forbidden"
    b.close()
    m.close()
