"""The participant CLI against a bad server, and what it prints.

A tiny misbehaving HTTP server runs in a thread on loopback: it redirects (to https on the same
host, or to another host), answers HTML or non-JSON, JSON of the wrong shape, 500 pages, a
400 MB body, or drips bytes for ever. The CLI answers each with one line and exit 1 (before:
tracebacks, a body read whole into memory, a hang), within its deadline; it never sends the
token anywhere but the configured host, never prints it, and refuses a malformed token before
any request. Text from the server (team names, methods, error details) reaches the terminal
with its control characters escaped.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from cli_support import run_cli as run

from c2seg_kit import client
from c2seg_kit.client import transport as client_http

TOKEN = "c2s_" + "t0ken" * 8
ESC = "\x1b[2J\x1b]0;pwned\x07"


class BadServer:
    """Answers every request with `reply(request_head) -> bytes | callable(sock)`; records heads."""

    def __init__(self, reply, host: str = "127.0.0.1"):
        self.reply, self.heads, self.sent = reply, [], 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.heads.append(head.decode("latin-1"))
            answer = self.reply(head.decode("latin-1"))
            if callable(answer):
                answer(conn, self)
            else:
                conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def http(status: str, body: bytes = b"", ctype: str = "application/json", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode() + body


def js(value, status: str = "200 OK") -> bytes:
    return http(status, json.dumps(value).encode())


@pytest.fixture
def bad():
    servers = []

    def make(reply, host="127.0.0.1") -> BadServer:
        servers.append(BadServer(reply, host))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def one_line(code, out, err, *words) -> None:
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
    assert "Traceback" not in err and TOKEN not in err and all(w in err for w in words), err


# --- redirects: never followed, the token stays home ----------------------------------------------

def test_a_redirect_to_https_on_the_same_host_is_explained(bad, capsys):
    server = bad(lambda head: http("301 Moved Permanently", extra=f"Location: https://127.0.0.1:{port}/healthz\r\n"))
    port = server.url.rsplit(":", 1)[1]
    code, out, err = run(capsys, "leaderboard", "--server", server.url, "--track", "AB")
    one_line(code, out, err, f"the server at {server.url} redirects to https: use --server https://127.0.0.1:{port}")
    assert len(server.heads) == 1  # asked once, not followed


def test_a_redirect_to_another_host_is_not_followed_and_gets_no_token(bad, capsys):
    thief = bad(lambda head: js({"team": "x"}), host="127.0.0.2")
    server = bad(lambda head: http("302 Found", extra=f"Location: {thief.url}/steal\r\n"))
    code, out, err = run(capsys, "me", "--server", server.url, "--token", TOKEN)
    one_line(code, out, err, f"answered with a redirect (302) to {thief.url}; not followed",
             "your token goes to the configured server only")
    assert thief.heads == [] and f"Bearer {TOKEN}" in server.heads[0]


# --- answers that are not what a C2Seg server sends ------------------------------------------------

@pytest.mark.parametrize("reply, words", [
    (http("200 OK", b"<html><body>Welcome to nginx!</body></html>", "text/html"),
     "did not answer with JSON (text/html, 43 bytes)"),
    (http("200 OK", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"), "did not answer with JSON (image/png"),
    (js({"track": "AB"}), "does not understand (answer.phase: missing)"),
    (js({"track": "AB", "phase": "open", "ranked_by": "public", "entries": [{"team": 5}]}),
     "does not understand (answer.entries[0].rank: missing)"),
    (js({"track": "AB", "phase": "open", "ranked_by": "public", "entries": [
        {"rank": 1, "team": 7, "baseline": False, "submissions": 1, "public": {}}]}),
     "does not understand (answer.entries[0].team: expected text)"),
    (js([1, 2, 3]), "does not understand (answer: expected an object)"),
    (http("500 Internal Server Error", b"<html>\n<h1>oops</h1>\n</html>", "text/html"),
     "server error (500): Internal Server Error"),
    (http("502 Bad Gateway", b"<html>bad gateway</html>", "text/html"), "server error (502): Bad Gateway"),
    (b"this is not HTTP at all\r\n\r\n", "sent a malformed HTTP answer"),
], ids=["html", "binary", "missing-key", "missing-nested", "wrong-type", "not-an-object", "500-html", "502",
        "not-http"])
def test_answers_of_the_wrong_kind_are_one_line(bad, capsys, reply, words):
    server = bad(lambda head: reply)
    code, out, err = run(capsys, "leaderboard", "--server", server.url, "--track", "AB")
    one_line(code, out, err, words)


def test_a_huge_answer_is_refused_without_reading_it(bad, capsys):
    def endless(conn, server, declared=True):
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += "Content-Length: 400000000\r\n\r\n" if declared else "Transfer-Encoding: chunked\r\n\r\n"
        conn.sendall(head.encode())
        block = b"[" + b"0," * 32767 + b"0"
        try:
            while server.sent < 400_000_000:
                conn.sendall(block if declared else b"%x\r\n%s\r\n" % (len(block), block))
                server.sent += len(block)
        except OSError:
            return

    declared = bad(lambda head: endless)
    code, out, err = run(capsys, "leaderboard", "--server", declared.url, "--track", "AB")
    one_line(code, out, err, "sent an answer of 381 MiB; refusing to read more than 16 MiB")
    chunked = bad(lambda head: lambda conn, server: endless(conn, server, declared=False))
    started = time.monotonic()
    code, out, err = run(capsys, "leaderboard", "--server", chunked.url, "--track", "AB")
    one_line(code, out, err, "sent an answer larger than 16 MiB; stopped reading it")
    assert time.monotonic() - started < 30
    time.sleep(0.5)
    assert chunked.sent < 64 * 2**20  # it stopped soon after the cap (plus socket buffers)


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_server_that_drips_bytes_is_cut_off_at_the_deadline(bad, capsys, monkeypatch, where):
    monkeypatch.setattr(client_http, "DEADLINE_S", 3.0)

    def drip(conn, server):
        data = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: 1\r\n" * 100 if where == "head"
                else b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                + b"[" + b"1," * 50000)
        try:
            for i in range(len(data)):  # one byte every 0.2 s: no single read ever waits long
                conn.sendall(data[i:i + 1])
                time.sleep(0.2)
                if server.stop.is_set():
                    return
        except OSError:
            return

    server = bad(lambda head: drip)
    started = time.monotonic()
    code, out, err = run(capsys, "leaderboard", "--server", server.url, "--track", "AB")
    took = time.monotonic() - started
    one_line(code, out, err, f"the server at {server.url} did not complete its answer within 3 s")
    assert 2.5 < took < 6, took


# --- the token -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token, words", [
    (TOKEN + "\r\nX-Injected: 1", "a line break"),
    (TOKEN[:-1] + "\u00e9", "a non-ASCII character"),
    (TOKEN[:10] + " " + TOKEN[10:], "a space or control character"),
    (TOKEN[:10] + "\x1b" + TOKEN[10:], "a space or control character"),
    ("c2s_" + "x" * 300, "tokens have at most 256"),
])
def test_a_malformed_token_is_refused_before_any_request(bad, capsys, tmp_path, token, words):
    server = bad(lambda head: js({}))
    for verb in (["me"], ["submissions"]):
        code, out, err = run(capsys, *verb, "--server", server.url, "--token", token)
        one_line(code, out, err, words, "the token itself is not shown")
        assert token.strip() not in err and TOKEN[10:30] not in err
    assert server.heads == []


# --- what reaches the terminal --------------------------------------------------------------------

def scores(miou=0.5):
    return {"miou": miou, "oa": 0.6, "f1": 0.5, "kappa": 0.4, "per_class_iou": {"forests": 0.5}, "n_pixels": 10}


def test_server_text_reaches_the_terminal_escaped(bad, capsys):
    board = {"track": "AB", "phase": "open", "ranked_by": "public", "entries": [
        {"rank": 1, "team": f"evil{ESC}\u202eteam", "baseline": False, "submissions": 1, "public": scores()}]}
    me = {"team": f"t{ESC}", "baseline": False, "disqualified": f"reason{ESC}", "failed_today": 0,
          "failed_left_today": 20, "quota": [{"track": "AB", "phase": "open", "used_today": 0, "left_today": 5,
                                              "resets": "2026-12-01T00:00:00Z"}]}
    subs = [{"id": 1, "track": "AB", "team": "t", "created": "2026-11-30T10:00:00Z", "scores": scores(),
             "method": f"m{ESC}\u2066x", "status": "scored"}]
    replies = {"/api/v1/leaderboard": js(board), "/api/v1/me": js(me), "/api/v1/submissions": js(subs)}
    server = bad(lambda head: next(v for k, v in replies.items() if head.split()[1].startswith(k)))
    outputs = []
    for args in (["leaderboard", "--track", "AB"], ["me", "--token", TOKEN], ["submissions", "--token", TOKEN]):
        code, out, err = run(capsys, *args, "--server", server.url)
        assert code == 0, err
        outputs.append(out)
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\u2066" not in out, out
    assert "  1  evil\\x1b[2J\\x1b]0;pwned\\x07\\  0.5000" in outputs[0]  # shown, visibly, cut to its column
    assert "DISQUALIFIED: reason\\x1b[2J\\x1b]0;pwned\\x07" in outputs[1]
    assert "m\\x1b[2J\\x1b]0;pwne" in outputs[2]
    error = bad(lambda head: js({"detail": f"no{ESC}\u202epe"}, "422 Unprocessable Entity"))
    code, out, err = run(capsys, "leaderboard", "--server", error.url, "--track", "AB")
    one_line(code, out, err, "the server refused the file (422): no\\x1b[2J\\x1b]0;pwned\\x07\\u202epe")


def test_the_client_library_raises_server_errors_not_key_errors(bad):
    server = bad(lambda head: js({"tracks": [{"track": "AB"}]}))
    with pytest.raises(client.ServerError, match=r"answer.tracks\[0\].shape: missing"):
        client.health(server.url)


# --- every field of every answer the client reads, against a fake server (httpx MockTransport) -----

TILE_HEALTH = {"tracks": [{"track": "AB", "layout": "tiles", "shape": None, "n_tiles": 1}], "max_upload_bytes": 10**9}
SCENE_HEALTH = {"tracks": [{"track": "AB", "layout": "scene", "shape": [2, 2]}], "max_upload_bytes": 10**9}


@pytest.fixture
def fake(monkeypatch):
    """A fake server: ``fake(answers)`` makes every request to path P answer ``answers[P]``
    (a JSON value, or raw bytes), through httpx's MockTransport; unknown paths answer 404."""
    import httpx

    real = httpx.Client

    def make(answers: dict):
        def handler(request: httpx.Request) -> httpx.Response:
            answer = answers.get(request.url.path)
            if answer is None:
                return httpx.Response(404, json={"detail": "not found"})
            status, body = answer if isinstance(answer, tuple) else (200, answer)
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return httpx.Response(status, content=content, headers={"content-type": "application/json"})

        monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))
        return "http://fake.example"

    return make


