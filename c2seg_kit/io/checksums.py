"""The distributed archives' MD5s (``checksum=True`` of the datasets, `c2seg info`), streamed."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The archives as distributed, with the MD5 a TorchGeo dataset draft records.
DISTRIBUTED_MD5 = {"C2Seg_AB.zip": "1a7eddf6b90b875ba1ab4cc173818296",
                   "C2Seg_BW.zip": "4728fa97747fad55de8c55fcbef8be60"}


def file_md5(path: str | Path, progress=None, block: int = 8 << 20) -> str:
    """MD5 of a file, streamed (``progress.update(n)`` per block when given)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def distributed_md5_check(path: str | Path, progress=None) -> dict | None:
    """For an archive with a distributed name: its MD5, the expected one and whether they match."""
    expected = DISTRIBUTED_MD5.get(Path(path).name)
    if expected is None:
        return None
    md5 = file_md5(path, progress)
    return {"name": Path(path).name, "md5": md5, "expected_md5": expected, "match": md5 == expected}
