"""What a training run tells its user: plain progress lines where no bar is drawn, the CPU thread
count, a warning when the run looks long, what Ctrl-C kept and how to go on, and which checkpoint
`predict` should use."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from baseline_support import config_file, make_prepared, tiny_options
from cli_support import run_cli

from c2seg_baseline import checkpoint as ckpt
from c2seg_baseline.devices import cgroup_cpu_quota, default_threads, set_threads, usable_cpus
from c2seg_baseline.runlog import ProgressLines
from c2seg_baseline.train import train


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    """A prepared AB cache whose target city has no labels, as a participant's has."""
    return make_prepared(tmp_path_factory.mktemp("prep_unlabelled") / "AB", target_label=False)


def train_args(prepared: Path, out: Path, *extra) -> list[str]:
    return ["train-baseline", "--prepared", prepared, "--track", "AB", "--out", out,
            "--config", config_file(prepared.parent), "--device", "cpu", "--batch-size", "2", *extra]


# --- progress lines where no bar is drawn --------------------------------------------------------

def test_progress_lines_follow_the_clock():
    now = [100.0]
    written = []
    lines = ProgressLines(total=10, initial=0, track="AB", every=30, write=written.append, clock=lambda: now[0])
    losses = {"seg": 1.25, "adv": 0.5}
    for step, t in enumerate([102.0, 104.0, 132.0, 140.0, 162.0], start=1):
        now[0] = t
        lines.update(step, losses, {})
    # after the first step, then once 30 s have passed since the last line: steps 1, 3 and 5
    assert [line.split(",")[0] for line in written] == ["train AB: step 1/10", "train AB: step 3/10",
                                                        "train AB: step 5/10"]
    assert written[0] == "train AB: step 1/10, seg 1.250, adv 0.500, 2.0 s/step, 18 s left"
    # step 5 at 62 s: 12.4 s a step, 5 steps left
    assert written[2].endswith("12.4 s/step, 1 min 2 s left")
    silent = []
    off = ProgressLines(total=10, initial=0, track="AB", every=0, write=silent.append, clock=lambda: now[0])
    off.update(1, losses, {})
    assert silent == []


def test_progress_lines_on_a_resumed_run_count_its_own_steps():
    now = [0.0]
    written = []
    lines = ProgressLines(total=6000, initial=5990, track="BW", every=30, write=written.append,
                          clock=lambda: now[0])
    now[0] = 270.0  # one step of 4.5 minutes, 9 left
    lines.update(5991, {"seg": 0.1}, {"miou": 0.25})
    assert written == ["train BW: step 5991/6000, seg 0.100, best_miou 0.250, 4 min 30 s/step, 40 min 30 s left"]


def test_training_in_a_pipe_prints_plain_progress_lines(unlabelled, tmp_path, capsys):
    out = tmp_path / "run"
    # under pytest stderr is not a terminal: no bar, so plain lines (every 1 ms: after every step)
    code, stdout, stderr = run_cli(capsys, *train_args(unlabelled, out, "--steps", "3", "--progress-every", "0.001"))
    assert code in (0, None), stderr
    steps = [line for line in stderr.splitlines() if line.startswith("train AB: step ")]
    assert [s.split(",")[0] for s in steps] == [f"train AB: step {i}/3" for i in (1, 2, 3)], stderr
    assert all("left" in s and ("s/step" in s or "step/s" in s) for s in steps), steps
    assert "\r" not in stderr
    code, _, stderr = run_cli(capsys, *train_args(unlabelled, tmp_path / "quiet", "--steps", "2",
                                                  "--progress-every", "0"))
    assert code in (0, None) and "train AB: step" not in stderr


# --- which checkpoint to predict with -------------------------------------------------------------

