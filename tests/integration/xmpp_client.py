"""A slixmpp client set up for tests against a local parleyd."""
import asyncio

import slixmpp

from conftest import DOMAIN, PASSWORD


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password=PASSWORD, cafile=None, mech=None, channel_binding=True):
        super().__init__(jid, password)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0092")
        self.register_plugin("xep_0199")
        if cafile:
            self.ssl_context.load_verify_locations(cafile)
        if mech:
            self["feature_mechanisms"].use_mech = mech
        if not channel_binding:
            # Python's ssl module offers tls-unique only, which RFC 9266
            # retires for TLS 1.3; without this slixmpp would send 'y'.
            plugin = self["feature_mechanisms"]
            orig = plugin._default_credentials

            def creds(required, optional):
                result = orig(required, optional)
                if "channel_binding" in result:
                    result["channel_binding"] = None
                return result

            plugin.sasl_callback = creds
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))
        self.disconnected_event = asyncio.Event()
        self.add_event_handler("disconnected", lambda _: self.disconnected_event.set())

    async def login(self, port, direct_tls=False, timeout=15, presence=True):
        """Connects and waits for session start; False if auth failed."""
        loop = asyncio.get_event_loop()
        fut = loop.create_future()

        def done(v):
            if not fut.done():
                fut.set_result(v)

        self.add_event_handler("session_start", lambda _: done(True))
        self.add_event_handler("failed_all_auth", lambda _: done(False))
        self.add_event_handler("disconnected", lambda _: done(False))
        self.connect(("127.0.0.1", port), use_ssl=direct_tls)
        ok = await asyncio.wait_for(fut, timeout)
        if ok and presence:
            self.send_presence()
        return ok

    async def close(self):
        if self.transport is not None:
            self.disconnect()
            try:
                await asyncio.wait_for(self.disconnected_event.wait(), 5)
            except asyncio.TimeoutError:
                pass


async def connect(server, user, **kw):
    """Logs user in; returns the client or raises."""
    direct = kw.pop("direct_tls", False)
    # slixmpp would try each -PLUS mechanism with tls-unique first, which
    # TLS 1.3 does not define; name the mechanism instead.
    kw.setdefault("mech", "SCRAM-SHA-256")
    c = Client(f"{user}@{DOMAIN}/{kw.pop('resource', 'test')}", cafile=server.cert,
               channel_binding=kw.pop("channel_binding", False), **kw)
    ok = await c.login(server.c2s_tls if direct else server.c2s, direct_tls=direct)
    if not ok:
        raise AssertionError(f"login of {user} failed")
    return c
