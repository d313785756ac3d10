"""Idle sessions give back their XML parser (xmlstream_park(), about 12 KiB
each) two seconds after their last input; the next input gets a new parser
that has been given the stream's root again. Nothing a client sees may
change: namespaces declared on the root still apply, a stanza split across
the pause still arrives whole, and stream errors are the same."""
import asyncio
import re
import time

from conftest import DOMAIN, recv_until, raw_login
from xmpp_client import connect

PARK_WAIT = 8  # s: the parser is parked 2 s after the last input


def wait_parked(server, count, timeout=PARK_WAIT):
    """Waits until the log shows `count` parked parsers in all."""
    end = time.time() + timeout
    while time.time() < end:
        if server.log().count("idle: XML parser parked") >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} parsers parked:\n" + server.log()[-3000:])


def test_root_namespaces_survive_parking(server):
    """RFC 6120 §4.8: the root's namespace declarations are in scope for
    every stanza. A prefix declared only there must still resolve after the
    parser was parked, and so must a prefix of the streams namespace other
    than 'stream'."""
    server.adduser("alice")
    server.start()
    header = (f"<?xml version='1.0'?><s:stream to='{DOMAIN}' xmlns='jabber:client' "
              "xmlns:s='http://etherx.jabber.org/streams' xmlns:p='urn:xmpp:ping' "
              "xmlns:q=\"urn:x:a'b&amp;c\" version='1.0'>")
    t, _ = raw_login(server, "alice", header=header)
    wait_parked(server, 1)
    t.sendall(f"<iq type='get' id='ping1' to='{DOMAIN}'><p:ping/></iq>".encode())
    data = recv_until(t, b"</iq>")
    assert re.search(rb"<iq[^>]*id='ping1'", data) and b"type='result'" in data, data
    # Parked again, then a payload in a namespace whose name had to be
    # escaped when the root was given to the new parser: it comes back
    # (an error echoing the payload, RFC 6120 §8.3.1) in the same namespace.
    wait_parked(server, 2)
    t.sendall(b"<iq type='get' id='q1'><q:query/></iq>")
    data = recv_until(t, b"</iq>")
    assert b"id='q1'" in data and b"type='error'" in data, data
    assert b"urn:x:a&apos;b&amp;c" in data or b"urn:x:a'b&amp;c" in data, data
    # And the streams prefix: the close is recognized.
    t.sendall(b"</s:stream>")
    assert b"</stream:stream>" in recv_until(t, b"</stream:stream>")
    t.close()


def test_stanza_split_across_idle_time(server):
    """Half a stanza, then silence longer than the park delay: the parser
    is not parked with input half read, and the stanza arrives whole."""
    server.adduser("alice")
    server.start()
    t, _ = raw_login(server, "alice")
    wait_parked(server, 1)
    me = f"alice@{DOMAIN}/raw"
    t.sendall(f"<message to='{me}' id='m1'><body>first ".encode())
    time.sleep(2.5)  # past the park delay; the retry comes 2 s after the try
    t.sendall(b"half</body></message>")
    data = recv_until(t, b"</message>")
    assert b"<body>first half</body>" in data, data
    # The half-read stanza kept the parser: only the first idle time parked it.
    assert server.log().count("idle: XML parser parked") == 1


def test_errors_after_parking(server):
    """Bad XML sent to a parked session gets the same stream error."""
    server.adduser("alice")
    server.start()
    t, _ = raw_login(server, "alice")
    wait_parked(server, 1)
    t.sendall(b"<message><body></message>")
    data = recv_until(t, b"</stream:stream>")
    assert b"<bad-format" in data, data
    t.close()


def test_slixmpp_after_idle(server):
    """Two slixmpp clients exchange messages and an IQ after their parsers
    were parked, several times over."""
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        a = await connect(server, "alice")
        b = await connect(server, "bob")
        got = asyncio.Queue()
        b.add_event_handler("message", lambda m: got.put_nowait(m["body"]))
        for i in range(2):
            # Both sent something last round (or logged in): both park.
            parked = 0 if i == 0 else server.log().count("idle: XML parser parked")
            await asyncio.to_thread(wait_parked, server, parked + 2)
            a.send_message(mto=f"bob@{DOMAIN}", mbody=f"hello {i}", mtype="chat")
            assert await asyncio.wait_for(got.get(), 5) == f"hello {i}"
            await a["xep_0199"].ping(DOMAIN, timeout=5)
            await b["xep_0199"].ping(DOMAIN, timeout=5)
        await a.close()
        await b.close()

    asyncio.run(run())
