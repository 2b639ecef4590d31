"""Small bodies (metadata edits, final picks), over raw sockets against a real `c2seg serve`.

The token is checked from the header before a byte of the body is read, and every body but the
upload's is capped while it arrives: a client without a token, or with one and a huge body,
streamed fast or slowly, gets its answer at once and the server's memory does not grow with
what it sends.
"""

from __future__ import annotations

import json
import select
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

from live_server import VARIANT, auth, connect, live_server_fixtures, noisy_prediction, read_response, upload  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402

HEAD_TIMEOUT_S = 3
CAP = 32 * 1024  # bodies.MAX_BODY_BYTES
#: What a hostile client streams at most in one test (fast): today's server held all of it.
STREAM_BYTES = 96 * 2**20
#: The most the server's resident memory may grow while one hostile body is streamed.
GROWTH_MB = 24

#: The model upload's own cap here (C2SEG_MAX_MODEL_BYTES): small, so that a stream passes it soon.
MODEL_CAP = 2**20
target, server, client = live_server_fixtures(shape=(300, 200), client_timeout=30,
                                              env={"C2SEG_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
                                                   "C2SEG_MAX_MODEL_BYTES": str(MODEL_CAP)})


@pytest.fixture(scope="module")
def token(server):
    return server.add_team("bodies")


@pytest.fixture(scope="module")
def sub_id(tmp_path_factory, target, client, token):
    good = write_submission(tmp_path_factory.mktemp("p") / "p.h5", noisy_prediction(target.label, 1), "AB",
                            team=VARIANT)
    r = upload(client, token, good)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def head(method: str, target: str, token: str | None, length: int | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def rss_mb(server) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def stream(server, request_head: bytes, *, chunked: bool, pause_s: float, limit: int = STREAM_BYTES):
    """Send the head, then a JSON body a block at a time until the server answers and hangs up
    (or `limit` bytes went). Returns (status, response, bytes sent before the answer, peak RSS
    growth of the server in MiB)."""
    base = rss_mb(server)
    peak = base
    block = b'{"description": "' + b"x" * (256 * 1024)
    sent, answered_at, status, data = 0, None, 0, b""
    with connect(server, timeout=HEAD_TIMEOUT_S + 10) as s:
        s.sendall(request_head)
        try:
            while sent < limit:
                if answered_at is None and select.select([s], [], [], 0)[0]:
                    answered_at = sent
                    status, data = read_response(s)
                piece = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
                s.sendall(piece)
                sent += len(block)
                peak = max(peak, rss_mb(server))
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if answered_at is None:
            answered_at = sent
            status, data = read_response(s)
    peak = max(peak, rss_mb(server))
    return status, data, answered_at, peak - base


@pytest.mark.parametrize("who", [None, "c2s_not-a-token"])
@pytest.mark.parametrize("method,path", [("PATCH", "/api/v1/submissions/1"), ("PUT", "/api/v1/final-picks/AB")])
def test_a_body_without_a_valid_token_is_refused_before_it_is_sent(server, who, method, path):
    with connect(server) as s:
        s.sendall(head(method, path, who, 300 * 2**20))  # declares 300 MB, sends none of it
        status, data = read_response(s)  # so any answer at all came before the body
    assert status == 401, data[:300]
    assert b"www-authenticate: bearer" in data.lower()


@pytest.mark.parametrize("method,path", [("PATCH", "/api/v1/submissions/1"), ("PUT", "/api/v1/final-picks/AB")])
def test_a_declared_oversized_body_is_refused_before_it_is_sent(server, token, method, path):
    with connect(server) as s:
        s.sendall(head(method, path, token, 300 * 2**20))
        status, data = read_response(s)
    assert status == 413, data[:300]
    assert b"larger than this server accepts here (32 KiB)" in data


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "declared-300MB"])
def test_a_huge_body_streamed_fast_is_cut_off_and_not_held(server, token, with_token, chunked):
    """Streamed as fast as the socket takes it, whatever was answered: the server answers at
    once (401 without a token, 413 with one) and its memory does not follow the stream."""
    status, data, answered_at, growth = stream(
        server, head("PATCH", "/api/v1/submissions/1", token if with_token else None, None if chunked else 300 * 2**20),
        chunked=chunked, pause_s=0.0)
    assert status == (413 if with_token else 401), data[:300]
    assert answered_at <= 16 * 2**20  # the answer came long before the whole stream
    assert growth < GROWTH_MB, f"the server grew by {growth:.0f} MiB"


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
def test_a_body_streamed_slowly_gets_its_answer_in_bounded_time(server, token, with_token):
    """A body dribbled a few bytes at a time: 401 at once without a token; with one, 408 once
    the time a request head gets is spent (a slow body holds no connection for ever)."""
    t0 = time.monotonic()
    with connect(server, timeout=HEAD_TIMEOUT_S + 10) as s:
        s.sendall(head("PATCH", "/api/v1/submissions/1", token if with_token else None, 20_000) + b'{"method"')
        answered = None
        while time.monotonic() - t0 < HEAD_TIMEOUT_S + 6:  # bounded
            if select.select([s], [], [], 0.5)[0]:
                answered = time.monotonic() - t0
                break
            try:
                s.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
        status, data = read_response(s)
    assert answered is not None, "no answer"
    if with_token:
        assert status == 408 and b"did not arrive within 3 s" in data, data[:300]
        assert HEAD_TIMEOUT_S - 0.5 <= answered <= HEAD_TIMEOUT_S + 3
    else:
        assert status == 401, data[:300]
        assert answered < 1.5


