"""TLS configuration (issue #5): testssl.sh grades c2s STARTTLS and direct TLS,
and OCSP stapling is checked against a local responder.

testssl.sh runs its full default set of checks (protocols, cipher categories,
forward secrecy, server preference, server defaults, every vulnerability check,
each cipher, client simulations) against both ports at once, offline: no DNS
(--nodns none, --ip 127.0.0.1), no fetching of CRLs or OCSP (no --phone-out).
Any finding of severity MEDIUM or worse fails, except the exclusions below.
"""
import json
import os
import shutil
import signal
import ssl
import subprocess
import time

from conftest import DOMAIN, STREAM_HEADER, free_port, raw_connect, recv_all

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")  # Debian names it testssl
FAILING = {"MEDIUM", "HIGH", "CRITICAL"}
# testssl's own trouble (a check that could not run) fails too, rather than
# letting a half-done scan pass.
SCAN_TROUBLE = {"WARN", "FATAL"}

# Findings that are about the test certificate, not the server's TLS setup.
# Each is excluded only because the fixture's certificate is the self-signed
# one `parleyctl cert generate` makes; none of them can be fixed in tls.c.
EXCLUDED = {
    # "Neither CRL nor OCSP URI provided" (HIGH). A self-signed certificate
    # has no issuer that could revoke it, so it names no CRL or OCSP
    # responder. test_ocsp_stapling below covers a CA-issued certificate with
    # a responder, where this finding goes away and the staple is checked.
    "cert_revocation",
}
# Not excluded, because the test avoids them honestly: the certificate chain
# (passed to testssl with --add-ca, so it is verified against the certificate
# itself) and the host name (the scan targets "localhost", the certificate's
# name, so SNI is sent and the SAN matches).