@pytest.fixture
def tile_file(tmp_path):
    import numpy as np

    from c2seg_kit.submission.tile_writers import write_tile_submission

    return write_tile_submission(tmp_path / "p.h5", [("0", np.ones((2, 2), np.uint8))], "AB")


HOSTILE_TILES = {
    "one side": {"0": [2]},
    "three sides": {"0": [2, 2, 2]},
    "text": {"0": ["2", 2]},
    "float": {"0": [2.5, 2]},
    "bool": {"0": [True, 2]},
    "zero": {"0": [0, 2]},
    "negative": {"0": [-2, 2]},
    "huge": {"0": [2, 10**30]},
    "null": {"0": None},
    "object": {"0": {"h": 2, "w": 2}},
    "slash id": {"../0": [2, 2]},
    "control id": {"0\x1b[2J": [2, 2]},
    "superscript id": {"³": [2, 2]},
    "empty": {},
    "more than AB's 140": {str(i): [2, 2] for i in range(141)},
}


@pytest.mark.parametrize("tiles", HOSTILE_TILES.values(), ids=HOSTILE_TILES.keys())
def test_a_hostile_tile_list_is_one_line(fake, tile_file, capsys, tiles):
    url = fake({"/healthz": TILE_HEALTH, "/api/v1/tracks/AB/tiles": {"tiles": tiles}})
    code, out, err = run(capsys, "submit", tile_file, "--server", url, "--token", TOKEN)
    one_line(code, out, err, "the server at http://fake.example")
    assert "\x1b" not in err


