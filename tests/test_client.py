"""c2seg_kit.client without a server: URLs, tokens, error explanations, the streamed multipart body."""

from __future__ import annotations

import httpx
import pytest
from live_server import free_port

from c2seg_kit import client
from c2seg_kit.errors import C2SegError


def test_server_url_and_token_from_options_or_environment(monkeypatch):
    monkeypatch.delenv("C2SEG_SERVER", raising=False)
    monkeypatch.delenv("C2SEG_TOKEN", raising=False)
    assert client.server_url() == client.DEFAULT_SERVER
    monkeypatch.setenv("C2SEG_SERVER", "https://board.example/")
    assert client.server_url() == "https://board.example"
    assert client.server_url("http://127.0.0.1:9") == "http://127.0.0.1:9"
    with pytest.raises(C2SegError, match="http"):
        client.server_url("board.example")
    with pytest.raises(C2SegError, match="C2SEG_TOKEN"):
        client.server_token()
    monkeypatch.setenv("C2SEG_TOKEN", " c2s_abc \n")
    assert client.server_token() == "c2s_abc"


@pytest.mark.parametrize("status, words", [
    (401, "refused the token"), (413, "larger than the server accepts"), (429, "limit reached"),
    (422, "refused the file"), (500, "server error"), (418, "request refused"),
])
def test_every_refusal_is_one_explained_line(status, words):
    resp = httpx.Response(status, json={"detail": "the reason\nwith a newline"})
    err = client.explain(resp)
    msg = str(err)
    assert words in msg and f"({status})" in msg and "the reason with a newline" in msg
    assert "\n" not in msg and err.status == status
    # A body that is not our JSON still gives one line.
    assert "\n" not in str(client.explain(httpx.Response(status, text="<html>\n</html>")))


def test_multipart_body_streams_the_file_and_parses_back(tmp_path):
    multipart = pytest.importorskip("python_multipart.multipart")
    path = tmp_path / 'my "odd"\nname.h5'
    payload = bytes(range(256)) * 5000
    path.write_bytes(payload)
    seen = []
    length, chunks = client._multipart(path, "BOUNDARY123", seen.append)
    body = b"".join(chunks)
    assert len(body) == length and sum(seen) == len(payload)
    parts = []
    cur = {}

    def on_part_data(data, start, end):
        cur.setdefault("data", bytearray()).extend(data[start:end])

    def on_part_end():
        parts.append(bytes(cur.pop("data", b"")))

    parser = multipart.MultipartParser(b"BOUNDARY123", {"on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    assert parts == [payload]
    head = body[:200].decode("latin-1")
    assert 'name="file"' in head and "\nname" not in head.split("filename=")[1].split("\r\n")[0]


def test_unreachable_server_is_one_line(tmp_path):
    port = free_port()  # bound and closed again: nobody listens there
    with pytest.raises(client.ServerError, match="cannot reach the server"):
        client.leaderboard("AB", server=f"http://127.0.0.1:{port}")
    f = tmp_path / "p.h5"
    f.write_bytes(b"x")
    with pytest.raises(client.ServerError, match="cannot reach the server"):
        client.submit(f, server=f"http://127.0.0.1:{port}", token="t")
