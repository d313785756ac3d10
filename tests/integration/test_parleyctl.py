"""parleyctl as scripts use it: init, check config, accounts, certificates.

No server is started: parleyctl works on the files and the store directly.
The binary is taken from $PARLEY_BUILD/tools (default /work/main/build).
Run with: /usr/bin/python3 -m pytest tests/integration/test_parleyctl.py
"""
import os
import pty
import re
import select
import ssl
import stat
import subprocess
import time

import pytest

BUILD = os.environ.get("PARLEY_BUILD", "/work/main/build")
PARLEYCTL = os.path.join(BUILD, "tools", "parleyctl")
DOMAIN = "example.org"
PORTS = {"c2s": 25222, "c2s-tls": 25223, "s2s": 25269, "http": 25280}


def run(*args, input=None, cwd=None, env_extra=None, config=None):
    """Runs parleyctl; returns the CompletedProcess (text mode)."""
    env = {k: v for k, v in os.environ.items() if k != "PARLEY_CONFIG"}
    env.update(env_extra or {})
    argv = [PARLEYCTL]
    if config:
        argv += ["--config", str(config)]
    argv += [str(a) for a in args]
    return subprocess.run(argv, input=input, capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=60)


def one_line_error(p):
    """A failure is exactly one non-empty line on stderr and a non-zero exit."""
    assert p.returncode != 0, p
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), p.stderr
    return lines[0]


@pytest.fixture(scope="session", autouse=True)
def binary():
    assert os.access(PARLEYCTL, os.X_OK), \
        f"{PARLEYCTL} not found: build it, or set PARLEY_BUILD to the build dir"