def test_honest_small_bodies_still_work(client, token, sub_id):
    r = client.patch(f"/api/v1/submissions/{sub_id}", headers=auth(token),
                     json={"method": "HighDAN", "description": "\U0001f680" * 1000})
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "HighDAN"
    r = client.put("/api/v1/final-picks/AB", headers=auth(token), json={"ids": [sub_id]})
    assert r.status_code == 200, r.text
    # every metadata field at its cap, every character escaped in the JSON: still under the cap
    body = json.dumps({"method": "\U0001f680" * 100, "description": "\U0001f680" * 1000,
                       "url": "https://x.org/" + "a" * 286}, ensure_ascii=True).encode()
    assert len(body) < CAP
    r = client.patch(f"/api/v1/submissions/{sub_id}", headers={**auth(token), "Content-Type": "application/json"},
                     content=body)
    assert r.status_code == 200, r.text


def model_head(token: str | None, length: int | None, sub: int = 1) -> bytes:
    """The head of a model upload (PUT /api/v1/submissions/{id}/model, multipart)."""
    lines = [f"PUT /api/v1/submissions/{sub}/model HTTP/1.1", "Host: 127.0.0.1",
             "Content-Type: multipart/form-data; boundary=b0undary"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("who", [None, "c2s_not-a-token"])
def test_a_model_upload_without_a_valid_token_is_refused_before_it_is_sent(server, who):
    with connect(server) as s:
        s.sendall(model_head(who, 300 * 2**20))  # declares 300 MB, sends none of it
        status, data = read_response(s)
    assert status == 401, data[:300]


def test_a_declared_oversized_model_is_refused_before_it_is_sent(server, token, sub_id):
    with connect(server) as s:
        s.sendall(model_head(token, 300 * 2**20, sub_id))
        status, data = read_response(s)
    assert status == 413, data[:300]
    assert b"larger than this server accepts (1 MiB)" in data


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
def test_a_huge_model_streamed_fast_is_cut_off_and_not_held(server, token, sub_id, with_token):
    """A model upload is capped while it streams (chunked: no size declared), as the predictions'
    upload is: 401 at once without a token, 413 past the model cap with one."""
    part = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
    first_chunk = b"%x\r\n%s\r\n" % (len(part), part)  # then the stream's blocks are the file's bytes
    status, data, answered_at, growth = stream(
        server, model_head(token if with_token else None, None, sub_id) + first_chunk, chunked=True, pause_s=0.0)
    assert status == (413 if with_token else 401), data[:300]
    assert answered_at <= 16 * 2**20
    assert growth < GROWTH_MB, f"the server grew by {growth:.0f} MiB"
