"""HighDAN settings as data: the architecture, the losses and the training schedule.

Two presets ship with the kit:

* ``paper`` -- the authors' settings, read from their training scripts (each is listed in the
  table of docs/reproducing.md). At these settings the parameter counts
  are 16,562,222 (generator), 27,560,521 (D0) and 699,873 (D1).
* ``tiny`` -- narrow widths and one block per branch, for CPU tests and the demo. It keeps the
  kit's data variants (augmentation drawn anew every epoch, every window once per epoch, the target
  stream windowed like the source), which suit a few hundred CPU steps on a small city.

A JSON file may start from a preset and override any field::

    {"base": "tiny", "train": {"lr": 3e-4, "steps": {"AB": 200, "BW": 200}, "window": 32},
     "loss": {"adversarial": false}, "predict": {"stitch": "authors"}}

The per-track fields (``train.steps``, ``train.window``, ``train.stride``) take an object by track
or one number for both. A run's config.json also carries ``"run"`` (what the run was trained
on, see train.py); it is ignored when the file is used as a config.

``get_config("paper" | "tiny" | path)`` returns a :class:`HighDANConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import MODALITIES


@dataclass(frozen=True)
class StageSpec:
    """One HRNet stage (2, 3 or 4): one entry per resolution branch, highest resolution first."""

    widths: tuple[int, ...]  # channels of each branch
    blocks: tuple[int, ...]  # basic blocks in each branch
    modules: int = 1  # HR modules (branches + fusion) stacked in this stage

    @property
    def branches(self) -> int:
        return len(self.widths)


@dataclass(frozen=True)
class ModelConfig:
    """The network: stems and stage 1 per modality, shared HRNet stages 2-4, head, discriminators."""

    in_channels: dict[str, int] = field(default_factory=lambda: {"hsi": 10, "msi": 4, "sar": 2})
    num_outputs: int = 14  # label values 0..13; output 0 is trained against but never predicted
    # Stem per modality: 3x3 conv+BN+ReLU layers, the first with stride 2 (so features live on a 1/2 grid).
    stem_widths: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"hsi": (64, 64), "msi": (64,), "sar": (64,)}
    )
    stage1_blocks: int = 4  # bottleneck blocks per modality
    stage1_planes: int = 64  # bottleneck planes; output is 4x this
    stages: tuple[StageSpec, ...] = (
        StageSpec(widths=(48, 96), blocks=(4, 4)),
        StageSpec(widths=(48, 96, 192), blocks=(3, 3, 3)),
        StageSpec(widths=(48, 96, 192, 384), blocks=(1, 1, 1, 1)),
    )
    bn_momentum: float = 0.01
    head_widths: tuple[int, ...] = (256, 128, 64)  # 3x3 conv+BN+ReLU layers after fusion
    d0_widths: tuple[int, ...] = (1080, 540, 270)  # feature discriminator hidden widths (3x3 convs)
    d1_widths: tuple[int, ...] = (32, 64, 128, 256)  # output discriminator hidden widths (4x4 s2 convs)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.in_channels)

    @property
    def fused_channels(self) -> int:
        """Channels of the fused features: every branch of every modality, concatenated."""
        return len(self.in_channels) * sum(self.stages[-1].widths)


@dataclass(frozen=True)
class LossConfig:
    adversarial: bool = True  # False = source-only ablation (no D0/D1, no target-side attention)
    dice: bool = True  # False = cross-entropy only
    adv_weight: float = 0.01  # weight of the generator's adversarial terms
    dice_smooth: float = 1e-5
    dice_power: int = 1
    source_label: float = 0.0  # least-squares GAN targets
    target_label: float = 1.0


#: The choices of the recipe's switches, first the authors' (see the table in docs/reproducing.md).
AUGMENT = ("once", "per-epoch")  # drawn once per window when the list is built / anew every epoch
SAMPLING = ("fresh", "epochs")  # a fresh random batch every step / every window once per epoch
TARGET_WINDOWS = ("disjoint", "like-source")  # non-overlapping, not augmented / the source's stride and augmentation
STITCH = ("blend", "authors")  # prediction: blended overlapping windows / the authors' tiling
PER_TRACK = ("steps", "window", "stride")  # TrainConfig fields holding one value per track


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4  # generator, Adam
    betas: tuple[float, float] = (0.9, 0.999)
    lr_d: float = 1e-4  # discriminators, Adam
    betas_d: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    poly_power: float = 0.9  # lr = base * (1 - step / steps) ** power
    batch_size: int = 4
    # The authors' scripts: Augsburg 6000 iterations on 128 px windows, Beijing 10000 on 256 px,
    # both with 50 % overlap on the source city.
    steps: dict[str, int] = field(default_factory=lambda: {"AB": 6000, "BW": 10000})
    window: dict[str, int] = field(default_factory=lambda: {"AB": 128, "BW": 256})  # training patch size
    stride: dict[str, int] = field(default_factory=lambda: {"AB": 64, "BW": 128})
    augment: str = "once"  # one of AUGMENT
    sampling: str = "fresh"  # one of SAMPLING
    target_windows: str = "disjoint"  # one of TARGET_WINDOWS

    def for_track(self, track: str, name: str) -> int:
        """A per-track field's value for `track` (a user error when the config has none)."""
        values = getattr(self, name)
        if track not in values:
            raise C2SegError(f"config train.{name} has no value for track {track} (it has {sorted(values)})")
        return int(values[track])


