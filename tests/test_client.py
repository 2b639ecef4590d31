"""c2seg_kit.client without a server: URLs, tokens, error explanations, the streamed multipart upload."""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc

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


class UploadSink:
    """A loopback HTTP server that reads one upload to its end (keeping at most `keep` bytes of
    it) and answers 201 with a well-formed submission; records the request head and body size."""

    def __init__(self, keep: int = 2**20):
        self.keep, self.head, self.body, self.received = keep, "", b"", 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            self.head = head.decode("latin-1")
            length = int(next(line.split(":", 1)[1] for line in self.head.split("\r\n")
                              if line.lower().startswith("content-length:")))
            body, self.received = bytearray(rest[: self.keep]), len(rest)
            while self.received < length:
                chunk = conn.recv(2**20)
                if not chunk:
                    break
                self.received += len(chunk)
                if len(body) < self.keep:
                    body += chunk[: self.keep - len(body)]
            self.body = bytes(body)
            answer = json.dumps({"id": 1, "track": "AB", "team": "t", "created": "2026-01-01T00:00:00Z",
                                 "scores": {"miou": 0.5, "oa": 0.5, "f1": 0.5, "kappa": 0.5,
                                            "per_class_iou": {}}}).encode()
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(answer)).encode() + b"\r\nConnection: close\r\n\r\n" + answer)

    def close(self) -> None:
        self.thread.join(30)
        self.sock.close()


def test_upload_is_multipart_with_a_length_and_parses_back(tmp_path):
    multipart = pytest.importorskip("python_multipart.multipart")
    path = tmp_path / 'my "odd"\nname.h5'
    payload = bytes(range(256)) * 5000
    path.write_bytes(payload)
    seen = []
    sink = UploadSink(keep=4 * 2**20)
    try:
        answer = client.submit(path, server=sink.url, token="t0ken", progress=seen.append, method="HighDAN",
                               description="line one\r\nline two")
    finally:
        sink.close()
    assert answer["id"] == 1 and sum(seen) == len(payload)
    head = sink.head.lower()
    assert f"content-length: {len(sink.body)}" in head and sink.received == len(sink.body) and "transfer-encoding" not in head
    boundary = head.split("boundary=")[1].split("\r\n")[0].strip().encode()
    parts, cur = [], {}

    def on_part_data(data, start, end):
        cur.setdefault("data", bytearray()).extend(data[start:end])

    def on_part_end():
        parts.append(bytes(cur.pop("data", b"")))

    parser = multipart.MultipartParser(boundary, {"on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(sink.body)
    assert parts == [b"HighDAN", b"line one\nline two", payload]  # fields first, then the file
    file_head = sink.body.decode("latin-1").split('name="file"')[1].split("\r\n\r\n")[0]
    assert "filename=" in file_head and "\n" not in file_head.split("\r\n")[0]
    assert "application/x-hdf5" in file_head


def test_a_large_upload_is_streamed_not_read_into_memory(tmp_path):
    path = tmp_path / "big.h5"
    size = 200 * 2**20
    with open(path, "wb") as f:  # sparse: no disk and no time to write it
        f.truncate(size)
    seen = []
    sink = UploadSink(keep=0)
    tracemalloc.start()
    try:
        client.submit(path, server=sink.url, token="t0ken", progress=seen.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sink.close()
    assert sink.received > size and sum(seen) == size
    assert peak < 16 * 2**20, f"the upload held {peak / 2**20:.0f} MiB at once"


def test_unreachable_server_is_one_line(tmp_path):
    port = free_port()  # bound and closed again: nobody listens there
    with pytest.raises(client.ServerError, match="cannot reach the server"):
        client.leaderboard("AB", server=f"http://127.0.0.1:{port}")
    f = tmp_path / "p.h5"
    f.write_bytes(b"x")
    with pytest.raises(client.ServerError, match="cannot reach the server"):
        client.submit(f, server=f"http://127.0.0.1:{port}", token="t")
