"""src/net/dns.c against a real DNS server: tests/tools/dns_probe on a DnsBed.

SRV ordering (RFC 2782) and the "." target, A/AAAA (IPv6 first), TLSA
(RFC 6698), DNSSEC (secure on the signed zone, insecure on the unsigned one,
bogus on a broken signature), NXDOMAIN and NODATA, CNAME, an answer too big
for UDP (TCP), IP literals, bad names, cancellation, freeing with a lookup
outstanding, and valgrind on the probe.
Run with: PARLEY_BUILD=build /usr/bin/python3 -m pytest tests/integration/test_dns.py
"""
import collections
import os
import shutil
import subprocess

import pytest

from dns_testbed import DnsBed

BUILD = os.environ.get("PARLEY_BUILD", "/work/main/build")
PROBE = os.path.join(BUILD, "tests", "tools", "dns_probe")

TLSA_SHA256 = "a0" * 32
TLSA_SHA512 = "5e" * 64
MANY = 100  # A records of big.a.example: more than UDP carries, more than DNS_MAX_RECORDS

SIGNED = [
    "_xmpp-server._tcp.a.example. 60 IN SRV 0 50 5269 one.a.example.",
    "_xmpp-server._tcp.a.example. 60 IN SRV 0 50 5270 two.a.example.",
    "_xmpp-server._tcp.a.example. 60 IN SRV 5 10 5271 three.a.example.",
    "_xmpp-server._tcp.a.example. 60 IN SRV 10 0 5272 zero.a.example.",
    "_xmpp-server._tcp.a.example. 60 IN SRV 10 100 5273 heavy.a.example.",
    "_xmpp-client._tcp.a.example. 60 IN SRV 0 0 0 .",
    "_xmpp-server._tcp.bad.a.example. 60 IN SRV 0 0 5269 one.a.example.",
    "one.a.example. 60 IN AAAA 2001:db8::1",
    "one.a.example. 60 IN AAAA 2001:db8::2",
    "one.a.example. 60 IN A 192.0.2.1",
    "one.a.example. 60 IN A 192.0.2.2",
    "one.a.example. 60 IN A 192.0.2.3",
    "v4only.a.example. 60 IN A 192.0.2.4",
    "alias.a.example. 60 IN CNAME one.a.example.",
    "bad.a.example. 60 IN A 192.0.2.66",
    f"_5269._tcp.one.a.example. 60 IN TLSA 3 1 1 {TLSA_SHA256}",
    f"_5269._tcp.one.a.example. 60 IN TLSA 2 0 2 {TLSA_SHA512}",
    # A SHA2-256 of the wrong length: skipped.
    f"_5269._tcp.one.a.example. 60 IN TLSA 3 1 1 {'bb' * 31}",
    # Only a full certificate of more than 512 octets: an RRset, none usable.
    f"_5269._tcp.big.a.example. 60 IN TLSA 3 0 0 {'cc' * 600}",
] + [f"big.a.example. 60 IN A 198.51.100.{i}" for i in range(1, MANY + 1)]

UNSIGNED = [
    "host.plain.example. 60 IN A 192.0.2.77",
    "_xmpp-server._tcp.plain.example. 60 IN SRV 0 0 5269 host.plain.example.",
]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    b = DnsBed(tmp_path_factory.mktemp("dns"), zones={"a.example": SIGNED, "plain.example": UNSIGNED},
               signed={"a.example"},
               bogus=["bad.a.example", ("_xmpp-server._tcp.bad.a.example", "SRV")])
    yield b
    b.stop()


def probe(bed, kind, name, *extra, server=None, anchor=None, check=True, timeout=30):
    argv = [PROBE, server or bed.server, anchor or bed.trust_anchor, kind, name,
            *[str(x) for x in extra]]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr
    assert "LeakSanitizer" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def results(out):
    """[(records, secure, rc)] for each lookup the probe printed."""
    runs, recs = [], []
    for line in out.splitlines():
        if line.startswith("secure="):
            f = dict(kv.split("=") for kv in line.split())
            runs.append((recs, int(f["secure"]), int(f["rc"])))
            recs = []
        elif line.split()[0] in ("SRV", "ADDR", "TLSA"):
            recs.append(line.split()[1:])
    return runs


def one(bed, kind, name, *extra, **kw):
    runs = results(probe(bed, kind, name, *extra, **kw).stdout)
    assert len(runs) == 1, runs
    return runs[0]


DNS_OK, DNS_NONE, DNS_BOGUS, DNS_ERROR, DNS_NOSERVICE = 0, -1, -2, -3, -4