def scan(tmp_path, name, port, cafile, starttls):
    """Starts a scan; wait on it with results()."""
    jsonfile = os.path.join(tmp_path, name + ".json")
    txt = os.path.join(tmp_path, name + ".txt")
    cmd = [TESTSSL, "--quiet", "--warnings", "off", "--color", "0", "--sneaky",
           "--nodns", "none", "--ip", "127.0.0.1", "--add-ca", cafile,
           "--connect-timeout", "10", "--openssl-timeout", "10",
           "--jsonfile", jsonfile]
    if starttls:
        cmd += ["--starttls", "xmpp", "--xmpphost", DOMAIN]
    cmd.append(f"{DOMAIN}:{port}")
    with open(txt, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    return name, proc, jsonfile, txt


def results(name, proc, jsonfile, txt):
    """(problems, testssl's own trouble) of a finished scan, as lines."""
    try:
        rc = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"testssl ({name}) took over 300 s")
    with open(txt, errors="replace") as f:
        output = f.read()
    # 242..255 are testssl's own failures (command line, connect, openssl...).
    assert rc < 242, f"testssl ({name}) failed with {rc}:\n{output[-3000:]}"
    with open(jsonfile) as f:
        result = json.load(f)
    ids = {r["id"]: r for r in result}
    # A scan that silently did nothing would find nothing: make sure the
    # sections ran.
    for must in ("TLS1_2", "TLS1_3", "PFS", "cert_chain_of_trust", "heartbleed",
                 "secure_client_renego", "CRIME_TLS", "ROBOT", "LUCKY13", "TLS_extensions"):
        assert must in ids, f"testssl ({name}) did not report {must}:\n{output[-3000:]}"
    bad, trouble = [], []
    for r in result:
        line = f"{name}: {r['severity']} {r['id']}: {r['finding']}"
        if r["id"] in EXCLUDED:
            continue
        if r["severity"] in FAILING:
            bad.append(line)
        elif r["severity"] in SCAN_TROUBLE:
            trouble.append(line)
    # What the issue asks for, checked directly as well: testssl 3.0 rates
    # an offered CBC suite LOW only, and a later release may rate others
    # lower than we want.
    expect = [(p, "not offered") for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")]
    expect += [("TLS1_2", "offered"), ("TLS1_3", "offered")]
    expect += [(c, "not offered") for c in (
        "cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
        "cipherlist_3DES_IDEA", "cipherlist_AVERAGE")]  # AVERAGE: CBC suites
    expect += [("cipher_order", "server"), ("CRIME_TLS", "not vulnerable"),
               ("secure_client_renego", "not vulnerable")]
    for id_, want in expect:
        r = ids.get(id_, {"severity": "", "finding": "(not reported)"})
        if not r["finding"].startswith(want):
            (trouble if r["severity"] in SCAN_TROUBLE else bad).append(
                f"{name}: {id_}: {r['finding']!r}, expected {want!r}")
    if ids["PFS"]["severity"] != "OK":
        bad.append(f"{name}: PFS: {ids['PFS']['finding']}")
    # No RFC 5077 stateless tickets (tls.c says why): the server answers a
    # TLS 1.2 hello that offers the extension without it.
    if "#35" in ids["TLS_extensions"]["finding"]:
        bad.append(f"{name}: stateless session tickets: {ids['TLS_extensions']['finding']}")
    return bad, trouble


def test_testssl_grade(server, tmp_path):
    assert TESTSSL, "testssl.sh is not installed: scripts/deps.sh test"
    # testssl.sh opens hundreds of connections from one address.
    server.configure("limits.connections_per_second_per_ip: 0\nlimits.connections_per_ip: 0\n")
    server.start()
    tmp = str(tmp_path)
    t0 = time.monotonic()
    ports = {"starttls": (server.c2s, True), "direct": (server.c2s_tls, False)}
    scans = [scan(tmp, name, port, server.cert, starttls)
             for name, (port, starttls) in ports.items()]  # both ports at once
    problems = []
    for sc in scans:
        bad, trouble = results(*sc)
        for attempt in (1, 2):
            if not trouble or bad:
                break
            # Some of testssl's probes race (its resumption check reads the
            # TLS 1.3 ticket from an s_client fed /dev/null) and fail on a
            # loaded machine. Scan that port again, twice at most; a finding
            # about the server is never retried.
            port, starttls = ports[sc[0]]
            bad, trouble = results(*scan(tmp, f"{sc[0]}-retry{attempt}", port, server.cert,
                                         starttls))
        problems += bad + trouble
    print(f"testssl on both ports: {time.monotonic() - t0:.0f} s")
    assert not problems, "testssl: MEDIUM or worse, or not as expected:\n" + "\n".join(problems)


def test_resumption_from_server_cache(server):
    """With stateless tickets off, TLS 1.2 resumes by session ID and TLS 1.3
    by a stateful ticket, both from the server's cache. The first stream is
    closed cleanly so that the server sends close_notify: OpenSSL drops the
    session of a connection that ends without it."""
    server.start()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.create_default_context(cafile=server.cert)
        ctx.minimum_version = ctx.maximum_version = version
        session = None
        for attempt in (0, 1):
            s = raw_connect(server.c2s_tls)
            t = ctx.wrap_socket(s, server_hostname=DOMAIN, session=session)
            t.sendall((STREAM_HEADER % DOMAIN).encode() + b"</stream:stream>")
            assert b"</stream:stream>" in recv_all(t)
            assert t.session_reused == bool(attempt), (version, attempt)
            if version == ssl.TLSVersion.TLSv1_2:
                # by session ID: the server issued no RFC 5077 ticket
                assert not t.session.has_ticket
            session = t.session
            t.close()


# --- OCSP stapling -------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_leaf(d, ocsp_port):
    """A test CA and a leaf for DOMAIN whose AIA names a local OCSP responder."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/CN=Parley test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={DOMAIN}", cwd=d)
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{DOMAIN}\n"
                f"authorityInfoAccess=OCSP;URI:http://127.0.0.1:{ocsp_port}\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", "0x1001", "-days", "30", "-extfile", "leaf.ext", "-out", "leaf.crt",
            cwd=d)


def write_index(d, revoked):
    """The responder's database (openssl ca's index.txt format)."""
    end = subprocess.run(["openssl", "x509", "-in", "leaf.crt", "-noout", "-enddate"], cwd=d,
                         check=True, capture_output=True, text=True).stdout.split("=", 1)[1]
    end = time.strftime("%y%m%d%H%M%SZ", time.strptime(end.strip(), "%b %d %H:%M:%S %Y GMT"))
    now = time.strftime("%y%m%d%H%M%SZ", time.gmtime())
    line = f"R\t{end}\t{now}\t1001\tunknown\t/CN={DOMAIN}\n" if revoked else \
        f"V\t{end}\t\t1001\tunknown\t/CN={DOMAIN}\n"
    with open(os.path.join(d, "index.txt"), "w") as f:
        f.write(line)


def fetch_ocsp(d, port, out):
    """Runs a one-shot `openssl ocsp` responder (it listens on every address,
    for one request) and fetches the leaf's status into out, as the cron job
    tls.c describes would (`openssl ocsp -respout`)."""
    responder = subprocess.Popen(
        ["openssl", "ocsp", "-index", "index.txt", "-port", str(port), "-rsigner", "ca.crt",
         "-rkey", "ca.key", "-CA", "ca.crt", "-ndays", "1", "-nrequest", "1"],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:  # until the responder listens
            r = subprocess.run(["openssl", "ocsp", "-issuer", "ca.crt", "-cert", "leaf.crt",
                                "-url", f"http://127.0.0.1:{port}", "-CAfile", "ca.crt",
                                "-respout", out], cwd=d, capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout
            assert time.time() < deadline, "cannot fetch the OCSP response: " + r.stderr
            time.sleep(0.1)
    finally:
        responder.kill()
        responder.wait()


def stapled(port, cafile, starttls):
    """What `openssl s_client -status` sees stapled."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", DOMAIN,
           "-status", "-CAfile", cafile, "-verify_return_error"]
    if starttls:
        cmd += ["-starttls", "xmpp", "-xmpphost", DOMAIN, "-tls1_2"]
    else:
        cmd += ["-tls1_3"]
    r = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
    if "OCSP response: no response sent" in r.stdout:
        return None
    assert "OCSP Response Status: successful" in r.stdout, r.stdout
    for status in ("good", "revoked", "unknown"):
        if f"Cert Status: {status}" in r.stdout:
            return status
    raise AssertionError(r.stdout)


