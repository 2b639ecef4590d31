"""Ladder mode for the public board and the leak budget: the rule, the bound, an adaptive
attacker in both modes (a simulation through the server's own split and scores), the API's
answers in ladder mode, the leak cap and `c2seg admin list-teams`."""

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

from c2seg_kit.cli import cli  # noqa: E402
from c2seg_kit.errors import C2SegError  # noqa: E402
from c2seg_kit.submission import write_submission  # noqa: E402
from c2seg_server import crud, ladder, organizer, phases  # noqa: E402
from c2seg_server.cli import _public_policies  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.main import create_app  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPE = (64, 48)
SPLIT = dict(split_block=8, split_seed=5, public_fraction=0.5)


def _bench():
    spec = importlib.util.spec_from_file_location("ladder_attack", HERE.parent / "bench" / "ladder_attack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ladder_attack", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- the rule and the accounting ---------------------------------------------------------------

def test_ladder_moves_only_past_the_step_and_rounds_to_it():
    got = ladder.ladder([0.004, 0.3131, 0.32, 0.3232, 0.2, None, 0.5049], 0.01)
    assert got == [(0.0, False), (0.31, True), (0.31, False), (0.32, True), (0.32, False), (0.32, False),
                   (0.5, True)]


def test_answers_leave_hidden_submissions_off_the_shown_value_but_count_them():
    rows = [(1, 1, 0.30, False), (2, 2, 0.50, True), (3, 3, 0.35, False)]
    a = ladder.answers_of(rows, ladder.Policy(mode="ladder", step=0.01))
    assert a.shown == {1: (0.3, True), 3: (0.35, True)} and a.best_id == 3
    assert (a.answers, a.moves, a.distinct) == (3, 2, 2)  # the team saw 0.3, 0.5, 0.5
    assert a.seen == {1: (0.3, True), 2: (0.5, True), 3: (0.5, False)}
    assert a.bits == pytest.approx(math.log2(3) + 2 * math.log2(101))
    since = ladder.answers_of(rows, ladder.Policy(mode="ladder"), since=2)
    assert (since.answers, since.moves) == (2, 1)


def test_bits_exact_answers_cost_far_more_than_ladder_ones():
    exact, lad = ladder.Policy(), ladder.Policy(mode="ladder", step=0.01)
    assert ladder.bits(exact, 10, 0) == pytest.approx(10 * ladder.FIGURES * math.log2(10001))
    assert ladder.bits(lad, 10, 0) == 0.0  # the same answer ten times tells nothing new
    assert ladder.bits(lad, 10, 2) == pytest.approx(math.log2(45) + 2 * math.log2(101))
    assert ladder.bits(lad, 0, 0) == ladder.bits(exact, 0, 0) == 0.0


def test_serve_options_per_track_and_one_line_errors():
    tracks = {"AB": None, "BW": None}
    got = _public_policies(tracks, ("ladder", "BW=exact"), ("AB=0.02",), ("AB=64",))
    assert got == {"AB": {"mode": "ladder", "step": 0.02, "cap": 64.0}, "BW": {"mode": "exact"}}
    assert _public_policies(tracks, (), (), ()) == {}
    assert _public_policies(tracks, (), (), ("none",)) == {"AB": {"cap": None}, "BW": {"cap": None}}
    for args, says in [((("fancy",), (), ()), "not a mode"), ((("XX=ladder",), (), ()), "unknown track 'XX'"),
                       (((), ("0",), ()), "above 0"), (((), ("abc",), ()), "--ladder-step"),
                       (((), (), ("-3",)), "positive number of bits")]:
        with pytest.raises(C2SegError, match=says):
            _public_policies(tracks, *args)


# --- the attacker ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def attacks():
    bench = _bench()
    return {m: bench.simulate(m, submissions=250) for m in ladder.MODES}


def test_exact_mode_lets_the_attacker_climb_the_public_board_only(attacks):
    r = attacks["exact"]
    # the public answers climb well above the random-guess baseline ...
    # (mIoU of a random guess over 13 classes is about 0.04: a climb of a third of that)
    assert r.shown[-1] > r.baseline_public + 0.012
    assert r.shown[-1] > r.shown[0] + 0.012
    # ... while the private score (data the attacker got no answer about) stays at chance
    assert abs(r.private[-1] - r.baseline_private) < 0.004


def test_ladder_mode_keeps_the_public_climb_within_the_bound(attacks):
    r, exact = attacks["ladder"], attacks["exact"]
    bound = ladder.overfit_bound(r.bits, r.public_units, r.step)
    assert bound < 0.1  # a bound that says something
    # what the attacker is shown exceeds what its prediction is worth on fresh data by at most the bound
    assert r.shown[-1] - r.private[-1] <= bound
    assert r.shown[-1] - r.shown[0] < (exact.shown[-1] - exact.shown[0]) / 2
    assert abs(r.private[-1] - r.baseline_private) < 0.004
    assert r.bits < ladder.bits(ladder.Policy(), 1, 0)  # the whole run leaks less than one exact answer


# --- the API -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def label_array():
    return np.random.default_rng(11).integers(1, 14, SHAPE).astype(np.uint8)


@pytest.fixture
def served(tmp_path, labels_file, pool):
    """(client, sessions, header of team alpha, database URL) on a fresh database."""
    settings = Settings(labels=[labels_file], data_dir=tmp_path / "data", **SPLIT)
    with TestClient(create_app(settings, pool=pool)) as client:
        sessions = client.app.state.services.sessions
        with sessions() as s:
            _, token = crud.add_team(s, "alpha")
        yield client, sessions, {"Authorization": f"Bearer {token}"}, settings.db_url


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
        return client.post("/api/v1/submissions", headers=headers, files={"file": ("p.h5", f, "application/x-hdf5")})


def test_ladder_mode_answers_the_previous_best_to_an_upload_that_does_not_beat_it(served, label_array, tmp_path):
    client, sessions, h, _ = served
    with sessions() as s:
        ladder.record(s, "AB", mode="ladder", step=0.05)
    good = upload(client, h, tmp_path, noisy(label_array, 0.3, 1))
    assert good.status_code == 201, good.text
    g = good.json()
    assert g["public_scores"] == "ladder" and g["ladder_moved"] is True and g["best_public"] is True
    assert g["scores"]["miou"] > 0.5 and round(g["scores"]["miou"] / 0.05, 6) % 1 == 0  # on the step's grid
    assert g["scores"]["oa"] is None and g["scores"]["per_class_iou"] == {}  # nothing else of the public part
    worse = upload(client, h, tmp_path, noisy(label_array, 0.5, 2)).json()
    slightly = upload(client, h, tmp_path, noisy(label_array, 0.29, 3)).json()
    for w in (worse, slightly):  # the previous best again
        assert w["scores"]["miou"] == g["scores"]["miou"] and w["ladder_moved"] is False and not w["best_public"]
    board = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()
    assert board["public_scores"] == "ladder" and board["ladder_step"] == 0.05
    [entry] = board["entries"]
    assert entry["public"]["miou"] == g["scores"]["miou"] and entry["public"]["kappa"] is None
    assert entry["submissions"] == 3
    mine = client.get("/api/v1/submissions", headers=h).json()
    assert {m["scores"]["miou"] for m in mine} == {g["scores"]["miou"]}
    # a submission the organizers hide leaves the board's Ladder value; its own answer stays what it was
    with sessions() as s:
        organizer.set_hidden(s, g["id"], True)
    client.app.state.services.boards.invalidate()
    [entry] = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()["entries"]
    assert entry["created"] != g["created"] and entry["submissions"] == 2
    assert entry["public"]["miou"] > 0.3 and round(entry["public"]["miou"] / 0.05, 6) % 1 == 0
    assert client.get(f"/api/v1/submissions/{g['id']}", headers=h).json()["scores"]["miou"] == g["scores"]["miou"]
    page = client.get("/", params={"track": "AB"})
    assert page.status_code == 200 and "Public scores: Ladder (step 0.05)" in page.text
    # private scores are computed as always; once final everything shows exactly
    with sessions() as s:
        phases.schedule(s, "AB", "final")
    client.app.state.services.boards.invalidate()
    final = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()
    assert final["public_scores"] == "exact" and final["entries"][0]["public"]["oa"] is not None
    assert final["entries"][0]["private"]["miou"] is not None
    one = client.get(f"/api/v1/submissions/{worse['id']}", headers=h).json()
    assert one["public_scores"] == "exact" and one["scores"]["miou"] < g["scores"]["miou"]


def test_exact_mode_is_the_default(served, label_array, tmp_path):
    client, _, h, _ = served
    r = upload(client, h, tmp_path, noisy(label_array, 0.3, 1)).json()
    assert r["public_scores"] == "exact" and r["ladder_moved"] is None and r["scores"]["oa"] is not None
    assert client.get("/api/v1/leaderboard", params={"track": "AB"}).json()["public_scores"] == "exact"


def test_leak_cap_refuses_uploads_once_the_budget_is_spent(served, label_array, tmp_path):
    client, sessions, h, _ = served
    with sessions() as s:
        ladder.record(s, "AB", cap=100.0)  # exact mode: one answer is about 240 bits
    assert upload(client, h, tmp_path, noisy(label_array, 0.3, 1)).status_code == 201
    r = upload(client, h, tmp_path, noisy(label_array, 0.3, 2))
    assert r.status_code == 429 and "leak budget" in r.json()["detail"] and "of 100 bits" in r.json()["detail"]
    # a new phase starts a new budget
    with sessions() as s:
        phases.schedule(s, "AB", "closed")
        phases.schedule(s, "AB", "open")
    assert upload(client, h, tmp_path, noisy(label_array, 0.3, 3)).status_code == 201
    with sessions() as s:  # ladder answers cost little: the same cap lets many through
        ladder.record(s, "AB", mode="ladder", step=0.01)
    for seed in range(4, 7):
        assert upload(client, h, tmp_path, noisy(label_array, 0.6, seed)).status_code == 201


def test_admin_list_teams_shows_the_leak_budget(served, label_array, tmp_path):
    client, sessions, h, db_url = served
    with sessions() as s:
        ladder.record(s, "AB", mode="ladder", step=0.05, cap=500.0)
    for seed, p in ((1, 0.3), (2, 0.5), (3, 0.5)):
        assert upload(client, h, tmp_path, noisy(label_array, p, seed)).status_code == 201
    result = CliRunner().invoke(cli, ["admin", "--db", db_url, "list-teams", "--json"])
    assert result.exit_code == 0, result.output
    [team] = json.loads(result.stdout)
    assert team["leak"] == {"AB": {"mode": "ladder", "answers": 3, "distinct": 1, "cap_bits": 500.0,
                                   "bits": round(math.log2(3) + math.log2(21), 1)}}
    text = CliRunner().invoke(cli, ["admin", "--db", db_url, "list-teams"])
    assert text.exit_code == 0 and "AB: 3, 1, 6/500" in text.stdout


def test_submit_prints_the_ladder_value_and_whether_it_moved(capsys):
    from c2seg_kit.cli.participant import print_scores

    base = {"id": 4, "track": "AB", "team": "alpha", "public_scores": "ladder",
            "scores": {"miou": 0.31, "oa": None, "f1": None, "kappa": None, "per_class_iou": {}, "n_pixels": 9}}
    print_scores({**base, "ladder_moved": False})
    out = capsys.readouterr().out
    assert "public mIoU (ladder) 0.3100, unchanged: your previous best" in out and "OA" not in out
    print_scores({**base, "ladder_moved": True})
    assert "moved by this submission" in capsys.readouterr().out


def test_serve_records_the_mode_per_track_and_keeps_it_when_not_given(tmp_path, labels_file, monkeypatch, capsys):
    """`serve` runs in-process with uvicorn.run replaced: everything it records happens before it."""
    import uvicorn
    from cli_support import run_cli
    from live_server import free_port

    from c2seg_server.db import make_engine, make_sessionmaker

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    for key in ("LABELS", "DATA_DIR", "DATABASE_URL", "SCORING_WORKERS", "QUOTA_PER_DAY",
                "MAX_CONNECTIONS_PER_CLIENT", "MAX_UPLOAD_BYTES"):  # serve sets these for its workers: undone after
        monkeypatch.setenv(f"C2SEG_{key}", "")
        monkeypatch.delenv(f"C2SEG_{key}")
    monkeypatch.setenv("C2SEG_SPLIT_BLOCK", "8")  # the tiny labels hold several blocks
    db = f"sqlite:///{tmp_path / 'board.db'}"

    def serve(*args):
        return run_cli(capsys, "serve", "--labels", labels_file, "--db", db, "--data-dir", tmp_path / "d",
                       "--port", free_port(), *args)

    def policy():
        engine = make_engine(db)
        with make_sessionmaker(engine)() as s:
            got = ladder.read_policy(s, "AB")
        engine.dispose()
        return got

    code, _, err = serve("--public-scores", "AB=ladder", "--ladder-step", "0.02", "--leak-cap-bits", "80")
    assert code in (0, None), err
    assert policy() == ladder.Policy(mode="ladder", step=0.02, leak_cap_bits=80.0)
    assert "track AB: public scores ladder (step 0.02), leak cap 80 bits per team and phase" in err
    code, _, err = serve()  # nothing given: the recorded settings hold
    assert code in (0, None) and policy() == ladder.Policy(mode="ladder", step=0.02, leak_cap_bits=80.0)
    code, _, err = serve("--public-scores", "exact", "--leak-cap-bits", "none")
    assert code in (0, None) and policy() == ladder.Policy(mode="exact", step=0.02, leak_cap_bits=None)
    code, out, err = serve("--public-scores", "AB=sometimes")
    assert code == 1 and "--public-scores: 'sometimes' is not a mode" in err and "Traceback" not in err + out


def test_leaderboard_command_says_the_board_is_a_ladder(monkeypatch, capsys):
    from c2seg_kit import client
    from c2seg_kit.cli.participant import leaderboard

    board = {"track": "AB", "phase": "open", "ranked_by": "public", "public_scores": "ladder", "ladder_step": 0.02,
             "entries": [{"rank": 1, "team": "alpha", "baseline": False, "submissions": 3, "public": {
                 "miou": 0.42, "oa": None, "f1": None, "kappa": None, "per_class_iou": {}, "n_pixels": 9}}]}
    monkeypatch.setattr(client, "leaderboard", lambda track, server: board)
    result = CliRunner().invoke(leaderboard, ["--track", "AB"])
    assert result.exit_code == 0, result.output
    assert "Ladder value (it moves only when a submission beats it by more than 0.02)" in result.output
    assert "0.4200" in result.output