def test_bed_serves(bed):
    assert bed.query("one.a.example", 1) == (0, 4)  # 3 A + RRSIG (DO set)
    assert bed.query("nothing.example", 1)[0] == 3
    assert "a.example." in open(bed.trust_anchor).read()


def test_srv_order(bed):
    runs = results(probe(bed, "srv", "_xmpp-server._tcp.a.example", "--repeat=60").stdout)
    assert len(runs) == 60
    first = collections.Counter()
    last_two = collections.Counter()
    for recs, secure, rc in runs:
        assert (secure, rc) == (1, DNS_OK)
        assert len(recs) == 5
        prios = [int(r[0]) for r in recs]
        assert prios == [0, 0, 5, 10, 10], recs
        assert {r[3] for r in recs[:2]} == {"one.a.example", "two.a.example"}
        assert recs[2] == ["5", "10", "5271", "three.a.example"]
        first[recs[0][3]] += 1
        last_two[recs[3][3]] += 1
    # Equal weights: each first about half of the time (p of failing ~1e-18).
    assert first["one.a.example"] > 0 and first["two.a.example"] > 0, first
    # Weight 0 next to weight 100 comes first once in 101.
    assert last_two["heavy.a.example"] > 45, last_two


def test_srv_dot_is_no_service(bed):
    assert one(bed, "srv", "_xmpp-client._tcp.a.example") == ([], 1, DNS_NOSERVICE)


def test_srv_unsigned_zone(bed):
    assert one(bed, "srv", "_xmpp-server._tcp.plain.example") == (
        [["0", "0", "5269", "host.plain.example"]], 0, DNS_OK)


def test_addr_ipv6_first_and_alternating(bed):
    recs, secure, rc = one(bed, "addr", "one.a.example", 5269)
    assert (secure, rc) == (1, DNS_OK)
    assert [r[1] for r in recs] == ["5269"] * 5
    ips = [r[0] for r in recs]
    assert [(":" in ip) for ip in ips] == [True, False, True, False, False]
    assert sorted(ips) == sorted(["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2",
                                  "192.0.2.3"])


def test_addr_one_family(bed):
    assert one(bed, "addr", "v4only.a.example", 1) == ([["192.0.2.4", "1"]], 1, DNS_OK)


def test_addr_cname(bed):
    recs, secure, rc = one(bed, "addr", "alias.a.example", 5222)
    assert (secure, rc) == (1, DNS_OK)
    assert len(recs) == 5


def test_addr_unsigned(bed):
    assert one(bed, "addr", "host.plain.example", 5269) == ([["192.0.2.77", "5269"]], 0, DNS_OK)


def test_addr_over_tcp_and_bounded(bed):
    # 100 signed A records do not fit the 1232-octet UDP answer: libunbound
    # falls back to TCP (write then read events on the loop); 64 are used.
    recs, secure, rc = one(bed, "addr", "big.a.example", 443)
    assert (secure, rc) == (1, DNS_OK)
    assert len(recs) == 64
    assert all(r[0].startswith("198.51.100.") for r in recs)


def test_tlsa(bed):
    recs, secure, rc = one(bed, "tlsa", "one.a.example", 5269)
    assert (secure, rc) == (1, DNS_OK)
    assert sorted(recs) == sorted([["3", "1", "1", TLSA_SHA256], ["2", "0", "2", TLSA_SHA512]])


def test_tlsa_none_usable(bed):
    assert one(bed, "tlsa", "big.a.example", 5269) == ([], 1, DNS_OK)


def test_tlsa_absent_is_secure_none(bed):
    # An authenticated denial: DANE does not apply (RFC 7673 §3.2).
    assert one(bed, "tlsa", "v4only.a.example", 5269) == ([], 1, DNS_NONE)
    assert one(bed, "tlsa", "one.a.example", 5270) == ([], 1, DNS_NONE)


def test_bogus(bed):
    assert one(bed, "addr", "bad.a.example", 5269) == ([], 0, DNS_BOGUS)
    assert one(bed, "srv", "_xmpp-server._tcp.bad.a.example") == ([], 0, DNS_BOGUS)


def test_without_anchor_nothing_is_bogus(bed, tmp_path):
    empty = tmp_path / "none.anchor"
    empty.write_text("")
    assert one(bed, "addr", "bad.a.example", 1, anchor=str(empty)) == (
        [["192.0.2.66", "1"]], 0, DNS_OK)


