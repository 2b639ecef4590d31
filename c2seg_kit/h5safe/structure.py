"""Structure checks on an opened HDF5 file, before any raster data is read: links, the object
tree, every dataset's storage, the text attributes the kit reads, and one raster's type, space,
chunks and filters (:func:`check_raster`, which any per-raster reader reuses)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5l, h5o, h5s, h5t, h5z

from c2seg_kit.h5safe.limits import Context

FILTER_LZF = 32000  # h5py's built-in LZF filter id

#: Filters HDF5 (or h5py) carry built in; any other id would make HDF5 go looking for a plugin.
ALLOWED_FILTERS = {
    h5z.FILTER_DEFLATE: "gzip",
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_FLETCHER32: "fletcher32",
    FILTER_LZF: "lzf",
}

# Names for refused type classes, so the message says what was found.
_TYPE_CLASS_NAMES = {
    h5t.FLOAT: "floating point",
    h5t.ENUM: "enum (booleans are stored as enums)",
    h5t.STRING: "string",
    h5t.COMPOUND: "compound",
    h5t.ARRAY: "array (a sub-array dtype hides extra dimensions)",
    h5t.OPAQUE: "opaque",
    h5t.BITFIELD: "bitfield",
    h5t.REFERENCE: "reference",
    h5t.VLEN: "variable-length",
    h5t.TIME: "time",
}
if hasattr(h5t, "COMPLEX"):
    _TYPE_CLASS_NAMES[h5t.COMPLEX] = "complex"


def _fmt_shape(shape: tuple) -> str:
    return " x ".join(str(int(s)) for s in shape) if len(shape) else "scalar"


# The word for each refused link type (None: a hard link, the only kind entered); any other
# type is user-defined. h5py's link classes map onto the same types.
_LINK_WORDS = {h5l.TYPE_HARD: None, h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link (to another file)"}
_LINK_CLASSES = {h5py.HardLink: h5l.TYPE_HARD, h5py.SoftLink: h5l.TYPE_SOFT, h5py.ExternalLink: h5l.TYPE_EXTERNAL}


def _link_word(link_type: Any) -> str | None:
    return _LINK_WORDS.get(link_type, "a user-defined link")


def _link_kind(link: Any) -> str | None:
    """None for a hard link (an h5py link object), else a word for the link type that is refused."""
    return _link_word(_LINK_CLASSES.get(type(link)))


def check_links(f: h5py.File, path: str, ctx: Context) -> None:
    """Check every component of ``path`` from the root is a hard link, without following any other.

    ``get(name, getlink=True)`` only describes the *last* component of the name it is given, so
    the path is walked one component at a time from the root.
    """
    group: Any = f
    walked = ""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        walked += "/" + part
        try:
            link = group.get(part, getlink=True)
        except (KeyError, RuntimeError, OSError, ValueError):
            link = None
        if link is None:
            return  # missing: the caller reports that with its own message
        kind = _link_kind(link)
        if kind is not None:
            raise ctx.error(f"'{walked}' is {kind}; links are refused, not followed")
        if i < len(parts) - 1:
            group = group[part]
            if not isinstance(group, h5py.Group):
                return


def _oid(obj: Any) -> Any:
    """The low-level HDF5 id of an h5py object, or the id itself (whose own ``.id`` is an int)."""
    return obj.id if isinstance(obj, (h5py.Group, h5py.Dataset, h5py.Datatype)) else obj


def check_storage(dset: h5py.Dataset | h5d.DatasetID, name: str, ctx: Context, dcpl: Any = None) -> None:
    """Refuse storage that reaches outside the file or needs code HDF5 does not carry."""
    dcpl = _oid(dset).get_create_plist() if dcpl is None else dcpl
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise ctx.error(f"'{name}' is a virtual dataset (it maps data from other files); store the data itself")
    if dcpl.get_external_count() > 0:
        raise ctx.error(f"'{name}' uses external raw storage (data kept in another file); store the data itself")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise ctx.error(
                f"'{name}' uses compression filter id {code}, which is not built in; "
                f"use one of {', '.join(sorted(set(ALLOWED_FILTERS.values())))}"
            )


def member_names(group: h5py.Group) -> list[bytes]:
    """The link names of a group, as stored (bytes), in one linear pass."""
    return list(group.id)


def decode_name(name: bytes) -> str:
    """A link name for messages and lookups; bytes that are not UTF-8 survive as surrogates."""
    return name.decode("utf-8", "surrogateescape")


def open_member(group: h5py.Group, name: bytes) -> Any:
    """The object a (checked, hard) link names: an h5py Group, or the low-level id of a dataset
    (``h5d.DatasetID``) or named type. h5py's ``group[name]`` costs several times more (its Dataset
    reads the creation properties again), which counts over thousands of tiles; the checks here
    and :class:`~c2seg_kit.h5safe.chunks.RasterReader` take the id."""
    oid = h5o.open(group.id, name)
    return h5py.Group(oid) if isinstance(oid, h5g.GroupID) else oid


def _member_link_kind(group: h5py.Group, name: bytes) -> str | None:
    """None for a hard link, else a word for the link type that is refused (no link followed)."""
    return _link_word(group.id.links.get_info(name).type)


def check_tree(f: h5py.File, ctx: Context, wide: Iterable[str] = ()) -> None:
    """Walk the whole file one hard link at a time, refusing any other link and bounding its size.

    Unlike ``visititems`` (which silently skips soft and external links), every link is looked at
    itself. Every dataset's storage is checked, even ones the kit never reads, because whoever
    opens the file next might read them. The direct members of a ``wide`` group (paths such as
    "/prediction") count against ``max_group_members`` instead of ``max_objects``. The walk makes
    a bounded number of HDF5 calls per link, so it costs time linear in the number of links.
    """
    objects = 0
    wide = {"/" + p.strip("/") for p in wide}
    check_attr_count(f, "/", ctx)
    stack: list[tuple[h5py.Group, str, int]] = [(f, "", 0)]
    while stack:
        group, prefix, depth = stack.pop()
        n = len(group)  # H5Gget_info: a count, no iteration over a hostile number of links
        is_wide = prefix in wide
        if is_wide and n > ctx.limits.max_group_members:
            raise ctx.error(f"'{prefix}' holds {n} members, more than the {ctx.limits.max_group_members} allowed")
        if not is_wide and objects + n > ctx.limits.max_objects:
            raise ctx.error(f"file holds too many objects (more than {ctx.limits.max_objects}); a submission needs one dataset")
        for name in member_names(group):
            path = f"{prefix}/{decode_name(name)}"
            kind = _member_link_kind(group, name)
            if kind is not None:
                raise ctx.error(f"'{path}' is {kind}; links are refused, not followed")
            objects += 0 if is_wide else 1
            obj = open_member(group, name)
            check_attr_count(obj, path, ctx)
            if isinstance(obj, h5py.Group):
                if depth + 1 > ctx.limits.max_depth:
                    raise ctx.error(f"groups are nested too deeply (more than {ctx.limits.max_depth} levels)")
                stack.append((obj, path, depth + 1))
            elif isinstance(obj, h5d.DatasetID):
                check_storage(obj, path, ctx)


def check_attr_count(obj: Any, path: str, ctx: Context) -> None:
    """Refuse an object with more attributes than the limits allow (a count, nothing is read)."""
    n = h5a.get_num_attrs(_oid(obj))
    if n > ctx.limits.max_attrs:
        raise ctx.error(f"'{path}' has too many attributes ({n} > {ctx.limits.max_attrs})")


def read_str_attr(obj: Any, key: str, ctx: Context) -> str | None:
    """A short text attribute, or None when absent; refuses anything that is not a small string."""
    if key not in obj.attrs:
        return None
    aid = obj.attrs.get_id(key)
    tclass = aid.get_type().get_class()
    if tclass != h5t.STRING or aid.shape not in ((), (1,)):
        raise ctx.error(f"attribute '{key}' must be a text string")
    if not aid.get_type().is_variable_str() and aid.get_type().get_size() > ctx.limits.max_attr_bytes:
        raise ctx.error(f"attribute '{key}' is too long")
    value = obj.attrs[key]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value)
    if len(value) > ctx.limits.max_attr_bytes:
        raise ctx.error(f"attribute '{key}' is too long")
    return value


@dataclass
class RasterLayout:
    """What a checked raster declares; decides how it is read."""

    shape: tuple[int, int]
    dtype: np.dtype
    chunks: tuple[int, int] | None
    filters: list[tuple[int, int]] = field(default_factory=list)  # (filter id, position)

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunks) * self.dtype.itemsize if self.chunks else 0


def check_raster(
    dset: h5py.Dataset | h5d.DatasetID,
    name: str,
    ctx: Context,
    *,
    expected_shape: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> RasterLayout:
    """Check type, space and storage of a 2-D integer raster before any of its data is read."""
    dsid = _oid(dset)
    tid = dsid.get_type()
    tclass = tid.get_class()
    if tclass != h5t.INTEGER:
        kind = _TYPE_CLASS_NAMES.get(tclass, f"type class {tclass}")
        raise ctx.error(f"'{name}' must hold integers (uint8 class ids), got {kind} data")
    size = tid.get_size()
    if size not in (1, 2, 4, 8) or tid.get_precision() != 8 * size or tid.get_offset() != 0:
        raise ctx.error(f"'{name}' has an unusual integer type ({size} bytes, {tid.get_precision()} bits); use uint8")
    dtype = tid.dtype

    space = dsid.get_space()
    stype = space.get_simple_extent_type()
    if stype == h5s.NULL:
        raise ctx.error(f"'{name}' is empty (no dataspace)")
    if stype == h5s.SCALAR:
        raise ctx.error(f"'{name}' must be 2-D (H x W), got a scalar")
    dims = tuple(int(d) for d in space.get_simple_extent_dims())
    maxdims = tuple(int(d) for d in space.get_simple_extent_dims(maxdims=True))
    if len(dims) != 2:
        raise ctx.error(f"'{name}' must be 2-D (H x W), got {len(dims)}-D shape {_fmt_shape(dims)}")
    if any(m == h5s.UNLIMITED for m in maxdims):
        raise ctx.error(f"'{name}' has an unlimited maxshape; write it with a fixed shape")
    if 0 in dims:
        raise ctx.error(f"'{name}' is empty (shape {_fmt_shape(dims)})")
    if expected_shape is not None and dims != tuple(expected_shape):
        raise ctx.error(f"'{name}' has shape {_fmt_shape(dims)}, expected {_fmt_shape(tuple(expected_shape))}")
    if max_pixels is not None and dims[0] * dims[1] > max_pixels:
        raise ctx.error(f"'{name}' declares {_fmt_shape(dims)} pixels, far more than the target city has")

    dcpl = dsid.get_create_plist()
    check_storage(dsid, name, ctx, dcpl)
    chunks = None
    filters: list[tuple[int, int]] = []
    if dcpl.get_layout() == h5d.CHUNKED:
        chunks = tuple(int(c) for c in dcpl.get_chunk())
        if len(chunks) != 2 or any(c > d for c, d in zip(chunks, dims, strict=True)):
            raise ctx.error(f"'{name}' has chunks {_fmt_shape(chunks)} larger than the dataset {_fmt_shape(dims)}")
        nbytes = math.prod(chunks) * dtype.itemsize
        if nbytes > ctx.limits.max_chunk_bytes:
            raise ctx.error(
                f"'{name}' has chunks of {nbytes / 2**20:.0f} MiB (limit {ctx.limits.max_chunk_bytes >> 20} MiB); "
                "use smaller chunks, e.g. chunks=True"
            )
        n_chunks = math.ceil(dims[0] / chunks[0]) * math.ceil(dims[1] / chunks[1])
        if n_chunks > ctx.limits.max_chunks:
            raise ctx.error(
                f"'{name}' is split into {n_chunks} chunks of {_fmt_shape(chunks)} (limit {ctx.limits.max_chunks}); "
                "use larger chunks, e.g. chunks=True"
            )
        filters = [(dcpl.get_filter(i)[0], i) for i in range(dcpl.get_nfilters())]
        codes = [c for c, _ in filters]
        if len(set(codes)) != len(codes):
            raise ctx.error(f"'{name}' applies the same filter twice; write it with one gzip (or lzf) pass")
        if FILTER_LZF in codes and h5z.FILTER_DEFLATE in codes:
            # HDF5 would inflate that gzip itself, without our bound; no honest writer stacks them.
            raise ctx.error(f"'{name}' stacks lzf and gzip compression; use one of them")
        for i in range(dcpl.get_nfilters()):
            code, _, values, _ = dcpl.get_filter(i)
            if code != FILTER_LZF:
                continue
            if nbytes > ctx.limits.max_lzf_chunk_bytes:
                raise ctx.error(
                    f"'{name}' has lzf chunks of {nbytes / 2**20:.1f} MiB (limit {ctx.limits.max_lzf_chunk_bytes >> 20} MiB "
                    "for lzf); use gzip or smaller chunks"
                )
            # h5py's LZF filter allocates cd_values[2] bytes per chunk: a value from the file.
            if len(values) >= 3 and values[2] not in (0, nbytes):
                raise ctx.error(f"'{name}' has an lzf filter whose declared chunk size does not match its chunks")
    return RasterLayout(shape=dims, dtype=dtype, chunks=chunks, filters=filters)  # type: ignore[arg-type]
