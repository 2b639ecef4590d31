"""Load the authors' HighDAN checkpoints (three state_dict files) into :class:`HighDAN`.

The authors save ``model.state_dict()`` (their ``HighResolutionNet``), ``model_DA[0]`` (D0, their
``FCDiscriminator``) and ``model_DA[1]`` (D1, their ``OutspaceDiscriminator``). Their key names
follow their attribute names (``conv1``, ``msi_layer1``, ``transition2``, ``stage3.0.fuse_layers``,
``last_layer``...). :data:`GENERATOR_RULES` and :data:`DISCRIMINATOR_RULES` rewrite each of our keys
into theirs; loading inverts that map over the model's own keys, so one rule set serves both ways.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor

from c2seg_kit.errors import C2SegError

from .checkpoint import FORMAT, PARTS, load_file
from .config import HighDANConfig, paper
from .model import HighDAN

_CONV_BN = {"conv": "0", "bn": "1"}  # their Sequential(conv, bn[, relu]) indices
_STAGE1 = {"hsi": "layer1", "msi": "msi_layer1", "sar": "sar_layer1"}

Rule = tuple[str, Callable[[re.Match], str]]

#: Our generator key -> theirs, applied in order (a rule rewrites the part of the key it matches).
GENERATOR_RULES: list[Rule] = [
    # stems: hsi has conv1/bn1, conv2/bn2; msi, sar have one conv_<m>/bn_<m>
    (r"^stems\.hsi\.(\d+)\.(conv|bn)\.", lambda m: f"{m[2]}{int(m[1]) + 1}."),
    (r"^stems\.(msi|sar)\.0\.(conv|bn)\.", lambda m: f"{m[2]}_{m[1]}."),
    # stage 1 per modality
    (r"^stage1\.(hsi|msi|sar)\.", lambda m: f"{_STAGE1[m[1]]}."),
    # transitions: a ConvBNAct (re-width) or a Sequential of them (new branch)
    (r"^transitions\.(\d+)\.(\d+)\.(?:(\d+)\.)?(conv|bn)\.",
     lambda m: f"transition{int(m[1]) + 1}.{m[2]}." + (f"{m[3]}." if m[3] else "") + f"{_CONV_BN[m[4]]}."),
    # HRNet stages 2-4: branches keep their layout; fuse paths as transitions
    (r"^stages\.(\d+)\.(\d+)\.branches\.", lambda m: f"stage{int(m[1]) + 2}.{m[2]}.branches."),
    (r"^stages\.(\d+)\.(\d+)\.fuse\.(\d+)\.(\d+)\.(?:(\d+)\.)?(conv|bn)\.",
     lambda m: f"stage{int(m[1]) + 2}.{m[2]}.fuse_layers.{m[3]}.{m[4]}."
     + (f"{m[5]}." if m[5] else "") + f"{_CONV_BN[m[6]]}."),
    # inside residual blocks (stage 1 bottlenecks and stage 2-4 basic blocks)
    (r"\.body\.(\d+)\.(conv|bn)\.", lambda m: f".{m[2]}{int(m[1]) + 1}."),
    (r"\.shortcut\.(conv|bn)\.", lambda m: f".downsample.{_CONV_BN[m[1]]}."),
    # head: their last_layer is one Sequential of (conv, bn, relu) x 3
    (r"^head\.(\d+)\.(conv|bn)\.", lambda m: f"last_layer.{3 * int(m[1]) + int(_CONV_BN[m[2]])}."),
    (r"^upsample\.", lambda m: "transconv."),
    (r"^classifier\.", lambda m: "final_conv."),
]


def _discriminator_rules(n_convs: int) -> list[Rule]:
    """Their discriminators: conv1, conv2, ... and the last conv named ``classifier``."""
    return [(r"^convs\.(\d+)\.",
             lambda m: "classifier." if int(m[1]) == n_convs - 1 else f"conv{int(m[1]) + 1}.")]


def _rename(key: str, rules: list[Rule]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key, count=1)
    return key


def authors_generator_key(key: str) -> str:
    """The authors' name of one of our generator keys (``stages.0.0.branches...`` -> ``stage2.0.branches...``)."""
    return _rename(key, GENERATOR_RULES)


def authors_key_map(model: HighDAN) -> dict[str, dict[str, str]]:
    """``{part: {our key: their key}}`` for the generator, D0 and D1."""
    rules = {
        "generator": GENERATOR_RULES,
        "d0": _discriminator_rules(len(model.d0.convs)),
        "d1": _discriminator_rules(len(model.d1.convs)),
    }
    out = {}
    for part in PARTS:
        mapping = {k: _rename(k, rules[part]) for k in getattr(model, part).state_dict()}
        if len(set(mapping.values())) != len(mapping):  # a rule collapsed two keys: a bug, not user input
            raise RuntimeError(f"key rules for {part} are not one-to-one")
        out[part] = mapping
    return out


def to_authors_state_dicts(model: HighDAN) -> dict[str, dict[str, Tensor]]:
    """Our weights in the authors' three layouts (what their ``torch.save`` calls would write)."""
    result = {}
    for part, mapping in authors_key_map(model).items():
        state = getattr(model, part).state_dict()
        result[part] = {theirs: state[ours] for ours, theirs in mapping.items()}
    return result