def test_nxdomain_and_nodata(bed):
    assert one(bed, "addr", "missing.a.example", 1) == ([], 1, DNS_NONE)
    assert one(bed, "srv", "_xmpp-server._tcp.missing.a.example") == ([], 1, DNS_NONE)
    assert one(bed, "srv", "one.a.example") == ([], 1, DNS_NONE)  # NODATA
    assert one(bed, "addr", "nowhere.plain.example", 1) == ([], 0, DNS_NONE)
    assert one(bed, "addr", "outside.example", 1) == ([], 0, DNS_NONE)


def test_ip_literals(bed):
    assert one(bed, "addr", "192.0.2.200", 5269) == ([["192.0.2.200", "5269"]], 0, DNS_OK)
    assert one(bed, "addr", "2001:db8::7", 5269) == ([["2001:db8::7", "5269"]], 0, DNS_OK)
    assert one(bed, "addr", "[2001:db8::8]", 1) == ([["2001:db8::8", "1"]], 0, DNS_OK)
    # No server needed: a dead forwarder is never asked.
    assert one(bed, "addr", "::1", 7, server="127.0.0.1@1") == ([["::1", "7"]], 0, DNS_OK)


def test_bad_names_are_errors(bed):
    assert one(bed, "addr", "a..example", 1) == ([], 0, DNS_ERROR)
    assert one(bed, "addr", "[192.0.2.1]", 1) == ([], 0, DNS_ERROR)
    assert one(bed, "srv", "with space.example") == ([], 0, DNS_ERROR)
    assert one(bed, "addr", ("x" * 62 + ".") * 4 + "example", 1) == ([], 0, DNS_ERROR)
    # 63 + 12 of "_65535._tcp." leaves 241: a host of 242 is too long for TLSA
    host = ("x" * 59 + ".") * 4 + "a"
    assert len(host) == 241
    assert one(bed, "tlsa", host + "a", 65535) == ([], 0, DNS_ERROR)
    assert one(bed, "tlsa", host, 65535)[2] == DNS_NONE


def test_repeat_answers_from_cache_later(bed):
    # The second and third lookups are answered from libunbound's cache,
    # inside ub_resolve_event: the probe fails if a callback runs inside the
    # starting call.
    runs = results(probe(bed, "addr", "v4only.a.example", 1, "--repeat=3").stdout)
    assert runs == [([["192.0.2.4", "1"]], 1, DNS_OK)] * 3


def test_cancel(bed):
    r = probe(bed, "addr", "one.a.example", 5269, "--cancel")
    assert "cancelled callbacks run: 0" in r.stdout
    runs = results(r.stdout)
    assert len(runs) == 1 and runs[0][1:] == (1, DNS_OK) and len(runs[0][0]) == 5


def test_free_with_lookup_outstanding(bed):
    r = probe(bed, "srv", "_xmpp-server._tcp.a.example", "--free-pending")
    assert "freed with a lookup outstanding" in r.stdout
    assert "secure=" not in r.stdout


def test_dead_server_is_error(bed):
    # Nothing listens there: libunbound retries, then gives up with
    # SERVFAIL (after about 17 s with unbound 1.17).
    r = probe(bed, "addr", "one.a.example", 1, "--deadline=60000", server="127.0.0.1@9",
              check=False, timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert results(r.stdout) == [([], 0, DNS_ERROR)]


def test_bad_configuration(bed, tmp_path):
    bad = tmp_path / "bad.anchor"
    bad.write_text("this is not a DS record\n")
    r = probe(bed, "addr", "one.a.example", 1, anchor=str(bad), check=False)
    assert r.returncode == 1 and "trust anchor" in r.stderr
    r = probe(bed, "addr", "one.a.example", 1, anchor=str(tmp_path / "missing"), check=False)
    assert r.returncode == 1 and "No such file" in r.stderr
    r = probe(bed, "addr", "one.a.example", 1, server="not-an-address", check=False)
    assert r.returncode == 1 and "not-an-address" in r.stderr


def _is_asan(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_valgrind_probe(bed):
    if _is_asan(PROBE):
        pytest.skip("sanitizer build")
    for args in (["srv", "_xmpp-server._tcp.a.example", "--repeat=2"],
                 ["addr", "big.a.example", "5269"],
                 ["addr", "one.a.example", "5269", "--cancel"],
                 ["tlsa", "one.a.example", "5269", "--free-pending"]):
        r = subprocess.run(["valgrind", "--quiet", "--leak-check=full", "--error-exitcode=9",
                            "--errors-for-leak-kinds=definite,indirect",
                            PROBE, bed.server, bed.trust_anchor, *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout, r.stderr[-5000:])
