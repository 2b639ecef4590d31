"""Verified winners, end to end: a team attaches the model behind a scored submission (a kit
checkpoint or an ONNX file exported from the kit's HighDAN) through the HTTP API, and
`c2seg admin verify` re-runs it on the prepared test inputs in a child process and reports how
far the re-run agrees with the submitted labels, overall and per tile (tile track) or per block
(scene track), the figures checked against a naive count. The web process stores the model's
bytes and never loads it (a pickle bomb stays unexploded); an ONNX file that is not a plain
inference graph is refused in one line by the client and by the verifier.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from baseline_support import make_prepared, run_cli, tiny_options  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_support import scoring_pool, write_labels_file  # noqa: E402

from c2seg_baseline.checkpoint import load_checkpoint  # noqa: E402
from c2seg_baseline.predict import predict_to_file  # noqa: E402
from c2seg_baseline.train import train  # noqa: E402
from c2seg_kit import model_files  # noqa: E402
from c2seg_kit.errors import C2SegError  # noqa: E402
from c2seg_kit.submission.readers import open_submission  # noqa: E402
from c2seg_kit.submission.tile_writers import tile_submission_writer  # noqa: E402
from c2seg_kit.submission.writers import write_submission  # noqa: E402
from c2seg_server import crud  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.main import create_app  # noqa: E402

SPLIT = dict(split_block=16, split_seed=5, public_fraction=0.5)


def _ok(args):
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    return r


def _predict(ckpt: Path, prep: Path, out: Path, method: str) -> Path:
    predict_to_file(ckpt, prep, "AB", out, device="cpu", amp=False, progress=False, method=method)
    return out


def export_onnx(ckpt: Path, path: Path, channels: dict[str, int], window: int) -> Path:
    """The checkpoint's HighDAN as an ONNX file of the kit's convention: inputs hsi, msi, sar
    (1 x C x window x window), output the logits (1 x 14 x window x window), one file."""
    model, _ = load_checkpoint(ckpt)

    class AsTarget(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, hsi, msi, sar):
            return self.net(hsi, msi, sar, target=True)

    args = tuple(torch.rand(1, channels[m], window, window) for m in ("hsi", "msi", "sar"))
    torch.onnx.export(AsTarget(model).eval(), args, str(path), input_names=["hsi", "msi", "sar"],
                      output_names=["logits"], dynamo=True, external_data=False, verbose=False)
    return path


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """A synthetic AB tile track: its prepared test inputs, hidden labels, a tiny trained
    checkpoint, the checkpoint's predictions, and the same model exported to ONNX."""
    root = tmp_path_factory.mktemp("verify-tiles")
    data = root / "data"
    _ok(["synth", str(data), "--track", "AB", "--layout", "tiles", "--scale", "0.05"])
    _ok(["prepare", str(data), "--track", "AB", "--out", str(root / "prep")])
    run = root / "run"
    train(tiny_options(root / "prep", run, steps=1, eval_every=100))
    ckpt = run / "last.pt"
    pred = _predict(ckpt, root / "prep", root / "pred.h5", "tiny")
    from c2seg_kit.prepare.cache import PreparedData

    with PreparedData(root / "prep") as prepared:
        channels = dict(prepared.target.channels)
    return {"root": root, "prep": root / "prep", "labels": data / "labels.h5", "ckpt": ckpt, "pred": pred,
            "onnx": export_onnx(ckpt, root / "model.onnx", channels, 32), "channels": channels}


@pytest.fixture(scope="module")
def pool(tiles):
    with scoring_pool(tiles["labels"], SPLIT) as p:
        yield p


@pytest.fixture
def server(tmp_path, tiles, pool):
    """(client, auth header, admin command prefix) on a fresh database of the tile track."""
    data = tmp_path / "srv"
    settings = Settings(labels=[tiles["labels"]], data_dir=data, **SPLIT)
    with TestClient(create_app(settings, pool=pool)) as client:
        with client.app.state.services.sessions() as s:
            _, token = crud.add_team(s, "alpha")
        yield client, {"Authorization": f"Bearer {token}"}, ["admin", "--db", settings.db_url, "--data-dir", data]