def wait_log(server, needle, count=1, timeout=10):
    deadline = time.time() + timeout
    while server.log().count(needle) < count:
        assert time.time() < deadline, f"{needle!r} not logged:\n{server.log()[-3000:]}"
        time.sleep(0.05)


RELOADED = "configuration and certificates reloaded"


def reload(server, n):
    """SIGHUP, then wait until the n-th reload has swapped the contexts."""
    server.signal(signal.SIGHUP)
    wait_log(server, RELOADED, count=n)


def test_ocsp_stapling(server, tmp_path):
    """The certificate names a responder: "<certificate>.ocsp" is stapled
    only when it is a valid response for it, on both ports, and is read
    again on SIGHUP."""
    d = str(tmp_path)
    ocsp_port = free_port()
    make_ca_and_leaf(d, ocsp_port)
    with open(server.cert, "w") as f:  # leaf first, then its issuer
        f.write(open(os.path.join(d, "leaf.crt")).read() + open(os.path.join(d, "ca.crt")).read())
    shutil.copy(os.path.join(d, "leaf.key"), server.key)
    ca = os.path.join(d, "ca.crt")
    staple = server.cert + ".ocsp"

    # No file: served, nothing stapled, and the log says why.
    server.start()
    wait_log(server, "names an OCSP responder")
    assert stapled(server.c2s, ca, True) is None
    assert stapled(server.c2s_tls, ca, False) is None

    # A response that is not for this certificate (another leaf of the same
    # CA, same responder) is refused.
    write_index(d, revoked=False)
    other = os.path.join(d, "other")
    os.mkdir(other)
    for f in ("ca.crt", "ca.key", "leaf.ext"):
        shutil.copy(os.path.join(d, f), other)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=other", cwd=other)
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", "0x2002", "-days", "30", "-extfile", "leaf.ext", "-out", "leaf.crt",
            cwd=other)
    with open(os.path.join(other, "index.txt"), "w") as f:
        f.write(open(os.path.join(d, "index.txt")).read().replace("\t1001\t", "\t2002\t"))
    fetch_ocsp(other, ocsp_port, staple)
    reload(server, 1)
    assert "it is not about this certificate" in server.log()
    assert stapled(server.c2s_tls, ca, False) is None

    # The real response, fetched from the responder: stapled after SIGHUP,
    # on STARTTLS (TLS 1.2) and direct TLS (TLS 1.3).
    assert "leaf.crt: good" in fetch_ocsp(d, ocsp_port, staple)
    reload(server, 2)
    assert "stapling the OCSP response" in server.log()
    assert stapled(server.c2s, ca, True) == "good"
    assert stapled(server.c2s_tls, ca, False) == "good"

    # The CA revokes it; the next refresh and reload staple that.
    write_index(d, revoked=True)
    assert "leaf.crt: revoked" in fetch_ocsp(d, ocsp_port, staple)
    reload(server, 3)
    assert "says the certificate is REVOKED" in server.log()
    assert stapled(server.c2s, ca, True) == "revoked"
    assert stapled(server.c2s_tls, ca, False) == "revoked"
