"""The server on a tile track, against a live `c2seg serve --labels labels-tiles.h5`:
tile submissions are scored with whole tiles public or private by a seeded hash of the tile id
(scores equal scikit-learn over each part's tiles), a file in the other layout is a 422 naming
the expected layout and how to convert, every hostile tile file is refused with its reason, and
`c2seg submit` checks tile files locally against the tiles the server lists."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from hostile_files import TILE_FILES, honest_tile_file, honest_tiles, make_tile_target  # noqa: E402
from live_server import LiveServer, auth, upload  # noqa: E402
from sklearn.metrics import jaccard_score  # noqa: E402

from c2seg_kit.cli import main  # noqa: E402
from c2seg_kit.submission.tile_writers import write_tile_submission  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402
from c2seg_server.scoring import public_tiles  # noqa: E402

pytestmark = pytest.mark.timeout(300)
SEED, FRACTION = 11, 0.5
BW_SHAPE = (40, 30)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return make_tile_target(tmp_path_factory.mktemp("labels"))  # 12 tiles, as the catalogue expects


@pytest.fixture(scope="module")
def server(tmp_path_factory, target):
    folder = tmp_path_factory.mktemp("server")
    bw = write_labels(folder / "labels-BW.h5", np.ones(BW_SHAPE, np.uint8), "BW")
    # the scene track BW only serves the layout checks: small labels, so small split blocks (two at least)
    srv = LiveServer(folder, [target.path, bw], env={"C2SEG_SPLIT_SEED": str(SEED), "C2SEG_SPLIT_BLOCK": "16",
                                                      "C2SEG_SCORING_WORKERS": "1",
                                                      "C2SEG_SCORING_TIMEOUT_S": "20", "C2SEG_PEEK_TIMEOUT_S": "10"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def token(server):
    return server.add_team("tilers")


def oracle_public(ids, track: str, seed: int, fraction: float) -> set[str]:
    """The documented rule, written out: sha256("<seed>:<track>:<id>"), first 8 bytes big-endian / 2**64."""
    return {t for t in ids if int(hashlib.sha256(f"{seed}:{track}:{t}".encode()).hexdigest()[:16], 16) < fraction * 2**64}


def test_public_tiles_are_a_stable_seeded_hash_of_the_id():
    ids = [str(i) for i in range(1000)]
    a = public_tiles(ids, "AB", seed=3, fraction=0.5)
    assert a == oracle_public(ids, "AB", 3, 0.5) == public_tiles(list(reversed(ids)), "AB", seed=3, fraction=0.5)
    assert abs(len(a) - 500) < 80  # binomial(1000, 0.5): sd 16
    assert a != public_tiles(ids, "AB", seed=4, fraction=0.5) and a != public_tiles(ids, "BW", seed=3, fraction=0.5)
    # each tile's part depends on its own id only: a subset of the ids keeps its parts
    assert public_tiles(ids[:100], "AB", seed=3, fraction=0.5) == a & set(ids[:100])
    assert len(public_tiles(ids, "AB", seed=3, fraction=0.2)) < len(a)


def test_two_tiles_never_leave_a_part_empty():
    for seed in range(40):
        got = public_tiles(["0", "1"], "AB", seed=seed, fraction=0.5)
        assert len(got) == 1, seed  # both parts hold a tile, whatever the hash says
    assert public_tiles(["7"], "AB", seed=0, fraction=0.5) == oracle_public(["7"], "AB", 0, 0.5)


def test_health_and_tile_list_say_what_each_track_takes(client, target):
    tracks = {t["track"]: t for t in client.get("/healthz").json()["tracks"]}
    assert (tracks["AB"]["layout"], tracks["AB"]["shape"], tracks["AB"]["n_tiles"]) == ("tiles", None, 12)
    assert (tracks["BW"]["layout"], tracks["BW"]["shape"], tracks["BW"]["n_tiles"]) == ("scene", list(BW_SHAPE), None)
    r = client.get("/api/v1/tracks/AB/tiles")
    assert r.status_code == 200 and r.json() == {"track": "AB", "tiles": {t: list(s) for t, s in target.shapes.items()}}
    r = client.get("/api/v1/tracks/BW/tiles")
    assert r.status_code == 404 and r.json()["detail"] == "track BW is scored on the whole scene (40 x 30); it has no tiles"


def test_tile_submission_scored_per_part_as_sklearn(client, server, token, target, tmp_path):
    from c2seg_server.models import Submission

    pred = honest_tiles(target, seed=5)
    r = upload(client, token, write_tile_submission(tmp_path / "p.h5", pred.items(), "AB"))
    assert r.status_code == 201, r.text
    public = oracle_public(target.tiles, "AB", SEED, FRACTION)
    assert 0 < len(public) < 12
    with server.session() as s:
        private_row = s.get(Submission, r.json()["id"]).score("private")
        private = {"oa": private_row.oa, "miou": private_row.miou, "n_pixels": private_row.n_pixels}
    got = {"public": r.json()["scores"], "private": private}
    for part, ids in (("public", sorted(public)), ("private", sorted(set(target.tiles) - public))):
        y = np.concatenate([target.tiles[t].ravel() for t in ids])
        q = np.concatenate([pred[t].ravel() for t in ids])
        keep = y > 0
        y, q = y[keep], q[keep]
        present = sorted(set(y) | set(q))
        expected = {"oa": round(float(np.mean(y == q)), 4), "n_pixels": int(keep.sum()),
                    "miou": round(float(jaccard_score(y, q, labels=present, average=None, zero_division=0).mean()), 4)}
        assert {k: got[part][k] for k in expected} == expected, part


def test_other_layout_is_a_422_saying_how_to_convert(client, token, tmp_path):
    scene = write_submission(tmp_path / "scene.h5", np.ones((64, 64), np.uint8), "AB")
    r = upload(client, token, scene)
    assert r.status_code == 422 and r.json()["detail"] == (
        "submission holds one 'prediction' raster (the scene layout), but track AB is scored on the challenge's "
        "test tiles: pack one image per test tile with `c2seg pack PRED_DIR --track AB --out predictions.h5` "
        "(tile layout)")
    tiles = write_tile_submission(tmp_path / "tiles.h5", [("0", np.ones((8, 8), np.uint8))], "BW")
    r = upload(client, token, tiles)
    assert r.status_code == 422 and r.json()["detail"] == (
        "submission holds tiles (layout 'tiles'), but track BW is scored on the whole scene: send one 'prediction' "
        "raster of 40 x 30 (the scene layout, as `c2seg predict` writes it)")


def test_every_hostile_tile_file_is_refused_over_http(client, token, target, tmp_path):
    for i, kind in enumerate(TILE_FILES):
        r = upload(client, token, kind.build(tmp_path / f"h{i}.h5", target))
        assert r.status_code == kind.status, (kind.name, r.text)
        detail = r.json()["detail"]
        assert re.search(kind.reason, detail) and "\n" not in detail, (kind.name, detail)
        assert "SECRET" not in detail and str(target.path.parent) not in detail
        assert client.get("/healthz").status_code == 200
    assert upload(client, token, honest_tile_file(tmp_path / "ok.h5", target)).status_code == 201


def run_cli(capsys, server, token, *args) -> tuple[int, str, str]:
    env = {"C2SEG_SERVER": server.url, "C2SEG_TOKEN": token}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_submit_checks_tile_files_locally(server, target, tmp_path, capsys):
    token = server.add_team("cli-tilers")
    me = lambda: httpx.get(f"{server.url}/api/v1/me", headers=auth(token)).json()  # noqa: E731
    pred = honest_tiles(target, seed=9)
    missing = dict(pred)
    del missing["4"]
    cases = [
        (write_tile_submission(tmp_path / "missing.h5", missing.items(), "AB"),
         "error: submission must hold exactly the 12 test tiles: 1 missing (4)\n"),
        (write_submission(tmp_path / "scene.h5", np.ones((64, 64), np.uint8), "AB"),
         "error: submission holds one 'prediction' raster (the scene layout), but track AB is scored on the "
         "challenge's test tiles: pack one image per test tile with `c2seg pack PRED_DIR --track AB --out "
         "predictions.h5` (tile layout)\n"),
    ]
    for path, message in cases:
        code, out, err = run_cli(capsys, server, token, "submit", path)
        assert (code, out, err) == (1, "", message)
    assert me()["failed_today"] == 0 and me()["quota"][0]["used_today"] == 0  # refused before a byte was sent
    code, out, err = run_cli(capsys, server, token, "submit", write_tile_submission(tmp_path / "p.h5", pred.items(), "AB"))
    assert code == 0 and re.match(r"submission \d+ \(track AB, team cli-tilers\) scored; public split:", out), out + err
    assert me()["quota"][0]["used_today"] == 1
