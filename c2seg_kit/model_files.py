"""A model attached to a submission, so that organizers can re-run it (`c2seg admin verify`):
what kind of file it is, and whether an ONNX file is a plain inference graph.

Two kinds (docs/verify.md):

- ``checkpoint``: a kit checkpoint (`c2seg train-baseline`, `c2seg import-weights`), a zip
  archive as torch.save writes it. Only ever read with torch.load(weights_only=True), and
  never by the scoring server: the server stores its bytes;
- ``onnx``: an ONNX model whose inputs are named after the modalities (``hsi``, ``msi``,
  ``sar``: float32 N x C x H x W, the prepared cache's values) and whose one output is the
  logits N x K x H x W (K = 14 as the kit's HighDAN, channel c for class c, or K = 13, class
  = channel + 1).

The kind is decided from the file's first bytes alone (:func:`sniff`), so the server never
parses a model. :func:`check_onnx` (needs the ``onnx`` package, the ``verify`` extra) refuses,
in one line, an ONNX file that is more than a plain inference graph: operators outside the
default ``ai.onnx`` domain (custom or ``ai.onnx.ml`` ones, also inside functions and nested
graphs), tensors kept in external data files, training information. The file's size is
checked before it is parsed.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import MODALITIES

KINDS = ("checkpoint", "onnx")
#: The largest model file the client sends and the verifier parses (the server's own cap is its
#: setting C2SEG_MAX_MODEL_BYTES).
MAX_MODEL_BYTES = 1024 * 1024 * 1024
#: How the extra is installed that re-runs a model.
VERIFY_EXTRA = "pip install 'c2seg-kit[verify]'"
#: The only operator domains a plain inference graph may use ("" is ai.onnx's other name).
DEFAULT_DOMAINS = ("", "ai.onnx")
#: The ONNX output's channels: the kit's HighDAN (channel 0 unlabelled, never chosen) or the 13 classes.
OUTPUT_CHANNELS = (14, 13)
#: ModelProto's first field, as every exporter writes it: ir_version (field 1, a varint), then a
#: field of the model (its tag byte): producer, domain, model version, doc string, graph, opsets.
_ONNX_NEXT_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42})
ZIP_MAGIC = b"PK\x03\x04"
#: The old (pre-1.6) torch.save format: a bare pickle stream.
PICKLE_MAGIC = b"\x80"


def sniff(head: bytes) -> str | None:
    """The kind of a model file from its first bytes (at least 3): ``checkpoint`` for a zip
    archive, ``onnx`` for a protobuf ModelProto, None for anything else. Nothing is parsed."""
    if head[:4] == ZIP_MAGIC:
        return "checkpoint"
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 0x7F and head[2] in _ONNX_NEXT_TAGS:
        return "onnx"
    return None


def refusal(head: bytes) -> str:
    """Why a file whose first bytes are `head` is no model file the kit takes (one line)."""
    if head[:1] == PICKLE_MAGIC:
        return ("the model file is a bare pickle (torch.save's legacy format): attach a kit checkpoint "
                "(a zip archive, as `c2seg train-baseline` writes it) or an ONNX file")
    return "the model file is neither a kit checkpoint (a zip archive) nor an ONNX model"


def checkpoint_members_ok(names: list[str]) -> bool:
    """Whether a zip archive's member names are those of a torch.save archive (one folder with
    data.pkl in it), read from its central directory without unpickling anything."""
    return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)


@dataclass(frozen=True)
class ModelFile:
    kind: str
    size: int
    inputs: tuple[str, ...] = ()


def check_size(path: Path, max_bytes: int) -> int:
    size = path.stat().st_size
    if size > max_bytes:
        raise C2SegError(f"{path.name} is {size / 2**20:.1f} MiB, larger than the {max_bytes / 2**20:g} MiB "
                         "a model may be")
    return size


def inspect_model(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES, need_onnx: bool = False) -> ModelFile:
    """The model file at `path`, checked as far as what is installed allows: its kind from its
    first bytes, a checkpoint's archive members, an ONNX file's graph (:func:`check_onnx`, when
    the ``onnx`` package is installed, or always with `need_onnx`). One-line C2SegError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise C2SegError(f"no such model file: {path}")
    size = check_size(path, max_bytes)
    with open(path, "rb") as f:
        head = f.read(16)
    kind = sniff(head)
    if kind is None:
        raise C2SegError(f"{path.name}: {refusal(head)}")
    if kind == "checkpoint":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            raise C2SegError(f"{path.name}: the zip archive is damaged: not a kit checkpoint") from None
        if not checkpoint_members_ok(names):
            raise C2SegError(f"{path.name}: a zip archive, but not one torch.save wrote: not a kit checkpoint")
        return ModelFile(kind, size)
    if not need_onnx:
        try:
            import onnx  # noqa: F401
        except ImportError:
            return ModelFile(kind, size)
    return ModelFile(kind, size, check_onnx(path, max_bytes=max_bytes))