@pytest.fixture
def srv_init(tmp_path):
    """A fresh server directory made by `parleyctl init`, non-default ports;
    returns it with what init printed."""
    d = tmp_path / "srv"
    p = run("init", DOMAIN, "--dir", d,
            "--c2s-port", PORTS["c2s"], "--c2s-tls-port", PORTS["c2s-tls"],
            "--s2s-port", PORTS["s2s"], "--http-port", PORTS["http"],
            "--interface", "127.0.0.1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return d, p.stdout


@pytest.fixture
def srv(srv_init):
    return srv_init[0]


def users(conf, domain=None):
    p = run("list", *([domain] if domain else []), config=conf)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


# init ------------------------------------------------------------------------

def test_init_creates_a_working_directory(srv_init):
    srv, out = srv_init
    conf = srv / "parley.conf"
    key, crt = srv / f"{DOMAIN}.key", srv / f"{DOMAIN}.crt"
    for f in (conf, key, crt):
        assert f.is_file(), f
    assert (srv / "data").is_dir()
    # The store was created empty by opening it.
    assert any((srv / "data").iterdir())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = conf.read_text()
    for port in PORTS.values():
        assert re.search(rf"^\s*\w+:\s*{port}\s*$", text, re.M), port
    assert "127.0.0.1" in text
    # The next steps name the real config path.
    assert f"parleyd --config {conf}" in out
    assert f"adduser" in out and str(conf) in out


def test_init_refuses_existing_config(srv, tmp_path):
    conf = srv / "parley.conf"
    before = conf.read_bytes()
    crt_before = (srv / f"{DOMAIN}.crt").read_bytes()
    p = run("init", DOMAIN, "--dir", srv, cwd=tmp_path)
    line = one_line_error(p)
    assert "parley.conf" in line
    assert conf.read_bytes() == before
    assert (srv / f"{DOMAIN}.crt").read_bytes() == crt_before


def test_init_needs_dir(tmp_path):
    p = run("init", DOMAIN, cwd=tmp_path)
    one_line_error(p)
    assert not (tmp_path / "parley.conf").exists()


# check config ------------------------------------------------------------------

def test_check_config_passes(srv):
    p = run("check", "config", config=srv / "parley.conf")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("config OK: 1 host"), p.stdout
    assert DOMAIN in p.stdout
    for port in PORTS.values():
        assert str(port) in p.stdout


def test_check_config_from_env_and_cwd(srv, tmp_path):
    p = run("check", "config", env_extra={"PARLEY_CONFIG": str(srv / "parley.conf")},
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = run("check", "config", cwd=srv)
    assert p.returncode == 0, p.stderr
    # --config wins over the environment.
    p = run("check", "config", config=tmp_path / "nope.conf",
            env_extra={"PARLEY_CONFIG": str(srv / "parley.conf")})
    assert p.returncode != 0


def test_check_config_reports_file_and_line(srv):
    conf = srv / "parley.conf"
    lines = conf.read_text().splitlines()
    n = next(i for i, l in enumerate(lines) if re.match(r"^c2s_port:", l))
    lines[n] = "c2s_port: banana"
    conf.write_text("\n".join(lines) + "\n")
    p = run("check", "config", config=conf)
    assert p.returncode == 1
    line = one_line_error(p)
    m = re.search(r"parley\.conf:(\d+):", line)
    assert m, line
    assert int(m.group(1)) == n + 1
    assert "c2s_port" in line
    assert "config OK" not in p.stdout


def test_check_config_rejects_yaml_garbage(srv):
    conf = srv / "parley.conf"
    with conf.open("a") as f:
        f.write("hosts: [unclosed\n")
    p = run("check", "config", config=conf)
    assert p.returncode == 1
    assert re.search(r"parley\.conf:\d+:", one_line_error(p))


def test_check_config_rejects_mismatched_key(srv, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert run("cert", "generate", "other.example", "--dir", other).returncode == 0
    (srv / f"{DOMAIN}.key").write_bytes((other / "other.example.key").read_bytes())
    p = run("check", "config", config=srv / "parley.conf")
    assert p.returncode == 1
    assert "does not match" in p.stderr and DOMAIN in p.stderr
    assert "config OK" not in p.stdout


def test_check_config_rejects_wrong_domain_cert(srv, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert run("cert", "generate", "other.example", "--dir", other).returncode == 0
    for ext in ("key", "crt"):
        (srv / f"{DOMAIN}.{ext}").write_bytes((other / f"other.example.{ext}").read_bytes())
    p = run("check", "config", config=srv / "parley.conf")
    assert p.returncode == 1
    assert "does not cover" in p.stderr


def test_check_config_rejects_missing_cert(srv):
    (srv / f"{DOMAIN}.crt").unlink()
    p = run("check", "config", config=srv / "parley.conf")
    assert p.returncode == 1
    assert f"{DOMAIN}.crt" in p.stderr


# accounts ------------------------------------------------------------------------

def test_account_lifecycle(srv):
    conf = srv / "parley.conf"
    jid = f"alice@{DOMAIN}"
    assert users(conf) == []

    p = run("adduser", jid, input="s3cret\n", config=conf)
    assert p.returncode == 0, p.stderr
    assert users(conf) == [jid]
    assert users(conf, DOMAIN) == [jid]

    # The JID is normalized: this is the same account.
    p = run("adduser", f"Alice@{DOMAIN.upper()}", input="other\n", config=conf)
    assert "user exists" in one_line_error(p)
    p = run("adduser", jid, input="other\n", config=conf)
    assert "user exists" in one_line_error(p)
    assert users(conf) == [jid]

    p = run("passwd", jid, input="n3w\n", config=conf)
    assert p.returncode == 0, p.stderr

    p = run("deluser", jid, config=conf)
    assert p.returncode == 0, p.stderr
    assert users(conf) == []
    p = run("deluser", jid, config=conf)
    assert "no such user" in one_line_error(p)
    p = run("passwd", jid, input="x\n", config=conf)
    assert "no such user" in one_line_error(p)


def test_passwd_changes_the_stored_keys(srv):
    """Fresh salt per derivation: the store must change on passwd, and must
    not on a refused passwd."""
    conf = srv / "parley.conf"
    jid = f"carol@{DOMAIN}"
    assert run("adduser", jid, input="one\n", config=conf).returncode == 0
    db = next(p for p in (srv / "data").iterdir() if p.suffix == ".db")

    def snapshot():
        import sqlite3
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = []
            for (t,) in c.execute("select name from sqlite_master where type='table'"):
                rows += [(t, r) for r in c.execute(f'select * from "{t}"')]
            return sorted(map(repr, rows))
        finally:
            c.close()

    s0 = snapshot()
    assert run("passwd", jid, input="\n", config=conf).returncode != 0
    assert snapshot() == s0
    assert run("passwd", jid, input="two\n", config=conf).returncode == 0
    assert snapshot() != s0


def test_list_sorted_and_per_domain(srv):
    conf = srv / "parley.conf"
    for u in ("zed", "bob", "amy"):
        assert run("adduser", f"{u}@{DOMAIN}", input="pw\n", config=conf).returncode == 0
    assert users(conf) == [f"amy@{DOMAIN}", f"bob@{DOMAIN}", f"zed@{DOMAIN}"]
    p = run("list", "elsewhere.example", config=conf)
    assert "not served" in one_line_error(p)


@pytest.mark.parametrize("pw", ["\n", "", "\r\n"])
def test_empty_password_refused(srv, pw):
    conf = srv / "parley.conf"
    p = run("adduser", f"dave@{DOMAIN}", input=pw, config=conf)
    one_line_error(p)
    assert users(conf) == []


def test_password_line_without_newline_and_crlf(srv):
    conf = srv / "parley.conf"
    assert run("adduser", f"erin@{DOMAIN}", input="nonl", config=conf).returncode == 0
    assert run("passwd", f"erin@{DOMAIN}", input="crlf\r\n", config=conf).returncode == 0


def test_password_with_control_character_refused(srv):
    conf = srv / "parley.conf"
    p = run("adduser", f"fay@{DOMAIN}", input="a\x07b\n", config=conf)
    one_line_error(p)
    assert users(conf) == []


@pytest.mark.parametrize("jid", [
    "no@@jid", "@example.org", "user@", "user@example.org/resource", DOMAIN,
    "sp ace@example.org", "a@b@c",
])
def test_bad_jid_one_line(srv, jid):
    conf = srv / "parley.conf"
    for cmd in ("adduser", "passwd", "deluser"):
        p = run(cmd, jid, input="pw\n", config=conf)
        one_line_error(p)
        assert p.stdout == ""
    assert users(conf) == []


def test_domain_not_served(srv):
    conf = srv / "parley.conf"
    p = run("adduser", "alice@elsewhere.example", input="pw\n", config=conf)
    assert "not served" in one_line_error(p)
    assert users(conf) == []


def test_missing_config_fails(tmp_path):
    p = run("adduser", f"a@{DOMAIN}", input="pw\n", config=tmp_path / "missing.conf")
    assert p.returncode != 0
    assert "missing.conf" in p.stderr


def _read_until(fd, want, deadline):
    buf = b""
    while want not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {want!r}, got {buf!r}"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            buf += chunk
    return buf


def _adduser_on_tty(conf, jid, first, second):
    """Runs adduser with a terminal on stdin; answers the two prompts."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "PARLEY_CONFIG"}
    proc = subprocess.Popen([PARLEYCTL, "--config", str(conf), "adduser", jid],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    os.close(slave)
    deadline = time.monotonic() + 30
    try:
        err = _read_until(proc.stderr.fileno(), b"Password: ", deadline)
        os.write(master, first.encode() + b"\n")
        err += _read_until(proc.stderr.fileno(), b"Again: ", deadline)
        os.write(master, second.encode() + b"\n")
        out, rest = proc.communicate(timeout=30)
        err += rest
        # What the terminal showed: the passwords must not be echoed.
        echoed = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            echoed += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out.decode(), err.decode(), echoed


def test_terminal_prompts_twice_without_echo(srv):
    conf = srv / "parley.conf"
    jid = f"tty@{DOMAIN}"
    rc, out, err, echoed = _adduser_on_tty(conf, jid, "hunter2", "hunter3")
    assert rc == 1
    assert "do not match" in err
    assert b"hunter" not in echoed
    assert users(conf) == []

    rc, out, err, echoed = _adduser_on_tty(conf, jid, "hunter2", "hunter2")
    assert rc == 0, err
    assert b"hunter" not in echoed
    assert users(conf) == [jid]


# cert generate -------------------------------------------------------------------

def _decode_cert(path):
    # The ssl module's own test hook parses a PEM file into a dict.
    return ssl._ssl._test_decode_cert(str(path))


def test_cert_generate_writes_and_refuses_overwrite(tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    p = run("cert", "generate", "chat.example", "--dir", d, "--days", "30")
    assert p.returncode == 0, p.stderr
    key, crt = d / "chat.example.key", d / "chat.example.crt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes()
    info = _decode_cert(crt)
    assert ("DNS", "chat.example") in info["subjectAltName"]
    assert info["subject"] == ((("commonName", "chat.example"),),)
    assert sorted(os.listdir(d)) == ["chat.example.crt", "chat.example.key"]

    before = (key.read_bytes(), crt.read_bytes())
    p = run("cert", "generate", "chat.example", "--dir", d)
    assert "--force" in one_line_error(p)
    assert (key.read_bytes(), crt.read_bytes()) == before
    # Even when only one of the two is there.
    key.unlink()
    p = run("cert", "generate", "chat.example", "--dir", d)
    one_line_error(p)
    assert crt.read_bytes() == before[1]
    assert not key.exists()

    p = run("cert", "generate", "chat.example", "--dir", d, "--force", "--rsa")
    assert p.returncode == 0, p.stderr
    assert key.read_bytes() != before[0]
    assert b"BEGIN PRIVATE KEY" in key.read_bytes()
    assert sorted(os.listdir(d)) == ["chat.example.crt", "chat.example.key"]


def test_cert_generate_defaults_to_cwd_and_normalizes(tmp_path):
    p = run("cert", "generate", "Chat.EXAMPLE", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "chat.example.key").is_file()
    assert (tmp_path / "chat.example.crt").is_file()


@pytest.mark.parametrize("args", [
    ["cert", "generate"],
    ["cert", "generate", "a.example", "--days", "0"],
    ["cert", "generate", "a.example", "--days", "ten"],
    ["cert", "generate", "a.example", "--dir"],
    ["cert", "generate", "not a domain"],
    ["cert", "frobnicate", "a.example"],
    ["cert", "generate", "a.example", "--bogus"],
])
def test_cert_generate_bad_input(tmp_path, args):
    p = run(*args, cwd=tmp_path)
    one_line_error(p)
    assert os.listdir(tmp_path) == []


def test_cert_generate_missing_dir(tmp_path):
    p = run("cert", "generate", "a.example", "--dir", tmp_path / "nope")
    assert "nope" in one_line_error(p)


# usage ---------------------------------------------------------------------------

def test_help_and_version():
    p = run("--help")
    assert p.returncode == 0
    for word in ("adduser", "passwd", "deluser", "list", "cert generate", "init",
                 "check config", "--config", "--version"):
        assert word in p.stdout, word
    p = run("--version")
    assert p.returncode == 0
    assert re.match(r"^parleyctl \d+\.\d+", p.stdout)


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["adduser"], ["check"],
                                  ["check", "everything"], ["list", "a", "b"],
                                  ["--config"]])
def test_usage_errors(args):
    p = run(*args)
    assert p.returncode == 2
    one_line_error(p)


# cert request / cert check -------------------------------------------------------

def _openssl(*args, cwd=None):
    p = subprocess.run(["openssl", *[str(a) for a in args]], capture_output=True,
                       text=True, cwd=cwd, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_cert_request_writes_csr_and_reuses_key(tmp_path):
    p = run("cert", "request", "Chat.Example", "--dir", tmp_path)
    assert p.returncode == 0, p.stderr
    key, csr = tmp_path / "chat.example.key", tmp_path / "chat.example.csr"
    assert sorted(os.listdir(tmp_path)) == ["chat.example.csr", "chat.example.key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "new" in p.stdout and str(csr) in p.stdout
    text = _openssl("req", "-in", csr, "-noout", "-text", "-verify")
    assert "CN = chat.example" in text
    # The names of `cert generate`, as requested extensions.
    for name in ("DNS:chat.example", "XmppAddr::chat.example",
                 "SRVName::_xmpp-client.chat.example", "SRVName::_xmpp-server.chat.example"):
        assert name in text, name
    # Signed with the key that was written.
    assert (_openssl("req", "-in", csr, "-noout", "-pubkey")
            == _openssl("pkey", "-in", key, "-pubout"))

    # Again: the key stays as it is.
    before = key.read_bytes()
    p = run("cert", "request", "chat.example", "--dir", tmp_path, "--rsa")
    assert p.returncode == 0, p.stderr
    assert "existing key" in p.stdout
    assert key.read_bytes() == before
    assert (_openssl("req", "-in", csr, "-noout", "-pubkey")
            == _openssl("pkey", "-in", key, "-pubout"))

    # A key it cannot read is an error, and is left alone.
    key.write_text("garbage\n")
    csr.unlink()
    assert str(key) in one_line_error(run("cert", "request", "chat.example", "--dir", tmp_path))
    assert key.read_text() == "garbage\n" and not csr.exists()


def test_cert_check_request_signed_by_a_ca(tmp_path):
    """request -> a CA signs it -> check: OK for c2s and s2s once the CA is trusted."""
    assert run("cert", "request", DOMAIN, "--dir", tmp_path).returncode == 0
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Parley Test CA",
             "-days", "2", cwd=tmp_path)
    crt = tmp_path / f"{DOMAIN}.crt"
    _openssl("x509", "-req", "-in", f"{DOMAIN}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "30", "-copy_extensions", "copy", "-out", crt,
             cwd=tmp_path)

    trusted = {"SSL_CERT_FILE": str(tmp_path / "ca.pem")}
    p = run("cert", "check", DOMAIN, "--cert", crt, env_extra=trusted)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = dict(l.split(None, 1) if not l.startswith(("c2s verdict", "s2s verdict"))
                 else (l[:11], l[11:].strip()) for l in p.stdout.splitlines())
    assert lines["issuer"] == "CN=Parley Test CA"
    assert lines["trust"] == "chains to the system trust store"
    assert lines["c2s"] == f"covers {DOMAIN}: SRV-ID (_xmpp-client), XmppAddr, DNS-ID"
    assert lines["s2s"] == f"covers {DOMAIN}: SRV-ID (_xmpp-server), XmppAddr, DNS-ID"
    assert lines["c2s verdict"].startswith("OK")
    assert lines["s2s verdict"].startswith("OK")
    assert "XmppAddr:example.org" in lines["names"]

    # The same certificate without its CA in the trust store.
    p = run("cert", "check", DOMAIN, "--cert", crt)
    assert "unable to get local issuer certificate" in one_line_error(p)
    assert "s2s verdict  NOT OK" in p.stdout
    # Nor does it cover another domain, trusted or not.
    p = run("cert", "check", "other.example", "--cert", crt, env_extra=trusted)
    assert "does not name other.example" in one_line_error(p)
    assert "certificate names example.org" in p.stdout


def test_cert_check_configured_host(srv):
    conf = srv / "parley.conf"
    p = run("cert", "check", DOMAIN, config=conf)
    # What init writes is self-signed: fine for a test, not for federation.
    assert "self-signed certificate" in one_line_error(p)
    assert f"key          {srv / DOMAIN}.key matches" in p.stdout
    assert f"c2s          covers {DOMAIN}: SRV-ID (_xmpp-client)" in p.stdout
    assert f"s2s          covers {DOMAIN}: SRV-ID (_xmpp-server)" in p.stdout
    assert "(self-signed)" in p.stdout
    assert "not served here" in one_line_error(run("cert", "check", "other.example",
                                                   config=conf))
    for args in (["cert", "check"], ["cert", "request"],
                 ["cert", "generate", "a.example", "--cert", "x.pem"]):
        p = run(*args, config=conf)
        assert p.returncode == 2, args
        one_line_error(p)
