"""Schemathesis against the app's own OpenAPI document: every operation, generated inputs
(valid and invalid), no 5xx, responses that match the declared schemas and status codes.

Small by default so it fits CI; C2SEG_SCHEMATHESIS_EXAMPLES raises the count for a longer run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402
from c2seg_server import crud  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.main import create_app, make_pool, served_tracks  # noqa: E402

EXAMPLES = int(os.environ.get("C2SEG_SCHEMATHESIS_EXAMPLES", "15"))
#: The routes docs/api.md promises that clients rely on (the app may serve more).
FIXED_API = {("POST", "/api/v1/submissions"), ("GET", "/api/v1/submissions/{submission_id}"),
             ("GET", "/api/v1/leaderboard"), ("GET", "/healthz")}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """(schema, auth headers): the app with one team and one scored submission."""
    tmp = tmp_path_factory.mktemp("schema")
    lab = np.random.default_rng(0).integers(0, 14, (40, 30)).astype(np.uint8)
    write_labels(tmp / "labels.h5", lab, "AB")
    s = Settings(labels=[tmp / "labels.h5"], data_dir=tmp / "data", scoring_workers=1, split_block=8,
                 quota_per_day=1000, failed_per_day=100000)
    with make_pool(s, served_tracks(s.labels)) as pool:
        app = create_app(s, pool=pool)
        with app.state.services.sessions() as sess:
            _, token = crud.add_team(sess, "schemathesis")
        auth = {"Authorization": f"Bearer {token}"}
        # one real submission, so GET /submissions/{id} has something to find
        write_submission(tmp / "p.h5", lab, "AB")
        from fastapi.testclient import TestClient

        with TestClient(app) as c:
            r = c.post("/api/v1/submissions", headers=auth, files={"file": ("p.h5", (tmp / "p.h5").read_bytes())})
            assert r.status_code == 201
        yield schemathesis.openapi.from_asgi("/openapi.json", app), auth


def operations(schema):
    """Every operation of the app's OpenAPI document, each once (none skipped by schemathesis)."""
    ops = [result.ok() for result in schema.get_all_operations()]
    doc = schema.raw_schema["paths"]
    assert sorted((op.method.upper(), op.path) for op in ops) == sorted((m.upper(), p) for p in doc for m in doc[p])
    assert {(op.method.upper(), op.path) for op in ops} >= FIXED_API
    return ops


def without_inputs(schema) -> set[tuple[str, str]]:
    """The operations with no parameters and no body: nothing for a negative case to break."""
    doc = schema.raw_schema["paths"]
    return {(m.upper(), p) for p in doc for m, op in doc[p].items() if not op.get("parameters") and not op.get("requestBody")}


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_conforms_to_its_schema(api, mode):
    """Generated requests (schema-valid, then schema-invalid) with a valid token: never a 5xx,
    and every response matches the declared status codes and bodies."""
    schema, auth = api
    tested, unsatisfiable = set(), set()
    for op in operations(schema):

        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # Any bytes are a schema-valid `file`; most are rightly refused (422) as not a
            # submission or not a model, so "valid data is accepted" does not apply to uploads.
            upload = op.method.upper() == "POST" or op.path.endswith("/model")
            excluded = [positive_data_acceptance] if upload else []
            case.call_and_validate(headers=auth, excluded_checks=excluded)

        try:
            check()
            tested.add((op.method.upper(), op.path))
        except Unsatisfiable:  # nothing to make invalid: an operation without inputs (negative mode)
            unsatisfiable.add((op.method.upper(), op.path))
    # Positive: every operation ran. Negative: every operation with an input to break ran.
    assert unsatisfiable == (without_inputs(schema) if mode == "negative" else set())
    assert tested == {(op.method.upper(), op.path) for op in operations(schema)} - unsatisfiable


def test_api_without_a_token_never_errors(api):
    schema, _ = api
    for op in operations(schema):

        @given(case=op.as_strategy())
        @settings(max_examples=max(3, EXAMPLES // 3), deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case):
            response = case.call()
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                detail = response.json()["detail"]
                assert isinstance(detail, str) and detail

        check()
