"""Promise 5: the HTTP edge, over raw sockets against a real `c2seg serve` on loopback.

Oversized and unauthenticated bodies are answered before a byte of them is sent; request heads
are bounded in size and in time; a slowloris client cannot hold the server; CORS is off; the
page sends security headers and escapes team names.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import (  # noqa: E402
    VARIANT,
    Variants,
    auth,
    connect,
    live_server_fixtures,
    noisy_prediction,
    post_head,
    read_response,
    upload,
    wait_for,
)

from c2seg_kit.submission.writers import write_submission  # noqa: E402

CAP = 1 << 20  # max upload bytes for this server
HEAD_TIMEOUT_S = 4
UPLOAD_TIMEOUT_S = 3
PER_CLIENT = 16
ATTACKER = "127.0.0.2"  # still loopback: a second client address on the same machine


target, server, client = live_server_fixtures(
    shape=(300, 200), options=["--limit-concurrency", "48"], client_timeout=30,
    env={"C2SEG_MAX_UPLOAD_BYTES": str(CAP), "C2SEG_UPLOAD_TIMEOUT_S": str(UPLOAD_TIMEOUT_S),
         "C2SEG_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S), "C2SEG_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT)})


@pytest.fixture(scope="module")
def token(server):
    return server.add_team("edge")


@pytest.fixture(scope="module")
def good(tmp_path_factory, target):
    return write_submission(tmp_path_factory.mktemp("p") / "p.h5", noisy_prediction(target.label, 1), "AB",
                            team=VARIANT)


@pytest.fixture(scope="module")
def copies(good):
    """Fresh bytes of the same prediction at each call (the same file again would be a 409)."""
    return Variants(good.read_bytes())


# --- bodies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [10**10, CAP + 70_000])
def test_oversized_body_is_refused_before_it_is_sent(server, token, length):
    with connect(server) as s:
        s.sendall(post_head(token, length))  # the head only: not one byte of the body
        status, data = read_response(s)  # so any answer at all came before the body
    assert status == 413, data[:300]
    assert b"larger than this server accepts (1 MiB)" in data


@pytest.mark.parametrize("who", [None, "c2s_wrong", "REVOKED"])
def test_unauthenticated_body_is_refused_before_it_is_read(server, who):
    token = who
    if who == "REVOKED":
        token = server.add_team("gone")
        server.revoke("gone")
    with connect(server) as s:
        s.sendall(post_head(token, 100 * CAP))  # declares 100 MiB, sends none of it
        status, data = read_response(s)
    assert status == 401, data[:300]
    assert b"www-authenticate: Bearer" in data


def test_chunked_upload_past_the_cap_is_cut_off_while_streaming(server, token):
    """No Content-Length: the cap is counted while streaming; the 413 comes right after it,
    and a client that keeps sending anyway is cut off within the head timeout."""
    import select

    part = b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.h5\"\r\n\r\n"
    block = b"\0" * 65536
    sent, answered_at, cut_off = 0, None, False
    with connect(server) as s:
        s.sendall(post_head(token, None) + b"%x\r\n%s\r\n" % (len(part), part))
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < HEAD_TIMEOUT_S + 5:  # bounded
                if answered_at is None and select.select([s], [], [], 0)[0]:
                    answered_at = sent
                    status, data = read_response(s)
                s.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
                time.sleep(0.002 if answered_at is None else 0.01)  # paced: little waits in buffers
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
    assert answered_at is not None and status == 413, sent
    assert answered_at <= CAP + 2 * 2**20  # the cap, plus what sits in socket buffers
    assert cut_off


def test_an_honest_upload_under_the_cap_is_scored(client, token, good):
    assert good.stat().st_size < CAP
    r = upload(client, token, good)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("content_type,body,reason", [
    ("application/json", b"{}", "multipart/form-data"),
    ("multipart/form-data; boundary=b0undary", b"--b0undary\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b0undary--\r\n", "no field named 'file'"),
    ("multipart/form-data; boundary=b0undary", b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.h5\"\r\n\r\nabc", "ended early"),
    ("multipart/form-data; boundary=b0undary", b"garbage without any boundary", "^the multipart body is malformed$"),
    ("multipart/form-data", b"--x\r\n", "multipart/form-data"),
])
def test_malformed_multipart_gets_a_one_line_400(client, token, content_type, body, reason):
    import re

    r = client.post("/api/v1/submissions", headers={**auth(token), "Content-Type": content_type}, content=body)
    assert r.status_code == 400, r.text
    assert re.search(reason, r.json()["detail"]) and "\n" not in r.json()["detail"]


def test_a_stalled_upload_times_out_and_frees_its_connection(server, client, token):
    part = b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.h5\"\r\n\r\n" + b"\0" * 1000
    with connect(server, timeout=UPLOAD_TIMEOUT_S + 10) as s:
        s.sendall(post_head(token, 500_000) + part)  # then nothing more
        assert client.get("/healthz").status_code == 200  # served meanwhile
        status, data = read_response(s)
    assert status == 408 and b"did not finish within 3 s" in data, data[:300]


# --- heads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 80) for i in range(3000)) + b"\r\n",
    b"GET /" + b"a" * 300_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["one-huge-header", "3000-headers", "huge-target"])
def test_oversized_request_heads_are_refused(server, client, head):
    with connect(server) as s:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, data = read_response(s)
    # uvicorn's parser refuses a head past its 16 KiB buffer with its own 400; a reset may still
    # beat that answer to the client (the head was not read to its end): refused just the same.
    assert (status == 400 and data.endswith(b"\r\n\r\nInvalid HTTP request received.")) or (status, data) == (0, b""), data[:300]
    assert client.get("/healthz").status_code == 200


def test_slowloris_cannot_hold_the_server(server, client, token, copies):
    """An attacker dribbles request heads on 3x the per-client cap of connections; another
    client is served at once; the extra connections are refused at once, the rest dropped
    after the head timeout."""
    n = 3 * PER_CLIENT
    attack = []
    for _ in range(n):
        s = connect(server, ATTACKER, timeout=0.05)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        except (BrokenPipeError, ConnectionResetError):
            pass
        attack.append(s)
    idle = connect(server, ATTACKER, timeout=0.05)  # sends nothing at all
    try:
        time.sleep(0.3)
        assert client.get("/healthz").status_code == 200
        assert upload(client, token, copies.next()).status_code == 201

        def closed(s):
            try:
                return s.recv(1) == b""
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True

        refused_now = sum(closed(s) for s in attack)
        # exactly the cap was held while the other client was served; every one past it refused
        assert refused_now == n - PER_CLIENT
        # Poll (not sleep) until each connection's first event after the head timeout: it must be
        # the close (no bytes of a response first).
        first_event: dict[int, bool] = {}

        def all_settled() -> bool:
            for i, s in enumerate(attack + [idle]):
                if i not in first_event:
                    try:
                        first_event[i] = s.recv(1) == b""
                    except TimeoutError:
                        pass
                    except ConnectionResetError:
                        first_event[i] = True
            return len(first_event) == len(attack) + 1

        wait_for(all_settled, timeout_s=HEAD_TIMEOUT_S + 15, what="the server to drop the unfinished heads")
        assert all(first_event.values())
    finally:
        for s in attack + [idle]:
            s.close()
    assert client.get("/healthz").status_code == 200
    # Once its connections are gone, the attacker's address is served again (the count went down).
    time.sleep(0.3)
    for _ in range(PER_CLIENT + 2):
        with connect(server, ATTACKER) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_response(s)[0] == 200


# --- browsers --------------------------------------------------------------------------------

def test_cors_is_off(client):
    origin = {"Origin": "https://evil.example"}
    for r in (client.get("/api/v1/leaderboard", params={"track": "AB"}, headers=origin),
              client.get("/healthz", headers=origin),
              client.options("/api/v1/submissions", headers={**origin, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "authorization"})):
        assert not any(k.lower().startswith("access-control-") for k in r.headers), dict(r.headers)
    assert r.status_code == 405


def test_page_sends_security_headers_and_escapes_team_names(server, client, good):
    name = "<script>alert(1)</script>"
    token = server.add_team(name)
    r = upload(client, token, good)
    assert r.status_code == 201 and r.json()["team"] == name  # JSON keeps it verbatim (it is data)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script" not in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    for h, v in {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                 "referrer-policy": "no-referrer"}.items():
        assert page.headers[h] == v
    assert "server" not in page.headers  # no software banner
    for path in ("/api/v1/leaderboard?track=AB", "/healthz", "/api/v1/nope"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff"
