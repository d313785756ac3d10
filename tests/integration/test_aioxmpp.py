"""A second, independent client library (aioxmpp, with pyOpenSSL) logs in
over STARTTLS and direct TLS and exchanges messages with slixmpp."""
import asyncio

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher

from conftest import DOMAIN, PASSWORD
from xmpp_client import connect


def aioxmpp_client(server, user, direct_tls=False):
    connector = (aioxmpp.connector.XMPPOverTLSConnector() if direct_tls
                 else aioxmpp.connector.STARTTLSConnector())
    port = server.c2s_tls if direct_tls else server.c2s
    return aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(f"{user}@{DOMAIN}/aio"),
        aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[("127.0.0.1", port, connector)],
    )


def test_aioxmpp_chats_with_slixmpp(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        for direct in (False, True):
            client = aioxmpp_client(server, "alice", direct)
            got = asyncio.Queue()
            disp = client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
            disp.register_callback(aioxmpp.MessageType.CHAT, None,
                                   lambda msg: got.put_nowait(msg))
            async with client.connected():
                bob = await connect(server, "bob")
                msg = aioxmpp.Message(to=aioxmpp.JID.fromstr(bob.boundjid.full),
                                      type_=aioxmpp.MessageType.CHAT)
                msg.body[None] = "from aioxmpp"
                await client.send(msg)
                m = await asyncio.wait_for(bob.messages.get(), 10)
                assert m["body"] == "from aioxmpp"
                assert m["from"].full == f"alice@{DOMAIN}/aio"
                bob.send_message(mto=f"alice@{DOMAIN}/aio", mbody="from slixmpp", mtype="chat")
                reply = await asyncio.wait_for(got.get(), 10)
                assert reply.body.any() == "from slixmpp"
                assert str(reply.from_) == bob.boundjid.full
                await bob.close()

    asyncio.run(run())
