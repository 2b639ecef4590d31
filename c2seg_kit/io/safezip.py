"""Reading a zip from a stranger: every member is checked before any is read.

The challenge tiles are distributed as zips (``C2Seg_AB.zip``, ``C2Seg_BW.zip``; BW's train
folder holds zips of its own). :class:`ZipStore` presents such an archive as a read-only tree
of files without unpacking it:

- before anything is read, every member of every level is checked: no absolute names, no
  ``..``, no drive letters, no control characters, no symlinks, no encryption, no duplicate
  names, a supported compression method, per-member and total size caps, and compression-ratio
  caps (per member, and for the whole archive against its size on disk, which also catches
  overlapping-member bombs);
- members of the outer zip are read directly into memory, one at a time, never more than their
  declared size (Python's zipfile stops there and checks the CRC);
- an inner zip is first copied, as one file, into a folder this class creates with
  ``tempfile.mkdtemp`` under ``workdir`` (default: the system temporary folder, ``TMPDIR``),
  because reading members of a compressed member would decompress it again for every seek.
  Only the inner zip itself is written there (nothing it contains is extracted), after a
  free-space check, and the folder is removed on close.

An inner zip ``dir/name.zip`` appears as the folder ``dir/name/``; when all its members start
with ``name/``, that leading folder is dropped (as archive tools that "extract to name/" do).
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from c2seg_kit.errors import InvalidDataError

SUPPORTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                     zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
KNOWN_METHODS = {9: "Deflate64", 93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES"}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DRIVE = re.compile(r"^[A-Za-z]:")
COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    """Caps on what an archive may declare; defaults fit the real C2Seg zips with room to spare."""

    max_members: int = 500_000  # C2Seg_BW: about 31 000 tiles
    max_member_bytes: int = 2 << 30  # one tile, read into memory
    max_inner_zip_bytes: int = 1 << 40  # one inner zip, copied to disk
    max_total_bytes: int = 4 << 40
    max_ratio: float = 200.0  # deflate tops out near 1032:1; real tiles compress far less
    ratio_floor_bytes: int = 1 << 20  # smaller members cannot do harm through their ratio
    max_depth: int = 2  # the outer zip and one level of inner zips


def _is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


def safe_member_name(info: zipfile.ZipInfo, where: str) -> str:
    """The member's name as a clean relative POSIX path, or InvalidDataError saying what is wrong."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if CONTROL.search(name):
        raise InvalidDataError(f"{where}: member {raw!r} has control characters in its name")
    if name.startswith("/") or DRIVE.match(name):
        raise InvalidDataError(f"{where}: member {raw!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidDataError(f"{where}: member {raw!r} escapes the archive (..)")
    return "/".join(parts)


def check_member(info: zipfile.ZipInfo, where: str, limits: ZipLimits) -> None:
    """Refuse a symlink, an encrypted member, an unreadable method, an oversized or bomb-like member."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InvalidDataError(f"{where}: member {name!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise InvalidDataError(f"{where}: member {name!r} is encrypted")
    if info.is_dir():
        return
    if info.compress_type not in SUPPORTED_METHODS:
        method = KNOWN_METHODS.get(info.compress_type, f"method {info.compress_type}")
        raise InvalidDataError(f"{where}: member {name!r} uses {method} compression, which Python's zipfile "
                               "cannot read; unpack the archive with another tool and point at the folder")
    cap = limits.max_inner_zip_bytes if _is_zip_name(name) else limits.max_member_bytes
    if info.file_size > cap:
        raise InvalidDataError(f"{where}: member {name!r} declares {info.file_size} bytes (cap {cap})")
    if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * info.compress_size:
        raise InvalidDataError(f"{where}: member {name!r} expands {info.file_size} / {info.compress_size} bytes, "
                               f"over the {limits.max_ratio:.0f}:1 compression-ratio cap (a zip bomb?)")


def checked_members(zf: zipfile.ZipFile, where: str, limits: ZipLimits, archive_bytes: int) -> dict[str, zipfile.ZipInfo]:
    """Every file member by its clean name, after checking them all."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise InvalidDataError(f"{where}: {len(infos)} members (cap {limits.max_members})")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = safe_member_name(info, where)
        check_member(info, where, limits)
        if info.is_dir() or not name:
            continue
        if name in members:
            raise InvalidDataError(f"{where}: member {name!r} appears twice")
        members[name] = info
        total += info.file_size
    if total > limits.max_total_bytes:
        raise InvalidDataError(f"{where}: members declare {total} bytes in all (cap {limits.max_total_bytes})")
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * archive_bytes:
        raise InvalidDataError(f"{where}: members declare {total} bytes from a {archive_bytes}-byte archive, "
                               f"over the {limits.max_ratio:.0f}:1 compression-ratio cap (a zip bomb?)")
    return members


def _open_zip(source, where: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise InvalidDataError(f"{where} is not a readable zip archive ({e})") from None


def _strip_common_folder(names: list[str], folder: str) -> dict[str, str]:
    """Member name -> name inside the inner zip's folder (a leading ``folder/`` shared by all dropped)."""
    prefix = folder + "/"
    if names and all(n.startswith(prefix) for n in names):
        return {n: n[len(prefix):] for n in names}
    return {n: n for n in names}


class ZipStore:
    """A zip archive (with inner zips) as a read-only tree of files; see the module docstring."""

    def __init__(self, path: str | Path, limits: ZipLimits | None = None, workdir: str | Path | None = None):
        self.path = Path(path)
        self.name = str(self.path)
        self.limits = limits or ZipLimits()
        self.workdir = workdir
        self._zips: list[zipfile.ZipFile] = []
        self._tmp: Path | None = None
        self._files: dict[str, tuple[zipfile.ZipFile, zipfile.ZipInfo]] = {}
        try:
            self._add(self._open(self.path, self.name), self.name, "", self.path.stat().st_size, depth=1)
        except BaseException:
            self.close()
            raise
        self._dirs: dict[str, list[str]] = {}
        for name in self._files:
            parent = PurePosixPath(name).parent.as_posix()
            self._dirs.setdefault("" if parent == "." else parent, []).append(PurePosixPath(name).name)
            for up in PurePosixPath(name).parents:
                self._dirs.setdefault("" if up.as_posix() == "." else up.as_posix(), [])

    def _open(self, source, where: str) -> zipfile.ZipFile:
        zf = _open_zip(source, where)
        self._zips.append(zf)
        return zf

    def _add(self, zf: zipfile.ZipFile, where: str, mount: str, archive_bytes: int, depth: int) -> None:
        members = checked_members(zf, where, self.limits, archive_bytes)
        for name, info in members.items():
            if _is_zip_name(name):
                if depth >= self.limits.max_depth:
                    raise InvalidDataError(f"{where}: member {name!r} is a zip nested {depth} levels deep "
                                           f"(at most {self.limits.max_depth} levels are read)")
                self._add_inner(zf, info, f"{where}:{name}", join_rel(mount, name[:-4]), depth)
                continue
            self._put(join_rel(mount, name), zf, info, where)

    def _add_inner(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, mount: str, depth: int) -> None:
        copy = self._copy_out(zf, info, where)
        inner = self._open(copy, where)
        members = checked_members(inner, where, self.limits, copy.stat().st_size)
        inner_names = _strip_common_folder(list(members), PurePosixPath(mount).name)
        for name, info_ in members.items():
            if _is_zip_name(name):
                raise InvalidDataError(f"{where}: member {name!r} is a zip nested {depth + 1} levels deep "
                                       f"(at most {self.limits.max_depth} levels are read)")
            self._put(join_rel(mount, inner_names[name]), inner, info_, where)

    def _put(self, name: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
        if not name:
            return
        if name in self._files:
            raise InvalidDataError(f"{where}: member {name!r} appears twice (after unpacking inner zips)")
        self._files[name] = (zf, info)

    def _copy_out(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Path:
        """Copy one inner zip into this store's own temporary folder (created on first use)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="c2seg-inner-zips-", dir=self.workdir))
        free = shutil.disk_usage(self._tmp).free
        if info.file_size > free:
            raise InvalidDataError(f"{where}: unpacking this inner zip needs {info.file_size} bytes, "
                                   f"{self._tmp} has {free} free (set TMPDIR to a larger disk)")
        fd, name = tempfile.mkstemp(suffix=".zip", dir=self._tmp)
        dest = Path(name)
        try:
            with zf.open(info) as src, open(fd, "wb") as out:
                shutil.copyfileobj(src, out, COPY_BLOCK)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise InvalidDataError(f"{where}: cannot unpack ({e})") from None
        if dest.stat().st_size != info.file_size:
            raise InvalidDataError(f"{where}: unpacked {dest.stat().st_size} bytes, the archive declared {info.file_size}")
        return dest

    # --- the read-only tree -----------------------------------------------------------------

    def is_dir(self, rel: str) -> bool:
        return rel in self._dirs

    def list_dir(self, rel: str) -> list[str]:
        """Names of the files directly in folder ``rel`` (no sub-folders)."""
        return list(self._dirs.get(rel, []))

    def describe(self, rel: str) -> str:
        return f"{self.name}:{rel}"

    def open(self, rel: str) -> io.BytesIO:
        """The member's bytes (at most its declared size), checked against its CRC."""
        zf, info = self._files[rel]
        try:
            with zf.open(info) as f:
                data = f.read(info.file_size)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise InvalidDataError(f"{self.describe(rel)}: cannot read ({e})") from None
        out = io.BytesIO(data)
        out.name = self.describe(rel)
        return out

    def close(self) -> None:
        for zf in self._zips:
            zf.close()
        self._zips.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)  # only the folder this store created
            self._tmp = None

    def __enter__(self) -> ZipStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def join_rel(*parts: str) -> str:
    """Relative POSIX path parts joined by '/', empty parts (the tree's root) left out."""
    return "/".join(p for p in parts if p)
