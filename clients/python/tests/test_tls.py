"""The Python client through a real nginx terminating TLS (README.md's
"TLS in front: nginx" block, read from the file) with certificates from a
CA made here with the openssl command line, as tests/tls/ does for the
Rust client: it connects with ``cafile=`` / ``--ca-file`` or through
``SSL_CERT_FILE``, refuses without the CA saying why (never as
"unreachable", never retried), refuses a certificate for another name and
an expired one, and a session that meets a refused certificate is lost at
once. Needs nginx and openssl: skipped without them, a failure under CI
(``CI`` or ``KEYSEAT_REQUIRE_NGINX`` set)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from conftest import REPO, Server, clean_env
from keyseat_client import CertificateNotTrusted, Client, ConfigError, LostReason
from test_cli import Proc

UNKNOWN_ISSUER = (
    "the server's certificate is not trusted: unknown issuer; "
    "pass --ca-file or add the CA to the system store"
)

REQ_CONF = """[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = keyseat test CA
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

CA_CONF = """[ca]
default_ca = d
[d]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
"""


def _program(name: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if os.path.isfile(f)), None)
    if found is None:
        why = f"{name} is not installed (Debian: apt-get install {name})"
        if os.environ.get("CI") or os.environ.get("KEYSEAT_REQUIRE_NGINX"):
            pytest.fail(f"{why}, and CI must not pass by testing nothing")
        pytest.skip(why)
    return found


def _make_pki(openssl: str, d: Path) -> Dict[str, Tuple[Path, Path]]:
    """A CA (d/ca.pem) and server certificates: good (127.0.0.1), wrong
    (wrong.example only) and expired (1 January 2020, by `openssl ca`)."""

    def run(*args: str) -> None:
        out = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True)
        assert out.returncode == 0, f"openssl {' '.join(args)}: {out.stderr}"

    (d / "req.cnf").write_text(REQ_CONF)
    (d / "ca.cnf").write_text(CA_CONF)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    run("req", "-x509", "-config", "req.cnf", "-nodes", "-days", "3", *ec,
        "-keyout", "ca.key", "-out", "ca.pem")
    leaves = {}
    for name, names in [
        ("good", "IP:127.0.0.1,DNS:localhost"),
        ("wrong", "DNS:wrong.example"),
        ("expired", "IP:127.0.0.1,DNS:localhost"),
    ]:
        (d / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
            f"authorityKeyIdentifier=keyid\nsubjectAltName={names}\n"
        )
        run("req", "-new", "-config", "req.cnf", "-nodes", "-subj", f"/CN={name}", *ec,
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        if name == "expired":
            run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", "expired.csr", "-startdate", "20200101000000Z", "-enddate",
                "20200102000000Z", "-extfile", "expired.ext", "-out", "expired.pem")
        else:
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")
        leaves[name] = (d / f"{name}.pem", d / f"{name}.key")
    return leaves


