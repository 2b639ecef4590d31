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
- an inner zip stored without compression (method "stored") is read in place: a zip reader over
  the outer file's byte range, nothing copied. A compressed inner zip cannot be read in place
  (every seek would decompress it again), so it is decompressed once, as one file, into a folder
  created with ``tempfile.mkdtemp`` under ``workdir`` (default: the system temporary folder,
  ``TMPDIR``), after one free-space check for all the archive's copies together (and a cap on
  their total, :attr:`ZipLimits.max_copied_bytes`). Nothing an inner zip contains is extracted.
  A copy is shared by every store of the process that opens the same archive (and by forked
  DataLoader workers, which inherit it), and removed when the last of them closes;
- any defect met while reading (a corrupted byte, a truncated member, an unreadable method) is an
  :class:`InvalidDataError` naming the archive and member, never a traceback.

A folder holding inner zips (an outer archive unpacked with a plain ``unzip``) is read the same
way by :class:`c2seg_kit.io.tiles.FolderStore`: ``train/msi.zip`` stands for ``train/msi/``,
read in place.

An inner zip ``dir/name.zip`` appears as the folder ``dir/name/``; when all its members start
with ``name/``, that leading folder is dropped (as archive tools that "extract to name/" do).
"""

from __future__ import annotations

import io
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from c2seg_kit.errors import InvalidDataError

SUPPORTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                     zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
KNOWN_METHODS = {9: "Deflate64", 93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES"}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DRIVE = re.compile(r"^[A-Za-z]:")
COPY_BLOCK = 1 << 20
#: What Python's zipfile (and its decompressors) raise on a damaged archive: each becomes one line.
#: (zipfile indexes and unpacks raw header fields, so a damaged header also shows as IndexError,
#: struct.error or UnicodeDecodeError; none of these can come from anything but the archive here.)
ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
                  zlib.error, lzma.LZMAError, struct.error, IndexError, KeyError, OverflowError, UnicodeDecodeError,
                  RuntimeError)
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra-field lengths


@dataclass(frozen=True)
class ZipLimits:
    """Caps on what an archive may declare; defaults fit the real C2Seg zips with room to spare."""

    max_members: int = 500_000  # C2Seg_BW: about 31 000 tiles
    max_member_bytes: int = 2 << 30  # one tile, read into memory
    max_inner_zip_bytes: int = 1 << 40  # one inner zip
    max_copied_bytes: int = 1 << 40  # all compressed inner zips of one archive, decompressed to disk
    max_total_bytes: int = 4 << 40
    max_ratio: float = 200.0  # deflate tops out near 1032:1; real tiles compress far less
    ratio_floor_bytes: int = 1 << 20  # smaller members cannot do harm through their ratio
    max_depth: int = 2  # the outer zip and one level of inner zips


def _is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


def safe_member_name(info: zipfile.ZipInfo, where: str) -> str:
    """The member's name as a clean relative POSIX path, or InvalidDataError saying what is wrong."""
    raw = info.filename
    if not raw:
        raise InvalidDataError(f"{where}: a member has an empty name")
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
    except ARCHIVE_ERRORS as e:
        raise InvalidDataError(f"{where} is not a readable zip archive ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    """An archive error's first line, short (some decompressor messages are long or empty)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    """A member's bytes (at most its declared size, checked against its CRC), any defect one line."""
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size)
    except ARCHIVE_ERRORS as e:
        raise InvalidDataError(f"{where}: cannot read ({_reason(e)})") from None
    if len(data) != info.file_size:
        raise InvalidDataError(f"{where}: holds {len(data)} bytes, the archive declared {info.file_size}")
    return data


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of a file as a read-only seekable file (a stored inner zip)."""

    def __init__(self, path: Path, start: int, size: int):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed with the window
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def stored_member_window(path: Path, info: zipfile.ZipInfo, where: str) -> io.BufferedReader:
    """A stored (uncompressed) member of the zip at ``path`` as a seekable file over its bytes in
    place, after checking its local header and that the range lies within the file."""
    try:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            signature, name_len, extra_len = LOCAL_HEADER.unpack(f.read(LOCAL_HEADER.size))
            start = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
            end = f.seek(0, io.SEEK_END)
    except (OSError, struct.error) as e:
        raise InvalidDataError(f"{where}: cannot find its data ({_reason(e)})") from None
    if signature != b"PK\x03\x04" or start + info.compress_size > end or info.compress_size != info.file_size:
        raise InvalidDataError(f"{where}: its local header is damaged")
    return io.BufferedReader(_Window(path, start, info.file_size), COPY_BLOCK)


@dataclass
class _Copy:
    """A compressed inner zip decompressed once into its own temporary folder (see the module)."""

    path: Path
    owner: int  # the process that made it, the only one that removes it
    users: int = 0


_COPIES: dict[tuple, _Copy] = {}
_COPIES_LOCK = threading.Lock()


def _copy_key(archive: Path, info: zipfile.ZipInfo) -> tuple:
    st = archive.stat()
    return (str(archive.resolve()), st.st_size, st.st_mtime_ns, info.header_offset, info.CRC, info.file_size)


def _release(key: tuple) -> None:
    with _COPIES_LOCK:
        copy = _COPIES.get(key)
        if copy is None:
            return
        copy.users -= 1
        if copy.users <= 0 and copy.owner == os.getpid():
            del _COPIES[key]
            shutil.rmtree(copy.path.parent, ignore_errors=True)  # only the folder made for this copy


def _strip_common_folder(names: list[str], folder: str) -> dict[str, str]:
    """Member name -> name inside the inner zip's folder (a leading ``folder/`` shared by all dropped)."""
    prefix = folder + "/"
    if names and all(n.startswith(prefix) for n in names):
        return {n: n[len(prefix):] for n in names}
    return {n: n for n in names}


class ZipStore:
    """A zip archive (with inner zips) as a read-only tree of files; see the module docstring.

    ``strip``: drop this leading folder when all members start with it (a zip read as the folder
    it is named after, as for inner zips); ``depth``: the level this zip sits at (a zip found in
    a folder is already an inner zip: ``limits.max_depth``)."""

    def __init__(self, path: str | Path, limits: ZipLimits | None = None, workdir: str | Path | None = None,
                 *, strip: str | None = None, depth: int = 1):
        self.path = Path(path)
        self.name = str(self.path)
        self.limits = limits or ZipLimits()
        self.workdir = workdir
        self._zips: list[zipfile.ZipFile] = []
        self._copies: list[tuple] = []
        self._windows: list[io.BufferedReader] = []
        self._files: dict[str, tuple[zipfile.ZipFile, zipfile.ZipInfo]] = {}
        try:
            zf = self._open(self.path, self.name)
            self._add(zf, self.name, "", self.path.stat().st_size, depth=depth, strip=strip)
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

    def _add(self, zf: zipfile.ZipFile, where: str, mount: str, archive_bytes: int, depth: int,
             strip: str | None = None) -> None:
        members = checked_members(zf, where, self.limits, archive_bytes)
        names = _strip_common_folder(list(members), strip) if strip else {n: n for n in members}
        inner = {n: i for n, i in members.items() if _is_zip_name(n)}
        if inner and depth >= self.limits.max_depth:
            name = next(iter(inner))
            raise InvalidDataError(f"{where}: member {name!r} is a zip nested {depth} levels deep "
                                   f"(at most {self.limits.max_depth} levels are read)")
        self._check_copies(list(inner.values()), where)  # before any is copied
        for name, info in members.items():
            if name in inner:
                self._add_inner(zf, info, f"{where}:{name}", join_rel(mount, names[name][:-4]), depth)
            else:
                self._put(join_rel(mount, names[name]), zf, info, where)

    def _check_copies(self, inner: list[zipfile.ZipInfo], where: str) -> None:
        """One check for all the compressed inner zips to be copied: their total under the cap and
        within the free space of the temporary folder (those already copied in this process count
        for nothing)."""
        needed = [i for i in inner if i.compress_type != zipfile.ZIP_STORED
                  and _copy_key(self.path, i) not in _COPIES]
        total = sum(i.file_size for i in needed)
        if not total:
            return
        if total > self.limits.max_copied_bytes:
            raise InvalidDataError(f"{where}: its compressed inner zips hold {total} bytes in all "
                                   f"(cap {self.limits.max_copied_bytes})")
        folder = Path(self.workdir or tempfile.gettempdir())
        free = shutil.disk_usage(folder).free
        if total > free:
            raise InvalidDataError(f"{where}: reading its {len(needed)} compressed inner zip(s) needs {total} bytes "
                                   f"in {folder}, which has {free} free (set TMPDIR to a larger disk, or unpack "
                                   "the outer archive and point at the folder)")

    def _add_inner(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, mount: str, depth: int) -> None:
        if info.compress_type == zipfile.ZIP_STORED:
            source, size = stored_member_window(self.path, info, where), info.file_size
            self._windows.append(source)  # zipfile leaves a file object it was given open
        else:
            source = self._copy_out(zf, info, where)
            size = source.stat().st_size
        inner = self._open(source, where)
        self._add(inner, where, mount, size, depth + 1, strip=PurePosixPath(mount).name)

    def _put(self, name: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
        if not name:
            return
        if name in self._files:
            raise InvalidDataError(f"{where}: member {name!r} appears twice (after unpacking inner zips)")
        self._files[name] = (zf, info)

    def _copy_out(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Path:
        """The inner zip decompressed to a temporary file: this process's copy when it made one."""
        key = _copy_key(self.path, info)
        with _COPIES_LOCK:
            copy = _COPIES.get(key)
            if copy is None or not copy.path.is_file():
                copy = _COPIES[key] = _Copy(self._decompress(zf, info, where), os.getpid())
            copy.users += 1
        self._copies.append(key)
        return copy.path

    def _decompress(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="c2seg-inner-zips-", dir=self.workdir))
        dest = folder / PurePosixPath(info.filename.replace("\\", "/")).name
        try:
            with zf.open(info) as src, open(dest, "xb") as out:
                copied = 0
                while block := src.read(COPY_BLOCK):
                    copied += len(block)
                    if copied > info.file_size:
                        raise InvalidDataError(f"{where}: holds more than the {info.file_size} bytes declared")
                    out.write(block)
            if copied != info.file_size:
                raise InvalidDataError(f"{where}: unpacked {copied} bytes, the archive declared {info.file_size}")
        except ARCHIVE_ERRORS as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidDataError(f"{where}: cannot unpack ({_reason(e)})") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
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
        out = io.BytesIO(read_member(zf, info, self.describe(rel)))
        out.name = self.describe(rel)
        return out

    def close(self) -> None:
        for zf in self._zips:
            zf.close()
        self._zips.clear()
        for window in self._windows:
            window.close()
        self._windows.clear()
        for key in self._copies:
            _release(key)
        self._copies.clear()

    def __enter__(self) -> ZipStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def join_rel(*parts: str) -> str:
    """Relative POSIX path parts joined by '/', empty parts (the tree's root) left out."""
    return "/".join(p for p in parts if p)