HOSTILE_HEALTH = {
    "scene without shape": {"tracks": [{"track": "AB", "layout": "scene", "shape": None}]},
    "shape of three": {"tracks": [{"track": "AB", "layout": "scene", "shape": [2, 2, 2]}]},
    "shape of text": {"tracks": [{"track": "AB", "layout": "scene", "shape": "2x2"}]},
    "unknown layout": {"tracks": [{"track": "AB", "layout": "cubes", "shape": [2, 2]}]},
    "negative cap": {**SCENE_HEALTH, "max_upload_bytes": -1},
    "negative tile count": {"tracks": [{"track": "AB", "layout": "tiles", "shape": None, "n_tiles": -3}]},
    "tracks not a list": {"tracks": {"AB": [2, 2]}},
}


@pytest.mark.parametrize("health", HOSTILE_HEALTH.values(), ids=HOSTILE_HEALTH.keys())
def test_a_hostile_health_answer_is_one_line(fake, tmp_path, capsys, health):
    import numpy as np

    from c2seg_kit.submission.writers import write_submission

    path = write_submission(tmp_path / "s.h5", np.ones((2, 2), np.uint8), "AB")
    url = fake({"/healthz": health})
    code, out, err = run(capsys, "submit", path, "--server", url, "--token", TOKEN)
    one_line(code, out, err, "the server at http://fake.example")


