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
