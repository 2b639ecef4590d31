"""What several benchmarks share: the Wuhan test scene's size, `c2seg` in a fresh interpreter, and
that interpreter's own peak RSS, read inside it."""

from __future__ import annotations

import sys

from c2seg_kit.registry import TRACKS

#: H x W of Wuhan, the BW target and the largest test scene, as the registry gives it.
WUHAN: tuple[int, int] = TRACKS["BW"].target.nominal_shape
#: `c2seg` run by this interpreter, whatever console scripts are on PATH.
C2SEG = [sys.executable, "-c", "from c2seg_kit.cli import main; main()"]


def hwm_wrapper(imports: str = "c2seg_kit.cli") -> str:
    """Source for ``python -c SOURCE ARGS``: import ``imports``, run `c2seg ARGS` when there are
    any, and at exit write the process's peak RSS (VmHWM) on stderr as ``VMHWM <bytes>``. Read
    inside the child: ru_maxrss would include the parent's RSS, which Linux carries across fork + exec."""
    return ("import atexit, sys\n"
            "def _hwm():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmHWM:'):\n"
            "            sys.stderr.write('VMHWM %d\\n' % (int(line.split()[1]) * 1024))\n"
            "atexit.register(_hwm)\n"
            f"import {imports}\n"
            "if len(sys.argv) > 1:\n"
            "    c2seg_kit.cli.main(sys.argv[1:])\n")


def reported_hwm(stderr: str) -> int | None:
    """The bytes a child running :func:`hwm_wrapper` reported, or None when it reported none."""
    return next((int(line.split()[1]) for line in stderr.splitlines() if line.startswith("VMHWM ")), None)
