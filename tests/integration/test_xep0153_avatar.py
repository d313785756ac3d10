"""XEP-0153 vCard-based avatars: the server stamps each available
presence with the SHA-1 of the account's vCard photo, replacing what the
client put, and updates it when the vCard changes."""
import base64
import hashlib

from conftest import DOMAIN
from test_rfc6121_roster import C
from test_rfc6121_subscription import befriend, online

U = "{vcard-temp:x:update}"
IMAGE = bytes(range(256)) * 20


def photo_of(p):
    x = p.findall(U + "x")
    assert len(x) == 1, "exactly one vcard-temp:x:update"
    ph = x[0].find(U + "photo")
    assert ph is not None
    return ph.text or ""


def set_vcard(c, image):
    if image is None:
        body = "<FN>Alice</FN>"
    else:
        b64 = base64.b64encode(image).decode()
        folded = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
        body = f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{folded}</BINVAL></PHOTO>"
    r = c.iq("set", f"<vCard xmlns='vcard-temp'>{body}</vCard>")
    assert r.get("type") == "result"


def test_hash_in_presence(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()
    a = online(server, "alice")
    b = online(server, "bob")
    befriend(b, a)  # bob sees alice's presence
    b.drain(0.3)
    # No vCard yet: "no avatar" is an empty <photo/> (§3.1).
    a.presence("<presence><status>1</status></presence>")
    assert photo_of(b.expect_presence(a.jid)) == ""
    set_vcard(a, IMAGE)
    a.presence("<presence><status>2</status>"
               "<x xmlns='vcard-temp:x:update'><photo>bogus</photo></x></presence>")
    want = hashlib.sha1(IMAGE).hexdigest()
    assert photo_of(b.expect_presence(a.jid)) == want
    # A new session learns the stored hash when it binds.
    a.close()
    b.expect_presence(a.jid, "unavailable")
    a = online(server, "alice", "again")
    assert photo_of(b.expect_presence(a.jid)) == want
    # Removing the photo empties it again.
    set_vcard(a, None)
    a.presence("<presence><status>3</status></presence>")
    assert photo_of(b.expect_presence(a.jid)) == ""
    a.close()
    b.close()
