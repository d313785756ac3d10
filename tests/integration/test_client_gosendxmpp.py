"""go-sendxmpp (Debian's go-sendxmpp, built on mattn/go-xmpp), the command-line
client people put in cron jobs and monitoring scripts, against a real parleyd.

It sends a message (STARTTLS and direct TLS) to a user logged in with
slixmpp, and in listen mode (-l) prints what a slixmpp user sends it. The
self-signed certificate is trusted the Go way: SSL_CERT_FILE names the CA
bundle, here the server's own certificate; no -n/--no-tls-verify. go-xmpp
knows PLAIN, DIGEST-MD5 and X-OAUTH2 only, so PLAIN (over TLS) is expected.

Every run is bounded: go-sendxmpp's own --timeout for connecting, a
subprocess deadline on top, and asyncio.wait_for on every expected event.
"""
import asyncio
import os
import re
import shutil
import subprocess

import pytest

from conftest import DOMAIN, PARLEYCTL, PASSWORD
from xmpp_client import connect

GOSENDXMPP = shutil.which("go-sendxmpp") or "/usr/bin/go-sendxmpp"
DEADLINE = 30  # seconds for any one go-sendxmpp run

# go-xmpp writes a newline after </auth> and restarts the stream with an
# XML declaration; the test below pins that the server skips whitespace
# before a restarted stream (it used to answer <bad-format/>).


def env_for(server, cafile):
    env = dict(os.environ)
    env["HOME"] = str(server.dir)  # no ~/.config/go-sendxmpp of the machine's user
    env["SSL_CERT_FILE"] = cafile  # Go's crypto/x509 takes its roots from here
    env["SSL_CERT_DIR"] = os.path.join(str(server.dir), "no-such-dir")
    return env


def account_args(server, user, password=PASSWORD, direct_tls=False):
    port = server.c2s_tls if direct_tls else server.c2s
    args = ["-u", f"{user}@{DOMAIN}", "-p", password, "-j", f"127.0.0.1:{port}",
            "--timeout", "10"]
    if direct_tls:
        args.append("-t")
    return args


def run_gosendxmpp(server, args, message="", cafile=None):
    """Runs go-sendxmpp to completion; returns the CompletedProcess."""
    return subprocess.run([GOSENDXMPP, "-d", *args], input=message, capture_output=True,
                          text=True, timeout=DEADLINE,
                          env=env_for(server, cafile or server.cert))


def explain(r, server):
    lines = [l for l in server.log().splitlines() if "tls handshake" not in l]
    return (f"go-sendxmpp exit {r.returncode}\n--- stdout ---\n{r.stdout[-2000:]}\n"
            f"--- stderr (-d: what the server sent, then errors) ---\n{r.stderr[-5000:]}\n"
            "--- parleyd log ---\n" + "\n".join(lines[-40:]))


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_gosendxmpp_sends_to_slixmpp_user(server, direct_tls):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        bob = await connect(server, "bob")
        try:
            loop = asyncio.get_running_loop()
            r = await loop.run_in_executor(None, run_gosendxmpp, server, [
                *account_args(server, "alice", direct_tls=direct_tls), f"bob@{DOMAIN}"],
                "first line from go-sendxmpp\nsecond line\n")
            assert r.returncode == 0, explain(r, server)
            m = await asyncio.wait_for(bob.messages.get(), 10)
            assert m["type"] == "chat"
            assert m["body"].strip() == "first line from go-sendxmpp\nsecond line"
            assert m["from"].bare == f"alice@{DOMAIN}"
            assert m["from"].resource.startswith("go-sendxmpp")
        finally:
            await bob.close()

    asyncio.run(run())
    # go-xmpp has no SCRAM: PLAIN, which parleyd offers on encrypted streams only.
    assert f"authenticated alice@{DOMAIN} with PLAIN" in server.log()


def test_gosendxmpp_listen_mode_prints_slixmpp_message(server):
    server.adduser("alice")
    server.adduser("bob")
    server.start()

    async def run():
        proc = await asyncio.create_subprocess_exec(
            GOSENDXMPP, "-l", *account_args(server, "bob"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env_for(server, server.cert))
        alice = None
        try:
            # Listening once parleyd has bound its resource (it then sends
            # initial presence, so a bare-JID message reaches it).
            for _ in range(200):
                if re.search(rf"bound bob@{DOMAIN}/go-sendxmpp", server.log()):
                    break
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("go-sendxmpp -l never bound\n" + server.log()[-3000:])
            assert proc.returncode is None, (
                f"go-sendxmpp -l exited {proc.returncode}: "
                f"{(await proc.stderr.read()).decode()}\n" + server.log()[-3000:])
            alice = await connect(server, "alice")
            alice.send_message(mto=f"bob@{DOMAIN}", mbody="ping from slixmpp", mtype="chat")
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            # "<timestamp> alice@localhost: ping from slixmpp"
            assert f"alice@{DOMAIN}: ping from slixmpp" in line.decode(), line
        finally:
            if alice is not None:
                await alice.close()
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()

    asyncio.run(run())


def test_gosendxmpp_refuses_a_certificate_it_does_not_trust(server, tmp_path):
    """Verification is on: another certificate for the same name is refused,
    before any credentials are sent."""
    server.adduser("alice")
    server.start()
    other = tmp_path / "other-ca"
    other.mkdir()
    subprocess.run([PARLEYCTL, "cert", "generate", DOMAIN, "--dir", str(other)],
                   check=True, capture_output=True)
    r = run_gosendxmpp(server, [*account_args(server, "alice"), f"alice@{DOMAIN}"], "x\n",
                       cafile=str(other / f"{DOMAIN}.crt"))
    assert r.returncode != 0, explain(r, server)
    assert "certificate" in r.stderr, explain(r, server)
    assert "authenticated" not in server.log()


def test_gosendxmpp_wrong_password_is_refused(server):
    server.adduser("alice")
    server.start()
    r = run_gosendxmpp(server, [*account_args(server, "alice", password="wrong"),
                                f"alice@{DOMAIN}"], "x\n")
    assert r.returncode != 0, explain(r, server)
    assert "not-authorized" in r.stderr, explain(r, server)
    assert "authentication failed for 'alice'" in server.log()


def test_whitespace_before_restarted_stream_header(server):
    """The go-sendxmpp failure on a raw socket: '\\n' after </auth>, then the
    new stream header with its XML declaration, as go-xmpp writes them.
    RFC 6120 allows whitespace between top-level elements; the old stream's
    trailing whitespace must not break the new stream."""
    import base64
    import ssl

    from conftest import STREAM_HEADER, raw_connect, recv_until

    server.adduser("alice")
    server.start()
    s = raw_connect(server.c2s)
    s.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in recv_until(s, b"/>")
    t = ssl.create_default_context(cafile=server.cert).wrap_socket(s, server_hostname=DOMAIN)
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    recv_until(t, b"</stream:features>")
    auth = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    t.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>\n"
              .encode())
    assert b"<success" in recv_until(t, b"</success>")
    t.sendall((STREAM_HEADER % DOMAIN).encode())
    data = recv_until(t, b"</stream:features>", timeout=5)
    t.close()
    assert b"<bind" in data and b"bad-format" not in data, data