def test_training_says_which_checkpoint_to_predict_with(unlabelled, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(capsys, *train_args(unlabelled, out, "--steps", "2", "--progress-every", "0"))
    assert code in (0, None), stderr
    assert not (out / "best.pt").exists()
    assert f"checkpoint to predict with: {out / 'last.pt'}" in stdout, stdout
    assert f"c2seg predict --checkpoint {out / 'last.pt'} --prepared {unlabelled} --track AB" in stdout


def test_with_target_labels_training_points_at_best(tmp_path, capsys):
    prepared = make_prepared(tmp_path / "prep" / "AB")
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(capsys, *train_args(prepared, out, "--steps", "2", "--eval-every", "2",
                                                       "--progress-every", "0"))
    assert code in (0, None), stderr
    assert (out / "best.pt").is_file()
    assert f"checkpoint to predict with: {out / 'best.pt'} (the best target mIoU, step 2)" in stdout, stdout


@pytest.mark.parametrize("given", ["best.pt", "folder"])
def test_predict_names_the_checkpoint_that_exists(tmp_path, capsys, given):
    run = tmp_path / "runs" / "ab"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"not read: only its name matters here")
    checkpoint = run / "best.pt" if given == "best.pt" else run
    code, _, stderr = run_cli(capsys, "predict", "--checkpoint", checkpoint, "--prepared", tmp_path, "--track", "AB",
                              "--out", tmp_path / "p.h5")
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert f"--checkpoint {run / 'last.pt'}" in lines[0], lines
    if given == "best.pt":
        assert f"checkpoint not found: {run / 'best.pt'}" in lines[0] and "target labels" in lines[0]
    assert not (tmp_path / "p.h5").exists()


# --- threads ----------------------------------------------------------------------------------------

def test_thread_rule_leaves_a_cpu_of_headroom():
    assert default_threads(2, 2) == 1  # the 2-CPU machine: one thread
    assert default_threads(1, 1) == 1
    assert default_threads(4, 8) == 3
    assert default_threads(64, 16) == 16  # never above torch's own default