@dataclass(frozen=True)
class PredictConfig:
    """How `c2seg predict` tiles a city, and so how training evaluates (the same code and settings).

    ``window`` / ``overlap`` unset (None) mean the stitch's defaults: for ``blend`` 512 px windows
    overlapping by a quarter; for ``authors`` the training window of the track, no overlap.
    """

    stitch: str = "blend"  # one of STITCH
    window: int | None = None
    overlap: int | None = None


@dataclass(frozen=True)
class HighDANConfig:
    name: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``from_dict(cfg.to_dict()) == cfg``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HighDANConfig:
        """Build from plain data; a ``base`` key names the preset that missing fields come from."""
        if not isinstance(data, dict):
            raise C2SegError("config must be a JSON object")
        data = dict(data)
        data.pop("run", None)  # a run's config.json: what it was trained on, not configuration
        base_name = data.pop("base", None)
        if base_name is None:
            base_name = data.get("name", "paper") if data.get("name") in PRESETS else "paper"
        if base_name not in PRESETS:
            raise C2SegError(f"unknown base config {base_name!r}; expected one of {sorted(PRESETS)}")
        base = PRESETS[base_name]()
        return _merge(base, data, "config")

    def validate(self) -> HighDANConfig:
        m = self.model
        if set(m.in_channels) != set(MODALITIES) or set(m.stem_widths) != set(MODALITIES):
            raise C2SegError(f"model.in_channels and model.stem_widths need exactly the modalities {list(MODALITIES)}")
        if any(not ws for ws in m.stem_widths.values()) or not m.stages:
            raise C2SegError("model.stem_widths entries and model.stages must not be empty")
        for i, s in enumerate(m.stages):
            if len(s.blocks) != len(s.widths):
                raise C2SegError(f"model.stages[{i}]: {len(s.widths)} widths but {len(s.blocks)} block counts")
            prev = m.stages[i - 1].branches if i else 1
            if s.branches < prev:
                raise C2SegError(f"model.stages[{i}] has fewer branches than the stage before it")
        if m.num_outputs < 2:
            raise C2SegError("model.num_outputs must be at least 2")
        positive = [
            *m.in_channels.values(), *(w for ws in m.stem_widths.values() for w in ws), m.stage1_blocks,
            m.stage1_planes, *(w for s in m.stages for w in (*s.widths, *s.blocks, s.modules)),
            *m.head_widths, *m.d0_widths, *m.d1_widths, self.train.batch_size,
            *(v for name in PER_TRACK for v in getattr(self.train, name).values()),
        ]
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in positive):
            raise C2SegError("widths, block counts, batch size, steps, window and stride must be positive integers")
        if not m.head_widths:
            raise C2SegError("model.head_widths must not be empty")
        for where, value, choices in (("train.augment", self.train.augment, AUGMENT),
                                      ("train.sampling", self.train.sampling, SAMPLING),
                                      ("train.target_windows", self.train.target_windows, TARGET_WINDOWS),
                                      ("predict.stitch", self.predict.stitch, STITCH)):
            if value not in choices:
                raise C2SegError(f"{where} must be one of {', '.join(choices)}, not {value!r}")
        for track, window in self.train.window.items():
            if self.train.stride.get(track, window) > window:
                raise C2SegError(f"train.stride for {track} is larger than its window: windows would leave gaps")
        for name in ("window", "overlap"):
            value = getattr(self.predict, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise C2SegError(f"predict.{name} must be null (the stitch's default) or a non-negative integer")
        return self


def _merge(base: Any, data: Any, where: str) -> Any:
    """Override the fields of dataclass ``base`` with ``data``, converting lists to tuples/specs."""
    if not isinstance(data, dict):
        raise C2SegError(f"{where} must be a JSON object")
    names = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise C2SegError(f"unknown field {where}.{unknown[0]}; expected one of {sorted(names)}")
    changes = {}
    for key, value in data.items():
        current = getattr(base, key)
        here = f"{where}.{key}"
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, here)
        elif key == "stages":
            if not isinstance(value, list):
                raise C2SegError(f"{here} must be a list of stage objects")
            changes[key] = tuple(_stage(v, f"{here}[{i}]") for i, v in enumerate(value))
        elif isinstance(current, tuple):
            if not isinstance(value, list):
                raise C2SegError(f"{here} must be a list")
            changes[key] = tuple(value)
        elif key in PER_TRACK and isinstance(current, dict) and isinstance(value, int) and not isinstance(value, bool):
            changes[key] = dict.fromkeys(current, value)  # one number: every track
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise C2SegError(f"{here} must be an object")
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            changes[key] = {**current, **value} if key in PER_TRACK else value  # by track: the others stay
        else:
            if isinstance(current, bool) and not isinstance(value, bool):
                raise C2SegError(f"{here} must be true or false")
            if isinstance(current, (int, float)) and not isinstance(current, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise C2SegError(f"{here} must be a number")
                value = type(current)(value) if isinstance(current, float) else value
            if isinstance(current, str) and not isinstance(value, str):
                raise C2SegError(f"{here} must be a string")
            changes[key] = value
    return dataclasses.replace(base, **changes)


def _stage(value: Any, where: str) -> StageSpec:
    if not isinstance(value, dict):
        raise C2SegError(f"{where} must be an object with widths and blocks")
    try:
        return StageSpec(
            widths=tuple(value["widths"]), blocks=tuple(value["blocks"]), modules=value.get("modules", 1)
        )
    except (KeyError, TypeError):
        raise C2SegError(f"{where} needs lists 'widths' and 'blocks'") from None


def paper() -> HighDANConfig:
    """The authors' settings (docs/reproducing.md lists each)."""
    return HighDANConfig(name="paper")


def tiny() -> HighDANConfig:
    """Narrow and shallow: a training step on 64 x 64 windows takes well under a second on a CPU."""
    return HighDANConfig(
        name="tiny",
        model=ModelConfig(
            stem_widths={"hsi": (16, 16), "msi": (16,), "sar": (16,)},
            stage1_blocks=1,
            stage1_planes=8,
            stages=(
                StageSpec(widths=(8, 16), blocks=(1, 1)),
                StageSpec(widths=(8, 16, 32), blocks=(1, 1, 1)),
                StageSpec(widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1)),
            ),
            head_widths=(32, 16, 16),
            d0_widths=(32, 16, 8),
            d1_widths=(8, 16, 32, 64),
        ),
        train=TrainConfig(lr=1e-3, lr_d=1e-3, window={"AB": 64, "BW": 64}, stride={"AB": 32, "BW": 32},
                          augment="per-epoch", sampling="epochs", target_windows="like-source"),
    )


PRESETS = {"paper": paper, "tiny": tiny}


def get_config(name_or_path: str | Path) -> HighDANConfig:
    """A preset by name (``paper``, ``tiny``) or a JSON file (see the module docstring)."""
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]()
    path = Path(key)
    if not path.is_file():
        raise C2SegError(f"config {key!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise C2SegError(f"cannot read config {path}: {exc}") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return HighDANConfig.from_dict(data).validate()
