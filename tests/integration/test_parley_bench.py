"""A smoke run of each parley-bench scenario against the real server
(issue #6: the benchmark itself is not part of CI, but the tool must keep
working). Small counts, about a second each; checks that every scenario
ends with a sane JSON line, not any figure."""
import json
import os
import subprocess

import pytest

from conftest import BUILD, Server

BENCH = os.path.join(BUILD, "tools", "parley-bench")


@pytest.fixture
def bench_server(tmp_path):
    srv = Server(str(tmp_path), extra="registration: open\nlimits.registrations_per_ip: 0\n"
                 # a load generator is one address at thousands of stanzas/s,
                 # as in bench/compare
                 "limits.connections_per_second_per_ip: 0\nlimits.connections_per_ip: 0\n"
                 "limits.stanzas_per_second: 0\nlimits.bytes_per_second: 0\n")
    srv.start()
    yield srv
    assert srv.stop() == 0


def run(server, *args, timeout=120):
    cmd = [BENCH, args[0], "--port", str(server.c2s), "--password", "bench pw",
           "--server-pid", str(server.proc.pid), "--sources", "4",
           "--scram-cache", os.path.join(server.dir, "scram-cache"), *args[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [l[5:] for l in r.stdout.splitlines() if l.startswith("JSON ")]
    assert r.returncode == 0 and len(lines) == 1, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[0])


def test_every_scenario(bench_server):
    s = bench_server
    # More at once than the server derives keys for at once (8): the rest
    # are told to wait, and parley-bench must ask again, not give up.
    reg = run(s, "register", "--count", "12", "--concurrency", "12")
    assert reg["created"] == 12 and reg["errors"] == 0
    again = run(s, "register", "--count", "12", "--concurrency", "4")
    assert again["existing"] == 12
    login = run(s, "login", "--count", "12", "--concurrency", "4", "--duration", "1",
                "--warmup", "0.3")
    assert login["logins"] > 0 and login["errors"] == 0
    direct = run(s, "login", "--count", "12", "--concurrency", "4", "--duration", "0.5",
                 "--warmup", "0.2", "--direct-tls", "--port", str(s.c2s_tls))
    assert direct["logins"] > 0 and direct["tls"] == "direct"
    idle = run(s, "idle", "--count", "12", "--sessions", "24", "--hold", "0.5")
    assert idle["open"] == 24 and idle["rss_after_kib"] > 0
    chat = run(s, "chat", "--count", "12", "--sessions", "12", "--duration", "1",
               "--warmup", "0.2")
    assert chat["delivered"] > 0 and chat["errors"] == 0
    paced = run(s, "chat", "--count", "12", "--sessions", "12", "--rate", "200",
                "--duration", "1", "--warmup", "0.2")
    assert 100 <= paced["msgs_per_s"] <= 300
    pres = run(s, "presence", "--count", "12", "--sessions", "12", "--roster", "4")
    assert pres["presences"] > 0 and pres["errors"] == 0
