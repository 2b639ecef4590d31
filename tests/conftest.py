"""Shared fixtures: tiny synthetic cities in the real layouts, and their prepared caches.

Everything is generated from seeds at test time (c2seg_kit.synth.scenes), so no data is committed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# server_support and site_support are also plugins (test modules name them in pytest_plugins, for
# their fixtures): rewritten when first imported, so that pytest can load them without a warning
pytest.register_assert_rewrite("server_support", "site_support")

# keep torch and BLAS from oversubscribing CI's 2 cores when tests run in one process
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synth_ab(tmp_path_factory):
    """A tiny AB pair (MATLAB v5): Augsburg ~89x136, Berlin ~246x81, plus labels.h5."""
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth.scenes import synthesize

    out = tmp_path_factory.mktemp("synth_ab")
    synthesize(out, TRACKS["AB"], scale=0.1, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_bw(tmp_path_factory):
    """A tiny BW pair (MATLAB v7.3, HSI at 1/3): Beijing ~269x174, Wuhan ~125x173, plus labels.h5."""
    from c2seg_kit.registry import TRACKS
    from c2seg_kit.synth.scenes import synthesize

    out = tmp_path_factory.mktemp("synth_bw")
    synthesize(out, TRACKS["BW"], scale=0.02, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_ab(synth_ab, tmp_path_factory):
    """The prepared cache of `synth_ab`."""
    from c2seg_kit.prepare.pipeline import prepare
    from c2seg_kit.registry import TRACKS

    out = tmp_path_factory.mktemp("prepared_ab")
    prepare(synth_ab, TRACKS["AB"], out, progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_bw(synth_bw, tmp_path_factory):
    from c2seg_kit.prepare.pipeline import prepare
    from c2seg_kit.registry import TRACKS

    out = tmp_path_factory.mktemp("prepared_bw")
    prepare(synth_bw, TRACKS["BW"], out, progress=False)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server URL for the session: C2SEG_TEST_POSTGRES_URL (CI starts one with
    scripts/start-test-postgres.sh), else a throwaway cluster from the local binaries. Without
    one the PostgreSQL tests skip, unless C2SEG_REQUIRE_POSTGRES=1, which makes them fail."""
    url = os.environ.get("C2SEG_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    pgdir = tempfile.mkdtemp(prefix="c2seg-pg-")  # under /tmp: the postgres user must reach it
    env = dict(os.environ, C2SEG_PG_DIR=pgdir, C2SEG_PG_PORT=str(free_port()), C2SEG_PG_NO_INSTALL="1")
    script = ROOT / "scripts" / "start-test-postgres.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        why = f"no PostgreSQL for the tests: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
        shutil.rmtree(pgdir, ignore_errors=True)
        if os.environ.get("C2SEG_REQUIRE_POSTGRES") == "1":
            pytest.fail(why + " (C2SEG_REQUIRE_POSTGRES=1)")
        pytest.skip(why)
    try:
        yield proc.stdout.strip()
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(postgres_server)
    name = f"c2seg_{uuid.uuid4().hex[:12]}"
    plain = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
