"""Promise 1: the hidden labels never leave the server.

A real `c2seg serve` runs on loopback with a Berlin-sized labels file. Every hostile upload is
aimed at that very file (its absolute path, its data offset); read naively (h5py following
links), the files that leak really do yield the hidden labels, and the server refuses each one
with its own reason, scores nothing and quotes nothing of the labels.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from hostile_files import LINKS, naive_read  # noqa: E402
from live_server import live_server_fixtures, noisy_prediction, upload  # noqa: E402
from sklearn.metrics import cohen_kappa_score, f1_score  # noqa: E402

from c2seg_kit.classes import CLASS_NAMES  # noqa: E402
from c2seg_kit.submission.writers import write_submission  # noqa: E402

BLOCK = 64


target, server, client = live_server_fixtures(
    env={"C2SEG_SPLIT_BLOCK": str(BLOCK), "C2SEG_SPLIT_SEED": "11"})


@pytest.fixture(scope="module")
def team(server):
    return server.add_team("prober")


def leaked_content(detail: str, target) -> list[str]:
    """Pieces of a message that would tell something about the labels file or its content."""
    found = [s for s in (target.path.name, str(target.path.parent), "SECRET", "labels/1", "label'") if s in detail]
    # A run of class ids (as a label row would be quoted) is content, too.
    row = " ".join(str(int(v)) for v in target.label[0, :6])
    return found + ([row] if row in detail else [])


@pytest.mark.parametrize("kind", LINKS, ids=[h.name for h in LINKS])
def test_files_reaching_outside_are_refused_without_a_score(kind, tmp_path, target, server, client, team):
    path = kind.build(tmp_path / "hostile.h5", target)
    naive = naive_read(path)
    if kind.leaks:  # the attack is real: a careless reader would score the hidden labels themselves
        assert naive is not None and naive.dtype == np.uint8 and np.array_equal(naive, target.label)

    before = client.get("/api/v1/me", headers={"Authorization": f"Bearer {team}"}).json()
    r = upload(client, team, path)
    assert r.status_code == kind.status, r.text
    detail = r.json()["detail"]
    assert re.search(kind.reason, detail), detail
    assert "\n" not in detail and leaked_content(detail, target) == []

    # Nothing was scored: no submission, no quota used; the refusal is counted as a failed attempt.
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {team}"}).json()
    assert client.get("/api/v1/submissions", headers={"Authorization": f"Bearer {team}"}).json() == []
    assert me["quota"][0]["used_today"] == 0
    assert me["failed_today"] == before["failed_today"] + 1
    assert client.get("/api/v1/leaderboard", params={"track": "AB"}).json()["entries"] == []
    assert client.get("/healthz").status_code == 200


def test_the_plugin_search_path_is_empty_in_the_reader():
    # An unknown filter must never make HDF5 load code from disk: the reader's module empties
    # HDF5's plugin search path for the whole process (and so for every scoring child).
    import subprocess
    import sys

    code = "import h5py.h5pl as p; n0 = p.size(); import c2seg_kit.h5safe; print(n0, p.size())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"HDF5_PLUGIN_PATH": "/tmp/c2seg-no-such-plugins:/usr/lib", "PATH": "/usr/bin"}).stdout
    before, after = map(int, out.split())
    assert before >= 1 and after == 0


def mask_public(shape, seed, block, fraction=0.5):
    from c2seg_server.scoring import public_mask

    return public_mask(shape, "AB", seed=seed, block=block, fraction=fraction)


def naive_scores(label, pred, keep):
    """Per-class IoU and OA by plain counting, over the pixels in `keep` with a label."""
    evaluated = keep & (label > 0)
    lab, prd = label[evaluated].astype(int), pred[evaluated].astype(int)
    iou = {}
    for c, name in enumerate(CLASS_NAMES, start=1):
        tp = int(np.sum((lab == c) & (prd == c)))
        fp = int(np.sum((lab != c) & (prd == c)))
        fn = int(np.sum((lab == c) & (prd != c)))
        iou[name] = None if tp + fp + fn == 0 else tp / (tp + fp + fn)
    defined = [v for v in iou.values() if v is not None]
    return {"oa": float(np.mean(lab == prd)), "miou": float(np.mean(defined)), "per_class_iou": iou,
            "n_pixels": int(evaluated.sum())}


def test_scores_are_rounded_and_only_from_the_public_part(tmp_path, target, server, client):
    token = server.add_team("rounder")
    public = mask_public(target.shape, seed=11, block=BLOCK)
    blocks = public[::BLOCK, ::BLOCK]  # one value per block: half of them public
    assert blocks.sum() == round(0.5 * blocks.size)

    pred = noisy_prediction(target.label, seed=5, wrong=0.35)
    r = upload(client, token, write_submission(tmp_path / "a.h5", pred, "AB"))
    assert r.status_code == 201, r.text
    got = r.json()["scores"]
    assert r.json()["private_scores"] is None
    want = naive_scores(target.label, pred, public)
    assert got["n_pixels"] == want["n_pixels"]
    assert got["oa"] == pytest.approx(want["oa"], abs=5e-5)
    assert got["miou"] == pytest.approx(want["miou"], abs=5e-5)
    evaluated = public & (target.label > 0)
    y, q = target.label[evaluated], pred[evaluated]
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, q, labels=list(range(14))), abs=5e-5)
    present = sorted((set(y.tolist()) | set(q.tolist())) - {0})
    assert got["f1"] == pytest.approx(f1_score(y, q, labels=present, average="macro"), abs=5e-5)
    for name, v in want["per_class_iou"].items():
        assert got["per_class_iou"][name] == (None if v is None else pytest.approx(v, abs=5e-5))
    # Rounded to 4 decimals: nothing finer leaves the server.
    numbers = [got[k] for k in ("oa", "miou", "f1", "kappa")] + [v for v in got["per_class_iou"].values() if v is not None]
    assert all(round(x, 4) == x for x in numbers)
    assert "confusion_matrix" not in got

    # Changing only private pixels (even making them all perfect) changes nothing visible.
    pred2 = pred.copy()
    pred2[~public] = target.label[~public]
    r2 = upload(client, token, write_submission(tmp_path / "b.h5", pred2, "AB"))
    assert r2.status_code == 201, r2.text
    assert r2.json()["scores"] == got
    # ... while one public block changed does show: the split really is by position.
    pred3 = pred.copy()
    r0, c0 = np.argwhere(public)[0]
    pred3[r0:r0 + BLOCK, c0:c0 + BLOCK] = target.label[r0:r0 + BLOCK, c0:c0 + BLOCK]
    r3 = upload(client, token, write_submission(tmp_path / "c.h5", pred3, "AB"))
    want3 = naive_scores(target.label, pred3, public)
    assert want3["oa"] > want["oa"]
    assert r3.json()["scores"]["oa"] == pytest.approx(want3["oa"], abs=5e-5)
