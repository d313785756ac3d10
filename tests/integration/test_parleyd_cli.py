"""parleyd's command line: --version, --check, --compliance, bad input."""
import os
import subprocess

from conftest import PARLEYD, ROOT, Server


def run(*args):
    return subprocess.run([PARLEYD, *args], capture_output=True, text=True, timeout=30)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("parleyd ")


def test_compliance_doc_is_current():
    r = run("--compliance")
    assert r.returncode == 0
    with open(os.path.join(ROOT, "docs", "COMPLIANCE.md")) as f:
        assert f.read() == r.stdout, "regenerate: build/parleyd --compliance > docs/COMPLIANCE.md"


def test_check_good_and_bad(tmp_path):
    srv = Server(str(tmp_path))
    r = run("--config", srv.conf, "--check")
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    # a key that does not match the certificate
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run([os.path.join(os.path.dirname(PARLEYD), "tools", "parleyctl"), "cert",
                    "generate", "localhost", "--dir", str(other)], check=True, capture_output=True)
    os.replace(other / "localhost.key", tmp_path / "localhost.key")
    r = run("--config", srv.conf, "--check")
    assert r.returncode == 1 and "mismatch" in r.stderr
    # a config error names file and line, one line
    with open(srv.conf, "a") as f:
        f.write("no_such_option: 1\n")
    r = run("--config", srv.conf, "--check")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "parley.conf:" in r.stderr and "no_such_option" in r.stderr


def test_bad_arguments():
    assert run("--nonsense").returncode == 2
    assert run("--config", "/nonexistent/parley.conf").returncode == 1


def test_certificate_generated_on_first_start(tmp_path):
    srv = Server(str(tmp_path))
    os.unlink(srv.cert)
    os.unlink(srv.key)
    srv.start()
    try:
        assert os.path.exists(srv.cert) and os.path.exists(srv.key)
        assert oct(os.stat(srv.key).st_mode & 0o777) == "0o600"
        assert "generated a self-signed certificate" in srv.log()
    finally:
        assert srv.stop() == 0