def test_cgroup_quota_caps_the_usable_cpus(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    assert cgroup_cpu_quota(tmp_path / "absent") is None
    for text, quota in [("max 100000\n", None), ("150000 100000\n", 1.5), ("junk\n", None), ("0 100000", None)]:
        cpu_max.write_text(text)
        assert cgroup_cpu_quota(cpu_max) == quota, text
    cpu_max.write_text("100000 100000\n")
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == len(os.sched_getaffinity(0))


def test_set_threads_follows_request_then_environment_then_rule(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads(None) == 2  # the environment's choice stands: torch is left as it is
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr("c2seg_baseline.devices.usable_cpus", lambda: 2)
        assert set_threads(None) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def recorded_threads(out: Path) -> int:
    return json.loads((out / "config.json").read_text())["run"]["threads"]


def test_threads_option_reaches_the_run(unlabelled, tmp_path, capsys, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # --threads wins over the environment
    try:
        torch.set_num_threads(2)
        code, _, stderr = run_cli(capsys, *train_args(unlabelled, tmp_path / "run", "--steps", "1",
                                                      "--progress-every", "0", "--threads", "1"))
    finally:
        torch.set_num_threads(before)
    assert code in (0, None), stderr
    assert recorded_threads(tmp_path / "run") == 1


def test_by_default_a_run_leaves_a_cpu_of_headroom(unlabelled, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the tests' own setting
    out = tmp_path / "run"
    args = [str(a) for a in train_args(unlabelled, out, "--steps", "1", "--progress-every", "0")]
    r = subprocess.run([sys.executable, "-m", "c2seg_kit", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert 1 <= recorded_threads(out) <= max(1, usable_cpus() - 1)


@pytest.mark.parametrize("verb", ["train-baseline", "predict"])
def test_threads_must_be_positive(verb, tmp_path, capsys):
    required = ["--prepared", tmp_path, "--track", "AB", "--out", tmp_path / "out"]
    if verb == "predict":
        required += ["--checkpoint", tmp_path / "last.pt"]
    code, _, stderr = run_cli(capsys, verb, *required, "--threads", "0")
    assert code == 2 and "--threads" in stderr and "0 is not in the range x>=1" in stderr, stderr
    assert not (tmp_path / "out").exists()


# --- a long run says so --------------------------------------------------------------------------

def test_a_long_run_is_announced_with_its_estimate(unlabelled, tmp_path):
    said = []
    train(tiny_options(unlabelled, tmp_path / "long", steps=3, eval_every=3, warn_longer_than=0.0,
                       notify=said.append, progress_every=0))
    warnings = [line for line in said if line.startswith("warning: ")]
    assert len(warnings) == 1, said
    assert "step 1 took" in warnings[0] and "the 2 steps left would take about" in warnings[0]
    said.clear()
    train(tiny_options(unlabelled, tmp_path / "short", steps=3, eval_every=3, notify=said.append, progress_every=0))
    assert not [line for line in said if line.startswith("warning: ")], said


# --- Ctrl-C ------------------------------------------------------------------------------------------

# From step 2 on, each step sleeps after its work and says so on stderr, so that a test can press
# Ctrl-C in the middle of a known step (a tiny step alone is over before a signal could be aimed at it).
SLOW_STEPS = """
import sys, time
import c2seg_baseline.train as train_module
real_step = train_module.train_step
count = [0]
def slow_step(*args, **kw):
    losses = real_step(*args, **kw)
    count[0] += 1
    if count[0] >= 2:
        print(f"SLEEPING {count[0]}", file=sys.stderr, flush=True)
        time.sleep(float(sys.argv[1]))
    return losses
train_module.train_step = slow_step
from c2seg_kit.cli import main
main(sys.argv[2:])
"""


def start_slow(args: list, sleep: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_STEPS, str(sleep), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(proc: subprocess.Popen, text: str, seen: list[str], timeout: float = 120) -> None:
    """Read stderr lines into `seen` until one holds `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"exited before {text!r}: {''.join(seen)}")
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout} s: {''.join(seen)}")


def finish(proc: subprocess.Popen, seen: list[str], timeout: float) -> tuple[int, str]:
    _, rest = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(seen) + rest


def test_ctrl_c_saves_after_the_step_and_prints_the_command_that_goes_on(unlabelled, tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(unlabelled, out, "--steps", "50", "--seed", "5", "--progress-every", "0")
    proc = start_slow(args, sleep=2.0)
    seen: list[str] = []
    wait_for(proc, "SLEEPING 2", seen)  # in step 2
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, seen, timeout=60)
    assert code == 130, err
    assert "Ctrl-C: the step under way finishes" in err and "Ctrl-C again stops at once" in err
    assert "interrupted after step 2 of 50" in err and f"kept {out / 'last.pt'} (step 2)" in err, err
    assert ckpt.read_checkpoint(out / "last.pt")["step"] == 2
    assert "Traceback" not in err and "Aborted" not in err
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("c2seg train-baseline"))
    argv = shlex.split(command)
    assert argv[:2] == ["c2seg", "train-baseline"] and "--resume" in argv and argv[argv.index("--seed") + 1] == "5"
    # the printed command continues the run (two more steps, then stop)
    code, _, stderr = run_cli(capsys, *argv[1:], "--stop-after", "4", "--progress-every", "0")
    assert code in (0, None), stderr
    assert ckpt.read_checkpoint(out / "last.pt")["step"] == 4


def test_a_second_ctrl_c_stops_at_once(unlabelled, tmp_path):
    out = tmp_path / "run"
    args = train_args(unlabelled, out, "--steps", "50", "--eval-every", "1", "--progress-every", "0")
    proc = start_slow(args, sleep=120.0)  # a step of two minutes, as on a CPU at paper settings
    seen: list[str] = []
    wait_for(proc, "SLEEPING 2", seen)  # step 1 was saved (evaluation every step); step 2 under way
    proc.send_signal(signal.SIGINT)
    wait_for(proc, "Ctrl-C again stops at once", seen)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, seen, timeout=30)
    assert time.monotonic() - started < 30  # not the two minutes the step would have taken
    assert code == 130, err
    assert "stopped at once by a second Ctrl-C after step 1 of 50" in err, err
    assert f"kept {out / 'last.pt'} (step 1)" in err and "--resume" in err
    assert "Traceback" not in err
    assert ckpt.read_checkpoint(out / "last.pt")["step"] == 1


def test_demo_passes_threads_to_training_and_prediction(tmp_path, monkeypatch):
    from c2seg_kit.cli import demo as demo_module

    class Stop(Exception):
        pass

    calls = []

    def record(self, verb, *args, capture=False):  # the steps' command lines, none of them run
        calls.append([verb, *map(str, args)])
        if verb == "validate":
            raise Stop
        return ""

    monkeypatch.setattr(demo_module.Demo, "c2seg", record)
    with pytest.raises(Stop):
        demo_module.demo.main(["--out", str(tmp_path / "demo"), "--threads", "3"], standalone_mode=False)
    by_verb = {call[0]: call for call in calls}
    assert by_verb["train-baseline"][-2:] == ["--threads", "3"]
    assert by_verb["predict"][-2:] == ["--threads", "3"]
    assert "--threads" not in by_verb["prepare"]