def _read(source: str | Path | Mapping[str, Tensor], part: str) -> dict[str, Tensor]:
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        state = load_file(path, f"{part} checkpoint")
        if not isinstance(state, Mapping):
            raise C2SegError(f"{part} checkpoint {path} does not hold a state_dict")
    return without_module_prefix(state)


def without_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` without the "module." that nn.DataParallel / DDP checkpoints put before every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def config_from_authors(generator: str | Path | Mapping[str, Tensor]) -> HighDANConfig:
    """The paper config with the input bands and outputs read off an authors' generator checkpoint."""
    state = _read(generator, "generator")
    try:
        hsi, outputs = int(state["conv1.weight"].shape[1]), int(state["final_conv.weight"].shape[0])
    except (KeyError, AttributeError, IndexError):
        raise C2SegError("generator checkpoint lacks conv1.weight/final_conv.weight: not a HighDAN generator") from None
    base = paper()
    data = base.to_dict()
    data["model"]["in_channels"]["hsi"] = hsi
    data["model"]["num_outputs"] = outputs
    return HighDANConfig.from_dict(data)


def load_authors_state_dicts(
    model: HighDAN,
    generator: str | Path | Mapping[str, Tensor],
    d0: str | Path | Mapping[str, Tensor] | None = None,
    d1: str | Path | Mapping[str, Tensor] | None = None,
) -> HighDAN:
    """Load the authors' generator (and D0, D1 when given: files or state_dicts) into ``model``.

    Every key must be present with its shape (BatchNorm ``num_batches_tracked`` may be absent);
    anything missing, extra or mis-shaped is a :class:`C2SegError` naming the first such key.
    """
    sources = {"generator": generator, "d0": d0, "d1": d1}
    for part, mapping in authors_key_map(model).items():
        if sources[part] is None:
            continue
        theirs = _read(sources[part], part)
        module = getattr(model, part)
        ours = module.state_dict()
        loaded = {}
        for our_key, their_key in mapping.items():
            if their_key not in theirs:
                if our_key.endswith("num_batches_tracked"):
                    loaded[our_key] = ours[our_key]
                    continue
                raise C2SegError(f"{part} checkpoint lacks {their_key!r} ({len(theirs)} keys): not the authors' layout?")
            value = theirs[their_key]
            if not isinstance(value, Tensor) or value.shape != ours[our_key].shape:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise C2SegError(
                    f"{part} checkpoint {their_key!r} has shape {shape}, the model expects "
                    f"{tuple(ours[our_key].shape)} (other bands/classes? see config_from_authors)"
                )
            loaded[our_key] = value
        extra = sorted(set(theirs) - set(mapping.values()))
        if extra:
            raise C2SegError(f"{part} checkpoint has {len(extra)} unexpected key(s), e.g. {extra[0]!r}")
        module.load_state_dict(loaded)
    return model


def load_authors_model(
    generator: str | Path | Mapping[str, Tensor],
    d0: str | Path | Mapping[str, Tensor] | None = None,
    d1: str | Path | Mapping[str, Tensor] | None = None,
) -> HighDAN:
    """A :class:`HighDAN` at paper settings (bands read off the file) holding the authors' weights."""
    state = _read(generator, "generator")
    return load_authors_state_dicts(HighDAN(config_from_authors(state)), state, d0, d1)


# --- the authors' files as `predict --checkpoint` ---------------------------------------------------

#: The authors' scripts save the generator as best_model.pth and the discriminators beside it.
AUTHORS_FILES = {"generator": "best_model.pth", "d0": "best_DA_1.pth", "d1": "best_DA_2.pth"}


def is_authors_generator(state: object) -> bool:
    """Whether a loaded file looks like the authors' generator state_dict (their first and last convs),
    not a kit checkpoint."""
    if not isinstance(state, Mapping) or state.get("format") == FORMAT:
        return False
    keys = {k[len("module."):] if k.startswith("module.") else k for k in state}
    return {"conv1.weight", "final_conv.weight"} <= keys


#: How the authors name the discriminator files after their generator file (X_model.pth -> X_DA_1.pth).
_DISCRIMINATOR_NAMES = {"d0": "DA_1", "d1": "DA_2"}


def named_after(generator: Path, part: str) -> Path:
    """The `part` ("d0" or "d1") file named after an authors' generator file, beside it."""
    return generator.with_name(generator.name.replace("model", _DISCRIMINATOR_NAMES[part]))


def sibling_d0(generator: Path) -> Path:
    """The D0 file that goes with an authors' generator file: best_DA_1.pth beside best_model.pth
    (or beside X_model.pth, X_DA_1.pth)."""
    named = named_after(generator, "d0")
    return named if named != generator and named.is_file() else generator.with_name(AUTHORS_FILES["d0"])


def load_authors_files(generator: str | Path, state: Mapping[str, Tensor] | None = None) -> HighDAN:
    """A HighDAN from the authors' generator file and the D0 file beside it (see :func:`sibling_d0`);
    D0 is needed because the target-side attention uses it. D1 plays no part in prediction."""
    generator = Path(generator)
    d0 = sibling_d0(generator)
    if not d0.is_file():
        raise C2SegError(f"the authors' generator {generator} needs its D0 file beside it ({d0.name}): "
                         "HighDAN's target-side attention uses D0")
    return load_authors_model(state if state is not None else generator, d0)
