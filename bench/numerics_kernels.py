"""Run the tests that compare floats of BLAS-heavy computations under other kernels and thread counts.

The numerics tests (PCA, prepare, the model's forward pass, the stitch, the importer, the
authors' path) derive their tolerances from float32's epsilon and the computation, so they must
pass whatever kernels numpy's OpenBLAS (OPENBLAS_CORETYPE) and torch (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA) pick and with any thread count. This reruns them once per setting, each in
a fresh pytest process, and prints the kernel each library reports (threadpoolctl, torch) beside
the result:

    python bench/numerics_kernels.py                      # the default settings below
    python bench/numerics_kernels.py -k pca               # extra pytest arguments pass through

A core type the CPU cannot run (e.g. SkylakeX without AVX-512) is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NUMERICS_TESTS = ["tests/test_core_pca.py", "tests/test_core_prepare.py", "tests/test_prepare_tiles.py",
                  "tests/test_baseline_model.py", "tests/test_baseline_stitch.py", "tests/test_baseline_importer.py",
                  "tests/test_baseline_step.py", "tests/test_baseline_import_weights.py",
                  "tests/test_baseline_authors_path.py"]

#: (threads, OpenBLAS core type, torch CPU capability, oneDNN's highest ISA); None leaves a variable unset.
SETTINGS = [
    (1, "Haswell", None, None),  # AVX2 BLAS, torch's own choice
    (2, "SkylakeX", None, None),  # AVX-512 BLAS
    (2, "Sandybridge", "avx2", "AVX2"),  # AVX BLAS, AVX2 convolutions
    (1, "Prescott", "default", "SSE41"),  # SSE3 BLAS, no vector extensions in torch's own kernels
]

PROBE = """
import json, numpy, threadpoolctl, torch
blas = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]
print(json.dumps({"openblas": blas[0]["architecture"] if blas else None,
                  "blas_threads": blas[0]["num_threads"] if blas else None,
                  "torch": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}))
"""

AVX512_CORES = {"SkylakeX", "Cooperlake", "SapphireRapids"}


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def environment(threads: int, core: str, aten: str | None, onednn: str | None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), OPENBLAS_CORETYPE=core)
    if aten:
        env["ATEN_CPU_CAPABILITY"] = aten
    if onednn:
        env["ONEDNN_MAX_CPU_ISA"] = onednn
    return env


def main(extra: list[str]) -> int:
    flags = cpu_flags()
    failed = 0
    for threads, core, aten, onednn in SETTINGS:
        if core in AVX512_CORES and "avx512f" not in flags:
            print(f"skip {core}: this CPU has no AVX-512")
            continue
        env = environment(threads, core, aten, onednn)
        probe = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                          check=True).stdout)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NUMERICS_TESTS,
                               *extra], cwd=ROOT, env=env, capture_output=True, text=True)
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"threads {threads}, OPENBLAS_CORETYPE={core} -> {probe['openblas']} x{probe['blas_threads']}, "
              f"torch {probe['torch']} x{probe['torch_threads']}"
              f"{f', ONEDNN_MAX_CPU_ISA={onednn}' if onednn else ''}: {summary} ({time.monotonic() - t0:.0f} s)",
              flush=True)
        if proc.returncode != 0:
            failed += 1
            print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
