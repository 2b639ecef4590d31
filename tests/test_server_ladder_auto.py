"""The parameter-free Ladder (ladder-auto): the per-unit counts stored with each score, the
jackknife threshold against a naive computation, the answers and the board around the
threshold, the per-track setting, a rescore, a database from before the counts were kept, and
the adaptive attacker in this mode."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest_plugins = ["server_support"]  # its fixtures: labels_file, pool (of the label_array and SPLIT here)
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hostile_files import honest_tile_file, make_tile_target  # noqa: E402

from c2seg_kit.cli import cli  # noqa: E402
from c2seg_kit.metrics import ConfusionMatrix  # noqa: E402
from c2seg_kit.submission import write_submission  # noqa: E402
from c2seg_server import crud, ladder, public_units, stored  # noqa: E402
from c2seg_server.cli import _public_policies  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.main import create_app  # noqa: E402
from c2seg_server.models import PublicUnits, Submission  # noqa: E402
from c2seg_server.scoring import Scorer, public_blocks, public_tiles  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPE = (64, 48)
BLOCK = 8
SPLIT = dict(split_block=BLOCK, split_seed=5, public_fraction=0.5)


@pytest.fixture(scope="module")
def label_array():
    return np.random.default_rng(11).integers(1, 14, SHAPE).astype(np.uint8)


@pytest.fixture
def served(tmp_path, labels_file, pool):
    """(client, sessions, header of team alpha, settings) on a fresh database, track AB in ladder-auto."""
    settings = Settings(labels=[labels_file], data_dir=tmp_path / "data", **SPLIT)
    with TestClient(create_app(settings, pool=pool)) as client:
        sessions = client.app.state.services.sessions
        with sessions() as s:
            _, token = crud.add_team(s, "alpha")
            ladder.record(s, "AB", mode="ladder-auto")
        yield client, sessions, {"Authorization": f"Bearer {token}"}, settings


def noisy(label_array, p, seed):
    rng = np.random.default_rng(seed)
    pred = label_array.copy()
    where = rng.random(SHAPE) < p
    pred[where] = rng.integers(1, 14, int(where.sum()))
    return pred


def upload(client, headers, tmp_path, array):
    path = tmp_path / f"pred{np.random.default_rng().integers(1 << 30)}.h5"
    write_submission(path, array, "AB")
    with open(path, "rb") as f:
        r = client.post("/api/v1/submissions", headers=headers, files={"file": ("p.h5", f, "application/x-hdf5")})
    assert r.status_code == 201, r.text
    return r.json()


# --- an independent computation: blocks in raster order, grouped, a naive jackknife --------------

def naive_groups(seed: int) -> list[list[tuple[int, int]]]:
    """The public blocks (row, column) of the split in raster order, cut into at most 100 runs."""
    grid = public_blocks(SHAPE, "AB", seed=seed, block=BLOCK, fraction=0.5)
    blocks = [(r, c) for r in range(grid.shape[0]) for c in range(grid.shape[1]) if grid[r, c]]
    g = min(len(blocks), 100)
    out: list[list[tuple[int, int]]] = [[] for _ in range(g)]
    for i, b in enumerate(blocks):
        out[i * g // len(blocks)].append(b)
    return out


def naive_miou_without(label, pred, groups, left_out: int | None) -> float:
    cm = ConfusionMatrix()
    for k, group in enumerate(groups):
        if k != left_out:
            for r, c in group:
                sl = np.s_[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK]
                cm.update(label[sl], pred[sl])
    return cm.scores()["miou"]


def naive_se(label, new, best, groups) -> float:
    d = [naive_miou_without(label, new, groups, g) - naive_miou_without(label, best, groups, g)
         for g in range(len(groups))]
    mean = sum(d) / len(d)
    return math.sqrt((len(d) - 1) / len(d) * sum((x - mean) ** 2 for x in d))


def stored_counts(sessions, sub_id):
    with sessions() as s:
        row = s.get(PublicUnits, sub_id)
        return None if row is None else public_units.decode(row.counts)


def exact_public(sessions, sub_id) -> float:
    with sessions() as s:
        return s.get(Submission, sub_id).score("public").miou


# --- the threshold -------------------------------------------------------------------------------

def test_the_threshold_is_the_jackknife_over_the_public_blocks(served, label_array, tmp_path):
    client, sessions, h, _ = served
    a, b = noisy(label_array, 0.3, 1), noisy(label_array, 0.25, 2)
    ra, rb = upload(client, h, tmp_path, a), upload(client, h, tmp_path, b)
    ca, cb = stored_counts(sessions, ra["id"]), stored_counts(sessions, rb["id"])
    groups = naive_groups(SPLIT["split_seed"])
    assert ca.shape == (len(groups), 3, 13) == (24, 3, 13)
    # the stored counts add up to the stored public mIoU
    assert public_units.miou_of(ca) == pytest.approx(exact_public(sessions, ra["id"]), abs=5e-5)
    se = public_units.jackknife_se(cb, ca)
    assert se > 0 and se == pytest.approx(naive_se(label_array, b, a, groups), rel=1e-9)
    own = public_units.jackknife_se(ca)
    zero = np.zeros_like(label_array)  # no class predicted: every leave-one-out mIoU is 0
    assert own == pytest.approx(naive_se(label_array, a, zero, groups), rel=1e-9)


def test_the_counts_do_not_depend_on_how_the_rows_are_read(labels_file, label_array, tmp_path):
    path = write_submission(tmp_path / "p.h5", noisy(label_array, 0.3, 4), "AB")
    split = dict(seed=SPLIT["split_seed"], block=BLOCK, fraction=0.5)
    whole = Scorer({"AB": str(labels_file)}, **split).score(str(path), "AB")
    rows5 = Scorer({"AB": str(labels_file)}, chunk_rows=5, **split).score(str(path), "AB")  # runs across blocks
    assert np.array_equal(public_units.decode(whole["public_units"]), public_units.decode(rows5["public_units"]))
    assert public_units.miou_of(public_units.decode(rows5["public_units"])) == pytest.approx(
        whole["public"]["miou"], abs=5e-5)


def test_tile_tracks_count_public_tiles_as_units(tmp_path):
    target = make_tile_target(tmp_path)
    scorer = Scorer({"AB": str(target.path)}, seed=3, block=BLOCK, fraction=0.5)
    path = honest_tile_file(tmp_path / "sub.h5", target)
    scores = scorer.score(str(path), "AB")
    counts = public_units.decode(scores["public_units"])
    public = sorted(public_tiles(list(target.tiles), "AB", seed=3, fraction=0.5))
    assert counts.shape == (len(public), 3, 13)
    assert public_units.miou_of(counts) == pytest.approx(scores["public"]["miou"], abs=5e-5)
    with __import__("h5py").File(path) as f:  # the first public tile alone, by the metric
        first = f["prediction"][public[0]][()]
    alone = ConfusionMatrix().update(target.tiles[public[0]], first).scores()["miou"]
    assert public_units.miou_of(counts[:1]) == pytest.approx(alone)


def test_stored_counts_refuse_what_does_not_read():
    good = public_units.encode(np.zeros((3, 3, 13), dtype=np.int64))
    assert public_units.decode(good).shape == (3, 3, 13)
    for bad in (b"", b"PU1", good[:-2], b"XX1" + good[3:], good[:3] + b"\x00\x00" + good[5:],
                good[:5] + b"\xff" * 40):
        assert public_units.decode(bad) is None


# --- the answers around the threshold ------------------------------------------------------------

def mixed_change(label_array, base, fix, spoil, seed):
    """`base` with the public blocks `fix` made right and the blocks `spoil` redrawn at random."""
    rng = np.random.default_rng(seed)
    out = base.copy()
    for r, c in fix:
        sl = np.s_[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK]
        out[sl] = label_array[sl]
    for r, c in spoil:
        out[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = rng.integers(1, 14, (BLOCK, BLOCK))
    return out


def test_a_gain_within_the_threshold_shows_the_previous_best_and_one_past_it_moves(served, label_array, tmp_path):
    client, sessions, h, _ = served
    base = noisy(label_array, 0.3, 1)
    first = upload(client, h, tmp_path, base)
    assert first["public_scores"] == "ladder" and first["ladder_rule"] == "standard error"
    assert first["ladder_moved"] is True and first["scores"]["oa"] is None
    shown = first["scores"]["miou"]
    assert round(shown * 1000, 6) % 1 == 0  # on the 0.001 grid
    # a gain made of three regions fixed and one spoilt: above the shown value, but noise
    blocks = [b for group in naive_groups(SPLIT["split_seed"]) for b in group]
    small = mixed_change(label_array, base, blocks[:3], blocks[10:11], 0)
    r = upload(client, h, tmp_path, small)
    gain = exact_public(sessions, r["id"]) - shown
    se = public_units.jackknife_se(stored_counts(sessions, r["id"]), stored_counts(sessions, first["id"]))
    assert 0 < gain <= se  # it beats the shown value, by less than the threshold
    assert r["ladder_moved"] is False and r["scores"]["miou"] == shown and not r["best_public"]
    board = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()
    assert board["public_scores"] == "ladder" and board["ladder_rule"] == "standard error"
    assert board["ladder_step"] is None
    [entry] = board["entries"]
    assert entry["public"]["miou"] == shown and entry["created"] == first["created"]
    # a gain spread over the whole public part: past the threshold, the shown value moves
    better = noisy(label_array, 0.15, 3)
    m = upload(client, h, tmp_path, better)
    gain = exact_public(sessions, m["id"]) - shown
    se = public_units.jackknife_se(stored_counts(sessions, m["id"]), stored_counts(sessions, first["id"]))
    assert gain > se > 0
    assert m["ladder_moved"] is True and m["best_public"] is True
    assert m["scores"]["miou"] == pytest.approx(round(exact_public(sessions, m["id"]), 3))
    client.app.state.services.boards.invalidate()
    [entry] = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()["entries"]
    assert entry["public"]["miou"] == m["scores"]["miou"] and entry["created"] == m["created"]
    page = client.get("/", params={"track": "AB"})
    assert "parameter-free" in page.text
    # the budget: three answers, two moves, on the 0.001 grid
    with sessions() as s:
        a = ladder.team_answers(s, 1, "AB", ladder.read_policy(s, "AB"))
    assert (a.answers, a.moves) == (3, 2) and a.bits == pytest.approx(math.log2(3) + 2 * math.log2(1001))


def test_the_rule_falls_back_to_the_step_without_counts():
    rows = [(1, 1, 0.30, False), (2, 2, 0.315, False), (3, 3, 0.32, False)]
    policy = ladder.Policy(mode="ladder-auto", step=0.01)
    a = ladder.answers_of(rows, policy)  # no counts at all: the fixed step, values on the 0.001 grid
    assert a.shown == {1: (0.3, True), 2: (0.315, True), 3: (0.315, False)}
    c = np.zeros((4, 3, 13), dtype=np.int64)
    c[:, :, 0] = [[1, 2, 2], [9, 10, 10], [1, 8, 8], [5, 5, 5]]  # class 1 only: (tp, predicted, true) per unit
    other = c.copy()
    other[0, :, 0] = [2, 2, 2]
    se = public_units.jackknife_se(other, c)
    assert se > 0 and ladder.threshold(other, c, 0.01, started=True) == se
    assert ladder.threshold(c, None, 0.01, started=False) == public_units.jackknife_se(c)  # the first: its own
    assert ladder.threshold(None, c, 0.01, started=True) == 0.01  # the new one has none
    assert ladder.threshold(c, None, 0.01, started=True) == 0.01  # the best has none
    assert ladder.threshold(c[:3], c, 0.01, started=True) == 0.01  # not the same units
    assert ladder.threshold(c[:1], None, 0.01, started=False) == 0.01  # one unit: no error to estimate


# --- settings, rescore, an older database ---------------------------------------------------------

def test_serve_sets_ladder_auto_per_track():
    tracks = {"AB": None, "BW": None}
    got = _public_policies(tracks, ("ladder-auto", "BW=ladder"), ("BW=0.02",), ())
    assert got == {"AB": {"mode": "ladder-auto"}, "BW": {"mode": "ladder", "step": 0.02}}
    auto, fixed = ladder.Policy(mode="ladder-auto"), ladder.Policy(mode="ladder", step=0.02)
    assert auto.ladder and auto.auto and auto.grid == 0.001 and auto.rule == "standard error"
    assert fixed.ladder and not fixed.auto and fixed.grid == 0.02 and fixed.rule == "fixed step"
    assert ladder.bits(auto, 10, 2) == pytest.approx(math.log2(45) + 2 * math.log2(1001))


def test_a_rescore_recomputes_the_counts_on_the_new_split(served, label_array, tmp_path):
    client, sessions, h, settings = served
    pred = noisy(label_array, 0.3, 1)
    r = upload(client, h, tmp_path, pred)
    before = stored_counts(sessions, r["id"]).copy()
    with sessions() as s:
        s.delete(s.get(PublicUnits, r["id"]))
        s.commit()
    assert stored_counts(sessions, r["id"]) is None
    result = CliRunner().invoke(cli, ["admin", "--db", settings.db_url, "rescore", "--labels",
                                      str(settings.labels[0]), "--scoring-workers", "1"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(stored_counts(sessions, r["id"]), before)  # the same split: the same counts
    result = CliRunner().invoke(cli, ["admin", "--db", settings.db_url, "rescore", "--labels",
                                      str(settings.labels[0]), "--scoring-workers", "1", "--new-split-seed"])
    assert result.exit_code == 0, result.output
    with sessions() as s:
        seed = stored.read_split(s).seed
    after = stored_counts(sessions, r["id"])
    groups = naive_groups(seed)
    assert after.shape[0] == len(groups) and not np.array_equal(after, before)
    for g in (0, len(groups) - 1):  # each group's counts are those of its blocks on the new split
        only = [grp if k == g else [] for k, grp in enumerate(groups)]
        assert public_units.miou_of(after[g:g + 1]) == pytest.approx(naive_miou_without(label_array, pred, only, None))


def test_an_older_database_falls_back_to_the_step_and_says_so(served, label_array, tmp_path, monkeypatch, capsys):
    client, sessions, h, settings = served
    old = upload(client, h, tmp_path, noisy(label_array, 0.3, 1))
    with sessions() as s:  # as a database from before the counts were kept
        old_counts = s.get(PublicUnits, old["id"]).counts
        s.query(PublicUnits).delete()
        s.commit()
    with sessions() as s:
        ladder.record(s, "AB", step=0.2)
    # a gain past its standard error, but not past the step: the best has no counts, so the step decides
    better = noisy(label_array, 0.15, 3)
    r = upload(client, h, tmp_path, better)
    gain = exact_public(sessions, r["id"]) - old["scores"]["miou"]
    se = public_units.jackknife_se(stored_counts(sessions, r["id"]), public_units.decode(old_counts))
    assert se < gain <= 0.2
    assert r["ladder_moved"] is False and r["scores"]["miou"] == old["scores"]["miou"]
    # `serve` says so in one line
    import uvicorn
    from cli_support import run_cli
    from live_server import free_port

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    for key in ("LABELS", "DATA_DIR", "DATABASE_URL", "SCORING_WORKERS", "QUOTA_PER_DAY",
                "MAX_CONNECTIONS_PER_CLIENT", "MAX_UPLOAD_BYTES"):
        monkeypatch.setenv(f"C2SEG_{key}", "")
        monkeypatch.delenv(f"C2SEG_{key}")
    code, _, err = run_cli(capsys, "serve", "--labels", settings.labels[0], "--db", settings.db_url,
                           "--data-dir", settings.data_dir, "--port", free_port())
    assert code in (0, None), err
    assert "track AB: public scores ladder-auto" in err
    lines = [line for line in err.splitlines() if "per-unit counts" in line]
    assert lines == ["track AB: 1 submission(s) were scored before per-unit counts were kept: ladder-auto compares "
                     "them with the fixed step (0.2) until `c2seg admin rescore` computes their counts"]
    listing = CliRunner().invoke(cli, ["admin", "--db", settings.db_url, "list-teams", "--json"])
    [team] = json.loads(listing.stdout)
    assert team["leak"]["AB"]["mode"] == "ladder-auto" and team["leak"]["AB"]["answers"] == 2
    text = CliRunner().invoke(cli, ["admin", "--db", settings.db_url, "list-teams"]).stdout
    assert "(ladder-auto)" in text


# --- the attacker --------------------------------------------------------------------------------

def _bench():
    spec = importlib.util.spec_from_file_location("ladder_attack", HERE.parent / "bench" / "ladder_attack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ladder_attack", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_parameter_free_ladder_keeps_the_attackers_climb_within_the_bound():
    bench = _bench()
    r, exact = bench.simulate("ladder-auto", submissions=200), bench.simulate("exact", submissions=200)
    bound = ladder.overfit_bound(r.bits, r.public_units, r.grid)
    assert r.grid == 0.001 and bound < 0.15
    assert r.shown[-1] - r.private[-1] <= bound
    assert r.shown[-1] - r.shown[0] < (exact.shown[-1] - exact.shown[0]) / 2
    assert abs(r.private[-1] - r.baseline_private) < 0.004
    assert r.bits < ladder.bits(ladder.Policy(), 1, 0)


def test_leaderboard_command_says_the_bar_is_the_standard_error(monkeypatch):
    from c2seg_kit import client
    from c2seg_kit.cli.participant import leaderboard

    board = {"track": "AB", "phase": "open", "ranked_by": "public", "public_scores": "ladder", "ladder_step": None,
             "ladder_rule": "standard error",
             "entries": [{"rank": 1, "team": "alpha", "baseline": False, "submissions": 3, "public": {
                 "miou": 0.42, "oa": None, "f1": None, "kappa": None, "per_class_iou": {}, "n_pixels": 9}}]}
    monkeypatch.setattr(client, "leaderboard", lambda track, server: board)
    result = CliRunner().invoke(leaderboard, ["--track", "AB"])
    assert result.exit_code == 0, result.output
    assert "beats it by more than the standard error of their difference" in result.output
    assert "None" not in result.output