def _readme_block() -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index("tests/tls/ runs nginx with exactly"):]
    start = after.index("```nginx\n") + len("```nginx\n")
    return after[start : after.index("\n```", start)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Front:
    """keyseat behind nginx: one TLS port per certificate."""

    def __init__(self) -> None:
        nginx = _program("nginx", "/usr/sbin/nginx")
        openssl = _program("openssl")
        # Not under pytest's 0700 tmp_path: nginx's workers (nobody, as
        # root) must reach their temp paths.
        self.dir = Path(tempfile.mkdtemp(prefix="keyseat-py-tls-"))
        os.chmod(self.dir, 0o755)
        self.leaves = _make_pki(openssl, self.dir)
        self.ca = self.dir / "ca.pem"
        (self.dir / "keyseat").mkdir()
        self.server = Server(self.dir / "keyseat", interval=1, timeout=10).start()
        self.ports = {name: _free_port() for name in self.leaves}
        self.conf = self.dir / "nginx.conf"
        self.write_conf(self.leaves)
        self.nginx = subprocess.Popen(
            [nginx, "-e", str(self.dir / "error.log"), "-c", str(self.conf),
             "-p", str(self.dir), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 20
        for port in self.ports.values():
            while True:
                assert self.nginx.poll() is None, (self.dir / "error.log").read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nginx never listened on {port}"
                    time.sleep(0.02)

    def write_conf(self, leaves: Dict[str, Tuple[Path, Path]]) -> None:
        block = _readme_block()
        servers: List[str] = []
        for name, port in self.ports.items():
            cert, key = leaves[name]
            swaps = [
                ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                ("/etc/ssl/keyseat/fullchain.pem;", f"{cert};"),
                ("/etc/ssl/keyseat/privkey.pem;", f"{key};"),
                ("proxy_pass http://127.0.0.1:8080;",
                 f"proxy_pass http://127.0.0.1:{self.server.port};"),
            ]
            b = block
            for old, new in swaps:
                assert b.count(old) == 1, f"README.md's nginx block lost `{old}`:\n{block}"
                b = b.replace(old, new)
            servers.append(b)
        d = self.dir
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
            "events { worker_connections 64; }\n"
            f"http {{\n access_log off;\n client_body_temp_path {d}/body;\n"
            f" proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n"
            f" uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n"
            + "\n".join(servers) + "\n}\n"
        )

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        self.nginx.send_signal(signal.SIGTERM)
        try:
            self.nginx.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.nginx.kill()
            self.nginx.wait()
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def front() -> Iterator[Front]:
    f = Front()
    yield f
    f.stop()


def _env() -> Dict[str, str]:
    """The environment with no SSL_CERT_* of the caller's."""
    return {k: v for k, v in clean_env().items() if not k.startswith("SSL_CERT_")}


def test_a_private_ca_is_trusted_with_the_ca_option(front: Front) -> None:
    key = front.server.key(label="tls")
    session = Client(front.url("good"), key, cafile=str(front.ca)).start()
    assert session.end()
    began = time.monotonic()
    with pytest.raises(CertificateNotTrusted) as refused:
        Client(front.url("good"), key, start_attempts=10).start()
    assert refused.value.problem == "unknown_issuer"
    assert str(refused.value) == UNKNOWN_ISSUER
    assert not refused.value.transient
    # Ten tries with backoff would take seconds: one handshake was made.
    assert time.monotonic() - began < 2


@pytest.mark.parametrize(
    "name,problem,said",
    [
        ("wrong", "wrong_name", "it is for another name"),
        ("expired", "expired", "it has expired"),
    ],
)
def test_a_certificate_for_another_name_is_named(
    front: Front, name: str, problem: str, said: str
) -> None:
    key = front.server.key(label="tls")
    with pytest.raises(CertificateNotTrusted) as refused:
        Client(front.url(name), key, cafile=str(front.ca), start_attempts=10).start()
    assert refused.value.problem == problem
    assert str(refused.value).startswith(f"the server's certificate is not trusted: {said}")


def test_a_bad_cafile_is_a_config_error(key: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a certificate\n")
    for path, said in [(tmp_path / "missing.pem", "cannot be read"), (notes, "holds no certificate")]:
        with pytest.raises(ConfigError) as bad:
            Client("https://127.0.0.1:9", key, cafile=str(path))
        assert str(bad.value).startswith(f"the CA file {path} {said}"), bad.value


def test_cli_ca_file_ssl_cert_file_and_refusals(front: Front) -> None:
    key = front.server.key(label="tls")
    ca = str(front.ca)
    with_ca = Proc(front.url("good"), key, "py tls", ["--ca-file", ca], _env())
    with_ca.wait_line("started session")
    with_ca.p.send_signal(signal.SIGTERM)
    assert with_ca.wait_exit() == 0, with_ca.text()
    assert with_ca.out[-1] == "ended by user"

    env = _env()
    env["SSL_CERT_FILE"] = ca
    by_env = Proc(front.url("good"), key, "py tls env", [], env)
    by_env.wait_line("started session")
    by_env.p.send_signal(signal.SIGTERM)
    assert by_env.wait_exit() == 0, by_env.text()

    without = Proc(front.url("good"), key, "py tls none", [], _env())
    assert without.wait_exit() == 11, without.text()
    assert without.err == f"keyseat: cannot start a session: {UNKNOWN_ISSUER}\n"

    expired = Proc(front.url("expired"), key, "py tls expired", ["--ca-file", ca], _env())
    assert expired.wait_exit() == 11, expired.text()
    assert "the server's certificate is not trusted: it has expired" in expired.err


def test_cli_bad_ca_file_is_one_line_and_exit_2(server, key, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a certificate\n")
    for path, said in [(tmp_path / "missing.pem", "cannot be read"), (notes, "holds no certificate")]:
        p = Proc(server.url, key, None, ["--ca-file", str(path)])
        assert p.wait_exit() == 2, p.text()
        assert p.err.startswith(f"keyseat: --ca-file: the CA file {path} {said}"), p.err
        assert len(p.err.splitlines()) == 1, p.err
        assert p.out == []


def test_a_certificate_refused_mid_session_loses_it_at_once(front: Front) -> None:
    key = front.server.key(label="tls")
    session = Client(
        front.url("good"), key, cafile=str(front.ca), waiting_heartbeats=False
    ).start()
    try:
        leaves = dict(front.leaves)
        leaves["good"] = front.leaves["expired"]
        front.write_conf(leaves)
        front.nginx.send_signal(signal.SIGHUP)
        began = time.monotonic()
        assert session.wait_lost(9) == LostReason.CERTIFICATE
        # The lease is 10 s: lost at the first refused handshake.
        assert time.monotonic() - began < 6
        assert str(session.lost).startswith("the server's certificate is not trusted: it has expired")
    finally:
        front.write_conf(front.leaves)
        front.nginx.send_signal(signal.SIGHUP)
        session.end(1.0)
