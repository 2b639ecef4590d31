"""Re-running a model a team attached to its submission, for `c2seg admin verify`.

Run as a child process of the organizer's shell (``python -m c2seg_baseline.rerun ...``), never
in a web process: it predicts the prepared test inputs (the cache `c2seg prepare` wrote for the
hidden test city) with the attached model, through the same code as `c2seg predict` (the same
windows, stitch and argmax), into a submission file the verifier then compares with the
submitted one.

- a kit checkpoint is read with torch.load(weights_only=True) (checkpoint.load_file): a file
  that would run code when unpickled is refused, not run;
- an ONNX model is first checked to be a plain inference graph (c2seg_kit.model_files), then run
  by onnxruntime on the CPU, as a HighDAN is called: its inputs named after the modalities, its
  logits N x K x H x W (docs/verify.md).

Failures are one line on stderr (``error: ...``) and exit 1; the verifier passes the line on.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from c2seg_kit import model_files
from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import MODALITIES

from .devices import resolve_device
from .predict import predict_to_file, prepared_to_file
from .stitch import BLEND_WINDOW, Tiling
from .windows import open_prepared


class OnnxModel:
    """An onnxruntime session called the way the kit's stitch calls a HighDAN:
    ``model(hsi, msi, sar, target=True)`` -> logits (N, 14, H, W) as a torch tensor (a model with
    13 output channels gets a channel 0 put in front, which the stitch never reads)."""

    def __init__(self, path: str, inputs: tuple[str, ...], threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = inputs

    def eval(self):
        return self

    def __call__(self, *arrays, target: bool = True):
        given = dict(zip(MODALITIES, arrays, strict=True))
        feeds = {name: np.ascontiguousarray(given[name].detach().cpu().numpy(), dtype=np.float32)
                 for name in self.inputs}
        (out,) = self.session.run(None, feeds)[:1]
        if out.ndim != 4 or out.shape[0] != len(arrays[0]) or out.shape[2:] != tuple(arrays[0].shape[2:]):
            raise C2SegError(f"the ONNX model answered a batch of {tuple(arrays[0].shape)} windows with logits "
                             f"of shape {tuple(out.shape)}; expected N x K x H x W of the same N, H and W")
        if out.shape[1] == 13:
            out = np.concatenate([np.zeros_like(out[:, :1]), out], axis=1)
        elif out.shape[1] != 14:
            raise C2SegError(f"the ONNX model's logits have {out.shape[1]} channels; expected 14 or 13")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def _static(dim) -> int | None:
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def onnx_layout(path: str) -> dict[str, tuple[int | None, int | None, int | None]]:
    """input name -> its static (C, H, W) (None where the dimension is dynamic)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    initialised = {t.name for t in graph.initializer}
    return {i.name: tuple(_static(d) for d in list(i.type.tensor_type.shape.dim)[1:])
            for i in graph.input if i.name not in initialised}


def onnx_to_file(path: str, data: str, track: str, out: str, *, stitch: str | None, window: int | None,
                 overlap: int | None, max_bytes: int, threads: int | None) -> dict:
    """The ONNX model at `path`, checked, over the prepared target city into a submission file."""
    inputs = model_files.check_onnx(path, max_bytes=max_bytes)
    layout = onnx_layout(path)
    with open_prepared(data, track) as prepared:
        channels = prepared.target.channels
        for name, (c, _, _) in layout.items():
            if c is not None and c != channels[name]:
                raise C2SegError(f"the ONNX input {name!r} takes {c} channels; the prepared cache {data} has "
                                 f"{channels[name]} {name} bands: is it the cache the team prepared with "
                                 "the same options?")
        fixed = {(h, w) for c, h, w in layout.values() if h is not None and h == w}
        if window is None:  # a model of one static window size is run at that size
            window = next(iter(fixed))[0] if len(fixed) == 1 else BLEND_WINDOW
        stitch = stitch or "blend"
        if overlap is None:
            overlap = 0 if stitch == "authors" else window // 4
        tiling = Tiling(stitch, int(window), int(overlap)).check()
        model = OnnxModel(path, inputs, threads)
        return prepared_to_file(model, prepared, out, tiling=tiling, method="re-run (ONNX)", batch_size=1,
                                device=torch.device("cpu"), amp=False, progress=False)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kind == "onnx":
        return onnx_to_file(args.model, args.prepared, args.track, args.out, stitch=args.stitch, window=args.window,
                            overlap=args.overlap, max_bytes=args.max_bytes, threads=args.threads)
    device = resolve_device(args.device)
    # fp32 (no autocast): the re-run is compared pixel for pixel
    return predict_to_file(args.model, args.prepared, args.track, args.out, stitch=args.stitch, window=args.window,
                           overlap=args.overlap, device=str(device), amp=False, method="re-run (checkpoint)",
                           progress=False, threads=args.threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m c2seg_baseline.rerun", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--kind", required=True, choices=model_files.KINDS)
    p.add_argument("--prepared", required=True)
    p.add_argument("--track", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stitch", choices=("blend", "authors"))
    p.add_argument("--window", type=int)
    p.add_argument("--overlap", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--max-bytes", type=int, default=model_files.MAX_MODEL_BYTES)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except C2SegError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: the re-run ran out of memory", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
