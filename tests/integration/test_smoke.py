import asyncio

from xmpp_client import connect


def test_login_and_ping(server):
    server.adduser("alice")
    server.start()

    async def run():
        c = await connect(server, "alice")
        await c["xep_0199"].ping("localhost", timeout=5)
        await c.close()

    asyncio.run(run())


def test_default_slixmpp_logs_in(server):
    """slixmpp as users run it, with no mechanism chosen: it tries -PLUS with
    tls-unique and then SCRAM with 'y' (both refused, RFC 9266 / RFC 5802
    §6) and must still get in through the remaining mechanisms."""
    from conftest import DOMAIN, PASSWORD
    from xmpp_client import Client
    server.adduser("alice")
    server.start()

    async def run():
        c = Client(f"alice@{DOMAIN}/default", PASSWORD, cafile=server.cert)
        assert await c.login(server.c2s)
        await c["xep_0199"].ping(DOMAIN, timeout=5)
        await c.close()

    asyncio.run(run())
    assert "authenticated alice@localhost" in server.log()
