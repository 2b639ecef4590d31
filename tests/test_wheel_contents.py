"""The wheel a user installs holds the whole kit: every module of the three source packages under
its installed name, and every other file in them (the board page's template and stylesheet,
alembic's migration scripts and configuration), which the code opens at run time. The wheel is
built from a copy of the source tree, so the check sees what `pip install .` sees."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> installed package name
ROOTS = {"c2seg_kit": "c2seg_kit", "baseline": "c2seg_baseline", "server": "c2seg_server"}
#: what a wheel build reads besides the package folders
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")


def source_files() -> set[str]:
    """Every file of the three package folders, as the path it installs at."""
    found = set()
    for folder, name in ROOTS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(f"{name}/{path.relative_to(ROOT / folder).as_posix()}")
    return found


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    pytest.importorskip("setuptools", minversion="77")
    tree = tmp_path_factory.mktemp("src")
    for folder in ROOTS:
        shutil.copytree(ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("c2seg_kit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_holds_every_module_and_data_file(wheel_names):
    expected = source_files()
    assert "c2seg_kit/h5safe/__init__.py" in expected  # the package a hand-written list once left out
    missing = sorted(expected - wheel_names)
    assert not missing, f"the wheel lacks {missing}"


def test_wheel_installs_no_top_level_name_of_the_source_folders(wheel_names):
    """baseline/ and server/ install only as c2seg_baseline and c2seg_server (a user's own
    `server` module must not collide with ours), and the tests stay out of the wheel."""
    tops = {name.split("/")[0] for name in wheel_names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == set(ROOTS.values())


def test_files_the_code_opens_beside_itself_are_in_the_wheel(wheel_names):
    """Each `Path(__file__).parent / "name"` in the code names a file or folder the wheel holds."""
    opened = []
    for folder, name in ROOTS.items():
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            # Path(__file__).parent itself, or a name bound to it (HERE = Path(__file__).parent)
            here = ["Path\\(__file__\\)\\.parent", *re.findall(r"^(\w+) = Path\(__file__\)\.parent$", text, re.M)]
            for target in re.findall(rf"(?:{'|'.join(here)})\s*/\s*\"([^\"]+)\"", text):
                rel = path.parent.relative_to(ROOT / folder).as_posix()
                opened.append(f"{name}/{rel}/{target}".replace("/./", "/"))
    assert {"c2seg_server/templates", "c2seg_server/static", "c2seg_server/migrations"} <= set(opened), opened
    for target in opened:
        inside = [n for n in wheel_names if n.startswith(target + "/") or n == target]
        assert inside, f"the code opens {target}, which the wheel lacks"
    # alembic reads its migration environment and the template for new revisions from that folder
    for needed in ("c2seg_server/migrations/env.py", "c2seg_server/migrations/script.py.mako",
                   "c2seg_server/migrations/alembic.ini", "c2seg_server/templates/leaderboard.html",
                   "c2seg_server/static/style.css", "c2seg_server/static/site.css", "c2seg_server/static/site.js"):
        assert needed in wheel_names


def test_min_versions_pin_the_declared_lower_bounds():
    """scripts/min-versions.txt (the light-min and server-min smokes' constraints) pins exactly the
    lower bound of every light, [server] and [verify] dependency (the kit's own extras aside), so
    the versions tested are the versions declared."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = {}
    for req in project["dependencies"] + extras["server"] + [r for r in extras["verify"] if not r.startswith("c2seg-kit")]:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)", req)
        assert m, f"{req}: a dependency without a lower bound"
        declared[m.group(1).lower()] = m.group(2)
    pinned = {}
    for line in (ROOT / "scripts" / "min-versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.strip().lower()] = version.strip()
    assert set(pinned) == set(declared)

    def parts(v: str) -> list[int]:
        return [int(x) for x in v.split(".")]

    for name, low in declared.items():
        a, b = parts(pinned[name]), parts(low)
        n = max(len(a), len(b))
        assert a + [0] * (n - len(a)) == b + [0] * (n - len(b)), f"{name}: pinned {pinned[name]}, declared >={low}"