def submit(client, headers, path: Path) -> int:
    with open(path, "rb") as f:
        r = client.post("/api/v1/submissions", headers=headers, files={"file": ("p.h5", f, "application/x-hdf5")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def attach(client, headers, sub_id: int, path: Path, name: str | None = None):
    with open(path, "rb") as f:
        return client.put(f"/api/v1/submissions/{sub_id}/model", headers=headers,
                          files={"file": (name or path.name, f, "application/octet-stream")})


def verify(admin, sub_id: int, prep: Path, *more):
    r = run_cli([*admin, "verify", str(sub_id), "--prepared", str(prep), "--json", *more])
    report = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    return r, report


def one_line(r, words: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def altered_tiles(src: Path, out: Path, changes: dict[str, int]) -> tuple[Path, dict[str, np.ndarray]]:
    """`src` with the first `changes[tile]` pixels of some tiles set to another class."""
    with open_submission(src) as sub:
        tiles = dict(sub.iter_tiles())
    for tile_id, n in changes.items():
        flat = tiles[tile_id].reshape(-1)
        flat[:n] = flat[:n] % 13 + 1
    with tile_submission_writer(out, "AB", method="altered", expected_ids=list(tiles)) as w:
        for tile_id, tile in tiles.items():
            w.write_tile(tile_id, tile)
    return out, tiles


def naive_tile_agreement(a: Path, b: Path) -> dict[str, tuple[int, int]]:
    with open_submission(a) as x, open_submission(b) as y:
        return {t: (int(sum(int(p == q) for p, q in zip(x.read_tile(t).ravel().tolist(),
                                                      y.read_tile(t).ravel().tolist(), strict=True))),
                    x.read_tile(t).size) for t in x.ids}


# --- a kit checkpoint --------------------------------------------------------------------------

def test_a_checkpoint_reproduces_its_submission_and_an_altered_file_is_caught(server, tiles, tmp_path):
    client, headers, admin = server
    sub_id = submit(client, headers, tiles["pred"])
    r = attach(client, headers, sub_id, tiles["ckpt"], "best.pt")
    assert r.status_code == 200, r.text
    model = r.json()["model"]
    assert model["kind"] == "checkpoint" and model["size"] == tiles["ckpt"].stat().st_size
    listed = client.get("/api/v1/submissions", headers=headers).json()
    assert listed[0]["model"]["sha256"] == model["sha256"]

    r, report = verify(admin, sub_id, tiles["prep"])
    assert r.returncode == 0, r.stderr
    assert report["agreement"] == 1.0 and report["pass"] and report["layout"] == "tiles"
    assert all(p["agreement"] == 1.0 for p in report["parts"].values()) and len(report["parts"]) > 1

    # the same model behind a file whose labels were changed on two tiles
    with open_submission(tiles["pred"]) as sub:
        ids = list(sub.ids)
    altered, _ = altered_tiles(tiles["pred"], tmp_path / "altered.h5", {ids[0]: 7, ids[-1]: 31})
    bad_id = submit(client, headers, altered)
    assert attach(client, headers, bad_id, tiles["ckpt"]).status_code == 200
    r, report = verify(admin, bad_id, tiles["prep"])
    assert r.returncode == 3, r.stderr
    assert not report["pass"] and report["agreement"] < 1
    naive = naive_tile_agreement(altered, tiles["pred"])  # the re-run is the checkpoint's own prediction
    assert {t: (p["agree"], p["pixels"]) for t, p in report["parts"].items()} == naive
    assert report["agree"] == sum(a for a, _ in naive.values()) == report["pixels"] - 38
    # the plain report: one line per tile, then the summary an organizer scripts on
    r = run_cli([*admin, "verify", str(bad_id), "--prepared", str(tiles["prep"])])
    assert r.returncode == 3
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(f"verify submission {bad_id}: agreement ") and last.endswith("FAIL (--min-agreement 1)")
    assert f"2 of {len(ids)} tiles below 1" in last
    r, _ = verify(admin, bad_id, tiles["prep"], "--min-agreement", "0.9")
    assert r.returncode == 0


def test_a_second_model_for_a_submission_is_refused(server, tiles):
    client, headers, _ = server
    sub_id = submit(client, headers, tiles["pred"])
    assert attach(client, headers, sub_id, tiles["ckpt"]).status_code == 200
    r = attach(client, headers, sub_id, tiles["onnx"])
    assert r.status_code == 409 and "already has a model attached" in r.json()["detail"]
    assert attach(client, headers, sub_id + 1, tiles["ckpt"]).status_code == 404


# --- an ONNX model exported from the kit's HighDAN ---------------------------------------------

def test_an_onnx_export_of_the_highdan_reproduces_the_checkpoints_submission(server, tiles, tmp_path):
    client, headers, admin = server
    assert model_files.check_onnx(tiles["onnx"]) == ("hsi", "msi", "sar")
    sub_id = submit(client, headers, tiles["pred"])
    r = attach(client, headers, sub_id, tiles["onnx"])
    assert r.status_code == 200 and r.json()["model"]["kind"] == "onnx", r.text
    r, report = verify(admin, sub_id, tiles["prep"])
    assert r.returncode == 0, r.stderr
    assert report["agreement"] == 1.0 and report["model"]["kind"] == "onnx"

    with open_submission(tiles["pred"]) as sub:
        first = sub.ids[0]
    altered, _ = altered_tiles(tiles["pred"], tmp_path / "altered.h5", {first: 5})
    bad_id = submit(client, headers, altered)
    assert attach(client, headers, bad_id, tiles["onnx"]).status_code == 200
    r, report = verify(admin, bad_id, tiles["prep"])
    assert r.returncode == 3
    assert report["parts"][first]["agree"] == report["parts"][first]["pixels"] - 5
    assert report["agree"] == report["pixels"] - 5


# --- refusals ----------------------------------------------------------------------------------

EVIL = "com.example.evil"


def _onnx_with(path: Path, kind: str = "plain") -> Path:
    """A small model of the kit's convention: logits = a 1x1 convolution of msi (its weight an
    initializer). `kind`: ``plain``; ``custom``: the convolution is an operator of a custom
    domain; ``nested``: behind an If whose branch holds a custom operator; ``function``: through a
    model-local function of a custom domain; ``training``: with training information;
    ``external``: the weight kept in a side file."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((14, 4, 1, 1), np.float32), "w")
    msi = helper.make_tensor_value_info("msi", TensorProto.FLOAT, [1, 4, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 14, 32, 32])
    opsets = [helper.make_opsetid("", 17)]
    functions = []
    if kind == "nested":
        inner = helper.make_graph([helper.make_node("Conv", ["msi", "w"], ["y"], domain=EVIL)], "then", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 14, 32, 32])])
        plain = helper.make_graph([helper.make_node("Conv", ["msi", "w"], ["y"])], "else", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 14, 32, 32])])
        cond = numpy_helper.from_array(np.array(True), "cond")
        nodes = [helper.make_node("If", ["cond"], ["logits"], then_branch=inner, else_branch=plain)]
        initializers = [weight, cond]
    elif kind == "function":
        fn = helper.make_function(EVIL, "Mix", ["x", "k"], ["y"], [helper.make_node("Conv", ["x", "k"], ["y"])],
                                  [helper.make_opsetid("", 17)])
        functions = [fn]
        nodes = [helper.make_node("Mix", ["msi", "w"], ["logits"], domain=EVIL)]
        initializers = [weight]
    else:
        nodes = [helper.make_node("Conv", ["msi", "w"], ["logits"], domain=EVIL if kind == "custom" else "")]
        initializers = [weight]
        if kind == "custom":
            opsets.append(helper.make_opsetid(EVIL, 1))
    graph = helper.make_graph(nodes, "g", [msi], [logits], initializer=initializers)
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    if kind == "training":
        model.training_info.add()
    if kind == "external":
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


REFUSED_ONNX = {"custom": f"operator domain '{EVIL}'", "nested": f"'Conv' of the domain '{EVIL}'",
                "function": f"function 'Mix' in the domain '{EVIL}'", "training": "training information",
                "external": "external data file"}


@pytest.mark.parametrize("kind", sorted(REFUSED_ONNX))
def test_an_onnx_file_that_is_not_a_plain_graph_is_refused_before_it_runs(tmp_path, kind):
    path = _onnx_with(tmp_path / "m.onnx", kind)
    with pytest.raises(C2SegError, match=REFUSED_ONNX[kind]) as e:
        model_files.check_onnx(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["custom", "external"])
def test_the_client_and_the_verifier_both_refuse_it(server, tiles, tmp_path, kind):
    client, headers, admin = server
    path = _onnx_with(tmp_path / "m.onnx", kind)
    words = REFUSED_ONNX[kind]
    # the client refuses before a byte is sent (the server here does not even exist)
    r = run_cli(["attach-model", "1", str(path), "--server", "http://127.0.0.1:9", "--token", "t0k"])
    one_line(r, words)
    # the server stores what it is sent without parsing it; the verifier refuses it
    sub_id = submit(client, headers, tiles["pred"])
    assert attach(client, headers, sub_id, path).status_code == 200
    r, _ = verify(admin, sub_id, tiles["prep"])
    one_line(r, words)


def test_a_plain_onnx_graph_passes_and_the_size_is_checked_before_parsing(tmp_path, monkeypatch):
    path = _onnx_with(tmp_path / "plain.onnx")
    assert model_files.check_onnx(path) == ("msi",)
    assert model_files.inspect_model(path).kind == "onnx"

    def no_parse(*a, **k):
        raise AssertionError("parsed a file over the size cap")

    monkeypatch.setattr(onnx, "load", no_parse)
    with pytest.raises(C2SegError, match="larger than the"):
        model_files.check_onnx(path, max_bytes=path.stat().st_size - 1)


class Bomb:
    """Unpickling it creates the file `marker` (a stand-in for running any code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_bomb_is_stored_unexploded_and_refused_by_the_verifier(server, tiles, tmp_path, monkeypatch):
    client, headers, admin = server
    marker = tmp_path / "exploded"
    bomb = tmp_path / "best.pt"
    torch.save({"format": "c2seg-highdan/1", "payload": Bomb(str(marker))}, bomb)
    assert zipfile.is_zipfile(bomb) and not marker.exists()

    def never(*a, **k):
        raise AssertionError("the web process unpickled an attached model")

    for mod, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(mod, name, never)
    sub_id = submit(client, headers, tiles["pred"])
    r = attach(client, headers, sub_id, bomb)
    assert r.status_code == 200 and r.json()["model"]["kind"] == "checkpoint", r.text
    assert not marker.exists()
    monkeypatch.undo()
    r, _ = verify(admin, sub_id, tiles["prep"])  # weights_only in the child: refused, not run
    one_line(r, "is not a readable HighDAN checkpoint")
    assert not marker.exists()


@pytest.mark.parametrize("payload,words", [(b"\x80\x02}q\x00.", "bare pickle"),
                                           (b"GIF89a not a model", "neither a kit checkpoint"),
                                           (b"", "neither a kit checkpoint")])
def test_files_that_are_no_model_are_refused_at_the_door(server, tiles, tmp_path, payload, words):
    client, headers, _ = server
    sub_id = submit(client, headers, tiles["pred"])
    path = tmp_path / "m.bin"
    path.write_bytes(payload)
    r = attach(client, headers, sub_id, path)
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert client.get(f"/api/v1/submissions/{sub_id}", headers=headers).json()["model"] is None
    with pytest.raises(C2SegError, match=words):  # and the client says so before sending it
        model_files.inspect_model(path)


def test_the_client_refuses_a_zip_torch_did_not_write(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(C2SegError, match="damaged"):
        model_files.inspect_model(broken)
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(C2SegError, match="not one torch.save wrote"):
        model_files.inspect_model(other)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(2)}, good)
    assert model_files.inspect_model(good).kind == "checkpoint"


def test_the_model_upload_has_its_own_cap_and_needs_the_token(tmp_path, tiles, pool):
    data = tmp_path / "srv"
    settings = Settings(labels=[tiles["labels"]], data_dir=data, max_model_bytes=4096, **SPLIT)
    with TestClient(create_app(settings, pool=pool)) as client:
        with client.app.state.services.sessions() as s:
            _, token = crud.add_team(s, "alpha")
        headers = {"Authorization": f"Bearer {token}"}
        sub_id = submit(client, headers, tiles["pred"])
        r = attach(client, headers, sub_id, tiles["onnx"])
        assert r.status_code == 413 and "larger than this server accepts" in r.json()["detail"]
        r = attach(client, {}, sub_id, tiles["onnx"])
        assert r.status_code == 401
        assert client.get("/healthz").json()["max_model_bytes"] == 4096
    assert not list((data / "spool").iterdir())
    assert [p.suffix for p in (data / "submissions").iterdir()] == [".h5"]


# --- the verifier's one-line errors ------------------------------------------------------------

def test_verify_explains_a_missing_model_a_missing_extra_and_a_wrong_layout(server, tiles, tmp_path, monkeypatch):
    client, headers, admin = server
    sub_id = submit(client, headers, tiles["pred"])
    r, _ = verify(admin, sub_id, tiles["prep"])
    one_line(r, f"submission {sub_id} has no attached model")
    assert attach(client, headers, sub_id, tiles["onnx"]).status_code == 200

    scene = make_prepared(tmp_path / "scene")
    r, _ = verify(admin, sub_id, scene)
    one_line(r, "holds the test city as scene; the submission holds tiles")

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    r, _ = verify(admin, sub_id, tiles["prep"])
    one_line(r, "needs onnxruntime: pip install 'c2seg-kit[verify]'")


def test_a_changed_stored_model_is_refused(server, tiles, tmp_path):
    client, headers, admin = server
    sub_id = submit(client, headers, tiles["pred"])
    one_line(run_cli([*admin, "fetch", str(sub_id), "--model", "--out", str(tmp_path / "none.pt")]),
             f"submission {sub_id} has no attached model")
    stored = attach(client, headers, sub_id, tiles["ckpt"]).json()
    r = run_cli([*admin, "fetch", str(sub_id), "--model", "--out", str(tmp_path / "got.pt")])
    assert r.returncode == 0 and (tmp_path / "got.pt").read_bytes() == tiles["ckpt"].read_bytes()
    folder = Path(admin[-1]) / "submissions"
    (kept,) = [p for p in folder.iterdir() if p.suffix == ".pt"]
    assert stored["model"]["sha256"] and kept.stat().st_size == tiles["ckpt"].stat().st_size
    kept.write_bytes(kept.read_bytes() + b"x")
    r, _ = verify(admin, sub_id, tiles["prep"])
    one_line(r, "does not match its upload hash")
    r = run_cli([*admin, "fetch", str(sub_id), "--model", "--out", str(tmp_path / "again.pt")])
    one_line(r, "the stored attached model of submission")


# --- a scene track: agreement per block --------------------------------------------------------

def test_a_scene_submission_is_compared_per_block(tmp_path_factory, tmp_path, tiles):
    prep = make_prepared(tmp_path / "prep", target_shape=(40, 36))
    run = tmp_path / "run"
    train(tiny_options(prep, run, steps=1, eval_every=100))
    pred = _predict(run / "last.pt", prep, tmp_path / "pred.h5", "tiny")
    with open_submission(pred) as sub:
        labels = sub.read()
    altered = labels.copy()
    altered[0:3, 0:5] = altered[0:3, 0:5] % 13 + 1  # 15 pixels of block 0,0
    altered[39, 35] = altered[39, 35] % 13 + 1  # 1 pixel of the last block
    write_submission(tmp_path / "altered.h5", altered, "AB")
    labels_file = write_labels_file(tmp_path_factory, labels)
    settings = Settings(labels=[labels_file], data_dir=tmp_path / "srv", **SPLIT)
    with scoring_pool(labels_file, SPLIT) as scene_pool, TestClient(create_app(settings, pool=scene_pool)) as client:
        with client.app.state.services.sessions() as s:
            _, token = crud.add_team(s, "alpha")
        headers = {"Authorization": f"Bearer {token}"}
        sub_id = submit(client, headers, tmp_path / "altered.h5")
        assert attach(client, headers, sub_id, run / "last.pt").status_code == 200
    admin = ["admin", "--db", settings.db_url, "--data-dir", tmp_path / "srv"]
    r, report = verify(admin, sub_id, prep)
    assert r.returncode == 3, r.stderr
    assert report["layout"] == "scene" and report["block"] == 16
    # a naive count per 16 x 16 block of the 40 x 36 scene (3 x 3 blocks, the last ones cut)
    naive = {}
    for bi in range(3):
        for bj in range(3):
            a = altered[bi * 16:(bi + 1) * 16, bj * 16:(bj + 1) * 16]
            b = labels[bi * 16:(bi + 1) * 16, bj * 16:(bj + 1) * 16]
            naive[f"{bi},{bj}"] = (int(sum(x == y for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True))),
                                   a.size)
    assert {p: (v["agree"], v["pixels"]) for p, v in report["parts"].items()} == naive
    assert naive["0,0"] == (256 - 15, 256) and naive["2,2"] == (8 * 4 - 1, 32)
    assert report["agree"] == 40 * 36 - 16


def test_an_onnx_model_of_13_classes_is_run_on_the_caches_values(server, tiles, tmp_path):
    """The convention, checked against a naive computation: a 1x1 convolution of the cache's msi
    values to 13 logits, class = channel + 1, per pixel with numpy."""
    from onnx import TensorProto, helper, numpy_helper

    from c2seg_kit.prepare.cache import PreparedData

    c = tiles["channels"]["msi"]
    weight = np.random.default_rng(4).standard_normal((13, c, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["msi", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("msi", TensorProto.FLOAT, ["n", c, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 13, "h", "w"])],
        initializer=[numpy_helper.from_array(weight, "w")])
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    expected = {}
    with PreparedData(tiles["prep"]) as prepared:
        for tile_id, raster in prepared.target.rasters():
            h, w = raster.shape
            msi = raster.read("msi", 0, h, 0, w)
            expected[tile_id] = (np.einsum("kc,chw->khw", weight[:, :, 0, 0], msi).argmax(axis=0) + 1).astype(np.uint8)
    with tile_submission_writer(tmp_path / "linear.h5", "AB", method="linear", expected_ids=list(expected)) as wr:
        for tile_id, tile in expected.items():
            wr.write_tile(tile_id, tile)
    client, headers, admin = server
    sub_id = submit(client, headers, tmp_path / "linear.h5")
    assert attach(client, headers, sub_id, path).status_code == 200
    r, report = verify(admin, sub_id, tiles["prep"])
    assert r.returncode == 0, r.stderr
    assert report["agreement"] == 1.0 and report["pixels"] == sum(t.size for t in expected.values())


def test_an_onnx_model_for_other_bands_is_refused_before_it_runs(server, tiles, tmp_path):
    """An ONNX input whose channel count is not the prepared cache's: one line naming both."""
    from onnx import TensorProto, helper, numpy_helper

    c = tiles["channels"]["msi"] + 1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["msi", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("msi", TensorProto.FLOAT, ["n", c, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 14, "h", "w"])],
        initializer=[numpy_helper.from_array(np.ones((14, c, 1, 1), np.float32), "w")])
    path = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    client, headers, admin = server
    sub_id = submit(client, headers, tiles["pred"])
    assert attach(client, headers, sub_id, path).status_code == 200
    r, _ = verify(admin, sub_id, tiles["prep"])
    one_line(r, f"the ONNX input 'msi' takes {c} channels; the prepared cache")