def _scores(**over):
    return {"miou": 0.5, "oa": 0.5, "f1": 0.5, "kappa": 0.5, "per_class_iou": {}, "n_pixels": 4, **over}


def _submission(**over):
    return {"id": 1, "track": "AB", "team": "t", "created": "2026-01-01T00:00:00Z", "scores": _scores(), **over}


HOSTILE_ANSWERS = {
    "NaN score": ("/api/v1/submissions", b'[{"id": 1, "track": "AB", "team": "t", "created": "x", "scores": '
                                         b'{"miou": NaN, "oa": 0, "f1": 0, "kappa": 0, "per_class_iou": {}}}]'),
    "infinite score": ("/api/v1/submissions", b'[{"id": 1, "track": "AB", "team": "t", "created": "x", "scores": '
                                              b'{"miou": 0, "oa": Infinity, "f1": 0, "kappa": 0, "per_class_iou": {}}}]'),
    "negative pixel count": ("/api/v1/submissions", [_submission(scores=_scores(n_pixels=-1))]),
    "id zero": ("/api/v1/submissions", [_submission(id=0)]),
    "negative quota": ("/api/v1/me", {"team": "t", "failed_today": 0, "failed_left_today": 0, "quota": [
        {"track": "AB", "phase": "public", "used_today": -1, "left_today": 1, "resets": "x"}]}),
    "negative submissions": ("/api/v1/leaderboard", {"track": "AB", "phase": "public", "ranked_by": "public", "entries": [
        {"rank": 1, "team": "t", "baseline": False, "submissions": -2, "public": _scores()}]}),
}


@pytest.mark.parametrize("answer", HOSTILE_ANSWERS.values(), ids=HOSTILE_ANSWERS.keys())
def test_other_hostile_answers_are_server_errors(fake, answer):
    path, body = answer
    url = fake({path: body})
    call = {"/api/v1/submissions": lambda: client.my_submissions(server=url, token=TOKEN),
            "/api/v1/me": lambda: client.me(server=url, token=TOKEN),
            "/api/v1/leaderboard": lambda: client.leaderboard("AB", server=url)}[path]
    with pytest.raises(client.ServerError, match="sent an answer this client does not understand"):
        call()


def test_an_honest_tile_list_still_reads(fake):
    url = fake({"/api/v1/tracks/AB/tiles": {"tiles": {"0": [128, 128], "17": [128, 96]}}})
    assert client.track_tiles("AB", server=url) == {"0": (128, 128), "17": (128, 96)}


def test_a_content_length_of_other_digits_is_not_a_number(monkeypatch):
    """"³" passes str.isdigit but not int(): the declared size is ignored, the body read as capped."""
    import httpx

    real = httpx.Client

    def handler(request):
        return httpx.Response(200, content=json.dumps({"tracks": []}).encode(),
                              headers=[(b"content-type", b"application/json"), (b"content-length", b"\xb3")])

    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))
    assert client.health("http://fake.example") == {"tracks": []}
    assert "retry after" not in str(client_http.explain(429, b"{}", "Too Many", "\u00b3"))