def _need_onnx():
    try:
        import onnx
    except ImportError:
        raise C2SegError(f"checking an ONNX model needs the onnx package: {VERIFY_EXTRA}") from None
    return onnx


def check_onnx(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES) -> tuple[str, ...]:
    """Refuse, in one line, an ONNX file that is not a plain inference graph (see the module's
    docstring) or whose inputs and output do not follow the kit's convention; returns the input
    names. The size is checked before a byte is parsed; external data is never loaded."""
    onnx = _need_onnx()
    path = Path(path)
    check_size(path, max_bytes)
    name = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf fails on junk in many ways; all mean "not ONNX"
        raise C2SegError(f"{name}: not a readable ONNX model ({type(e).__name__})") from None
    if len(model.training_info):
        raise C2SegError(f"{name}: the ONNX model holds training information: attach a plain inference graph")
    foreign = sorted({o.domain for o in model.opset_import if o.domain not in DEFAULT_DOMAINS})
    if foreign:
        raise C2SegError(f"{name}: the ONNX model imports the operator domain {foreign[0]!r}: only the default "
                         "ai.onnx operators are accepted (no custom operators)")
    for fn in model.functions:
        if fn.domain not in DEFAULT_DOMAINS:
            raise C2SegError(f"{name}: the ONNX model defines the function {fn.name!r} in the domain {fn.domain!r}: "
                             "only the default ai.onnx operators are accepted (no custom operators)")
        _check_nodes(onnx, fn.node, name)
    _check_graph(onnx, model.graph, name)
    return _check_io(onnx, model.graph, name)


def _check_tensor(onnx, tensor, name: str) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
        raise C2SegError(f"{name}: the ONNX model keeps the tensor {tensor.name!r} in an external data file: "
                         "attach one self-contained file (save it without external data)")


def _check_graph(onnx, graph, name: str) -> None:
    for tensor in graph.initializer:
        _check_tensor(onnx, tensor, name)
    for sparse in graph.sparse_initializer:
        _check_tensor(onnx, sparse.values, name)
        _check_tensor(onnx, sparse.indices, name)
    _check_nodes(onnx, graph.node, name)


def _check_nodes(onnx, nodes, name: str) -> None:
    A = onnx.AttributeProto
    for node in nodes:
        if node.domain not in DEFAULT_DOMAINS:
            raise C2SegError(f"{name}: the ONNX model uses the operator {node.op_type!r} of the domain "
                             f"{node.domain!r}: only the default ai.onnx operators are accepted (no custom operators)")
        for attr in node.attribute:
            if attr.type == A.GRAPH:
                _check_graph(onnx, attr.g, name)
            elif attr.type == A.GRAPHS:
                for g in attr.graphs:
                    _check_graph(onnx, g, name)
            elif attr.type == A.TENSOR:
                _check_tensor(onnx, attr.t, name)
            elif attr.type == A.TENSORS:
                for t in attr.tensors:
                    _check_tensor(onnx, t, name)


def _check_io(onnx, graph, name: str) -> tuple[str, ...]:
    """The kit's convention: inputs named after modalities, float32 rank 4; one rank-4 output."""
    initialised = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialised]
    names = tuple(i.name for i in inputs)
    if not names or any(n not in MODALITIES for n in names) or len(set(names)) != len(names):
        raise C2SegError(f"{name}: the ONNX model's inputs are {', '.join(map(repr, names)) or 'none'}; they must be "
                         f"named after the modalities they take ({', '.join(MODALITIES)}; see docs/verify.md)")
    for i in inputs:
        t = i.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT or len(t.shape.dim) != 4:
            raise C2SegError(f"{name}: the ONNX input {i.name!r} must be float32 N x C x H x W")
    if len(graph.output) != 1 or len(graph.output[0].type.tensor_type.shape.dim) != 4:
        raise C2SegError(f"{name}: the ONNX model must have one output, the logits N x K x H x W")
    k = graph.output[0].type.tensor_type.shape.dim[1]
    if k.HasField("dim_value") and k.dim_value not in OUTPUT_CHANNELS:
        raise C2SegError(f"{name}: the ONNX output has {k.dim_value} channels; it must have 14 (as the kit's "
                         "HighDAN: channel c is class c) or 13 (class = channel + 1)")
    return names
