"""Slow clients behind a reverse proxy: the reverse-proxy recipe, docs/reverse-proxy/nginx.conf, run as shipped.

nginx (Debian's package) is started in front of a real `c2seg serve` (with the option the recipe
names), on loopback ports, with a throwaway self-signed certificate. Only the listen addresses,
the certificate paths, the upstream port and the log path are replaced, each checked to occur
exactly where the recipe has it. Through it: the board and an upload over https (with the
participant CLI), plain http redirected (and the CLI saying so), an oversized upload refused
before its body, no query string in either access log, the client's X-Forwarded-For replaced,
and an honest client served while five addresses hold 60 dribbling connections each.

Without nginx (or openssl) the test skips, unless C2SEG_REQUIRE_PROXY=1 (CI installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import VARIANT, LiveServer, Variants, auth, free_port, make_target, noisy_prediction  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "reverse-proxy" / "nginx.conf"
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 7)]


def _missing() -> str | None:
    for tool in ("nginx", "openssl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("C2SEG_REQUIRE_PROXY") == "1":
            pytest.fail(f"{why} (C2SEG_REQUIRE_PROXY=1)")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("proxy")
    target = make_target(tmp, shape=(96, 64))
    server = LiveServer(tmp / "srv", [target.path], options=["--max-connections-per-client", "0", "--log-level", "info"],
                        env={"C2SEG_SPLIT_BLOCK": "16"})
    (tmp / "srv").mkdir()
    server.start()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem")], check=True, capture_output=True, timeout=60)
    http_port, https_port = free_port(), free_port()
    recipe = RECIPE.read_text()
    for old, new, count in (
            ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
            ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;", 1),
            ("/etc/letsencrypt/live/board.example.org/fullchain.pem", str(tmp / "cert.pem"), 1),
            ("/etc/letsencrypt/live/board.example.org/privkey.pem", str(tmp / "key.pem"), 1),
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{server.port};", 1),
            ("/var/log/nginx/c2seg.access.log", str(tmp / "access.log"), 2)):
        assert recipe.count(old) == count, old  # the recipe still has the shape this test assumes
        recipe = recipe.replace(old, new)
    (tmp / "c2seg.conf").write_text(recipe)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the test's private folders
    (tmp / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n"
        "events { worker_connections 2048; }\n"
        f"http {{\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
        f"  fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n"
        f"  access_log off;\n  include {tmp}/c2seg.conf;\n}}\n")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    https = f"https://127.0.0.1:{https_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(https + "/healthz", verify=ssl.create_default_context(cafile=str(tmp / "cert.pem")), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            time.sleep(0.2)
        yield {"server": server, "target": target, "https": https, "http": f"http://127.0.0.1:{http_port}",
               "cert": str(tmp / "cert.pem"), "https_port": https_port, "tmp": tmp}
    finally:
        proc.terminate()
        proc.wait(20)
        server.stop()


def trust(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=proxy["cert"])


def run_cli(capsys, monkeypatch, cert, *args) -> tuple[int, str, str]:
    from c2seg_kit.cli import main

    monkeypatch.setenv("SSL_CERT_FILE", cert)  # trust the test's certificate (httpx reads it)
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_the_board_and_an_upload_through_nginx(proxy, capsys, monkeypatch, tmp_path):
    server, target = proxy["server"], proxy["target"]
    token = server.add_team("via-proxy")
    pred = write_submission(tmp_path / "p.h5", noisy_prediction(target.label, 1), "AB")
    code, out, err = run_cli(capsys, monkeypatch, proxy["cert"], "submit", str(pred), "--server", proxy["https"],
                             "--token", token)
    assert code == 0 and "scored; public split" in out, err
    with httpx.Client(base_url=proxy["https"], verify=trust(proxy), timeout=30) as c:
        board = c.get("/api/v1/leaderboard", params={"track": "AB"}).json()
        assert [e["team"] for e in board["entries"]] == ["via-proxy"]
        page = c.get("/")
        assert page.status_code == 200 and "content-security-policy" in page.headers
    r = httpx.get(proxy["http"] + "/healthz")
    assert r.status_code == 301 and r.headers["location"] == "https://127.0.0.1/healthz"
    code, out, err = run_cli(capsys, monkeypatch, proxy["cert"], "leaderboard", "--server", proxy["http"],
                             "--track", "AB")
    assert code == 1 and err == (f"error: the server at {proxy['http']} redirects to https: use --server "
                                 "https://127.0.0.1 (or C2SEG_SERVER=https://127.0.0.1)\n")


def test_the_participants_site_through_nginx_sets_a_secure_cookie_and_takes_its_forms(proxy):
    token = proxy["server"].add_team("site-via-proxy")
    origin = {"Origin": proxy["https"]}  # what a browser sends with a form post
    with httpx.Client(base_url=proxy["https"], verify=trust(proxy), timeout=30, follow_redirects=False) as c:
        page = c.get("/team/sign-in")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = c.post("/team/sign-in", data={"token": token, "csrf": csrf}, headers=origin)
        assert r.status_code == 303, r.text
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("c2seg_session="))
        assert "Secure" in cookie and "HttpOnly" in cookie
        csrf = c.get("/team").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = c.post("/team/picks/AB", data={"csrf": csrf}, headers={**origin, "Accept": "application/json"})
        assert r.status_code == 200 and r.json()["ok"] is True


def tls_socket(proxy, source: str = "127.0.0.1") -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=proxy["cert"])
    raw = socket.create_connection(("127.0.0.1", proxy["https_port"]), timeout=10, source_address=(source, 0))
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_oversized_and_unauthenticated_uploads_are_refused_before_their_body(proxy):
    from live_server import post_head, read_response

    token = proxy["server"].add_team("big")
    for who, length, status_wanted in ((token, 300 * 2**20, 413), ("c2s_wrong", 200 * 2**20, 401)):
        with tls_socket(proxy) as s:
            s.sendall(post_head(who, length))  # the head only: none of the body is ever sent
            status, data = read_response(s)
        assert status == status_wanted, data[:300]


def test_no_query_string_in_either_log_and_the_forwarded_address_is_nginxs(proxy):
    with httpx.Client(base_url=proxy["https"], verify=trust(proxy)) as c:
        r = c.get("/api/v1/me?token=c2s_QUERYSECRET", headers={"X-Forwarded-For": "6.6.6.6"})
        assert r.status_code == 401
    time.sleep(0.5)  # nginx writes its log line after the response
    access = (proxy["tmp"] / "access.log").read_text()
    assert '"GET /api/v1/me HTTP/1.1" 401' in access
    log = proxy["server"].log()
    assert "GET /api/v1/me?[redacted] HTTP/1.1" in log
    assert "QUERYSECRET" not in access + log and "6.6.6.6" not in log


def test_an_honest_client_is_served_while_five_addresses_dribble(proxy, tmp_path):
    server, target = proxy["server"], proxy["target"]
    token = server.add_team("honest")
    copies = Variants(write_submission(tmp_path / "p.h5", noisy_prediction(target.label, 2), "AB",
                                       team=VARIANT).read_bytes())
    slow = []
    try:
        for source in ATTACKERS:
            for _ in range(60):
                s = socket.create_connection(("127.0.0.1", proxy["https_port"]), timeout=5, source_address=(source, 0))
                s.sendall(b"\x16\x03\x01")  # the start of a TLS hello, never finished
                slow.append(s)
        with httpx.Client(base_url=proxy["https"], verify=trust(proxy), timeout=30) as c:
            for _ in range(3):
                for s in slow:  # keep dribbling
                    try:
                        s.sendall(b"\x00")
                    except OSError:
                        pass
                assert c.get("/healthz").status_code == 200
                time.sleep(0.5)
            r = c.post("/api/v1/submissions", headers=auth(token), files={"file": ("p.h5", copies.next())})
            assert r.status_code == 201, r.text
    finally:
        for s in slow:
            s.close()
