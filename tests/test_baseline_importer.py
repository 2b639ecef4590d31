"""Importer for the authors' three state_dict files: their key layout, round trip, refusals."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from c2seg_baseline.config import paper, tiny
from c2seg_baseline.importer import (
    config_from_authors,
    load_authors_model,
    load_authors_state_dicts,
    to_authors_state_dicts,
)
from c2seg_baseline.model import HighDAN
from c2seg_kit.errors import C2SegError

# Keys and shapes read off the authors' networks/HighDAN.py and networks/discriminator.py
# (attribute names, nn.Sequential indices) at paper settings: 10 PCA bands, 14 classes.
AUTHORS_GENERATOR_KEYS = {
    "conv1.weight": (64, 10, 3, 3),
    "bn2.running_var": (64,),
    "conv_msi.weight": (64, 4, 3, 3),
    "bn_sar.bias": (64,),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.0.downsample.1.running_mean": (256,),
    "msi_layer1.3.conv3.weight": (256, 64, 1, 1),
    "sar_layer1.2.bn2.weight": (64,),
    "transition1.0.0.weight": (48, 256, 3, 3),
    "transition1.0.1.bias": (48,),
    "transition1.1.0.0.weight": (96, 256, 3, 3),
    "transition2.2.0.1.weight": (192,),
    "transition3.3.0.0.weight": (384, 192, 3, 3),
    "stage2.0.branches.1.3.conv2.weight": (96, 96, 3, 3),
    "stage3.0.branches.2.2.bn1.running_var": (192,),
    "stage4.0.branches.3.0.conv1.weight": (384, 384, 3, 3),
    "stage2.0.fuse_layers.0.1.0.weight": (48, 96, 1, 1),
    "stage3.0.fuse_layers.2.0.0.0.weight": (48, 48, 3, 3),
    "stage3.0.fuse_layers.2.0.1.0.weight": (192, 48, 3, 3),
    "stage4.0.fuse_layers.0.3.1.running_var": (48,),
    "stage4.0.fuse_layers.3.0.2.1.weight": (384,),
    "stage4.0.fuse_layers.3.2.0.0.weight": (384, 192, 3, 3),
    "last_layer.0.weight": (256, 2160, 3, 3),
    "last_layer.0.bias": (256,),
    "last_layer.4.num_batches_tracked": (),
    "last_layer.7.running_mean": (64,),
    "transconv.weight": (64, 64, 2, 2),
    "final_conv.weight": (14, 64, 1, 1),
    "final_conv.bias": (14,),
}
AUTHORS_D0 = {"conv1.weight": (1080, 2160, 3, 3), "conv2.bias": (540,), "conv3.weight": (270, 540, 3, 3),
              "classifier.weight": (1, 270, 3, 3), "classifier.bias": (1,)}
AUTHORS_D1 = {"conv1.weight": (32, 14, 4, 4), "conv4.weight": (256, 128, 4, 4), "classifier.weight": (1, 256, 4, 4)}


def test_export_uses_the_authors_key_layout_at_paper_settings():
    dicts = to_authors_state_dicts(HighDAN(paper()))
    for part, expected in (("generator", AUTHORS_GENERATOR_KEYS), ("d0", AUTHORS_D0), ("d1", AUTHORS_D1)):
        for key, shape in expected.items():
            assert tuple(dicts[part][key].shape) == shape, (part, key)
    gen = dicts["generator"]
    # their transitions hold None where widths already match: no such keys
    assert not any(k.startswith(("transition2.0.", "transition2.1.", "transition3.0.")) for k in gen)
    # every key was rewritten: none of our module names remain
    ours = ("stems.", "stage1.", "stages.", "transitions.", "head.", ".body.", ".shortcut.", ".conv.", ".bn.", "upsample")
    assert not [k for k in gen if any(s in k for s in ours)]
    assert set(dicts["d0"]) == {f"{n}.{p}" for n in ("conv1", "conv2", "conv3", "classifier") for p in ("weight", "bias")}
    assert len(dicts["d1"]) == 10


def _randomised(cfg, seed):
    """A model whose weights *and* BatchNorm statistics differ from a fresh one."""
    torch.manual_seed(seed)
    model = HighDAN(cfg)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


def test_round_trip_through_files_gives_identical_outputs(tmp_path):
    cfg = tiny()
    theirs = _randomised(cfg, 1)
    paths = {}
    for part, state in to_authors_state_dicts(theirs).items():
        paths[part] = tmp_path / f"{part}.pth"
        torch.save(state, paths[part])
    ours = _randomised(cfg, 2)
    g = torch.Generator().manual_seed(0)
    x = [torch.rand(2, c, 32, 32, generator=g) for c in (10, 4, 2)]
    assert not torch.equal(ours(*x, target=True), theirs(*x, target=True))
    load_authors_state_dicts(ours, paths["generator"], paths["d0"], paths["d1"])
    for target in (False, True):
        assert torch.equal(ours(*x, target=target), theirs(*x, target=target))
    feats = theirs.features(*x)
    assert torch.equal(ours.d0(feats), theirs.d0(feats))
    probs = torch.softmax(theirs(*x, target=True), 1)
    assert torch.equal(ours.d1(probs), theirs.d1(probs))
    assert torch.equal(ours.predict(*x), theirs.predict(*x))


def test_dataparallel_prefix_and_missing_counters_are_accepted():
    cfg = tiny()
    src = _randomised(cfg, 3)
    gen = {f"module.{k}": v for k, v in to_authors_state_dicts(src)["generator"].items()
           if not k.endswith("num_batches_tracked")}
    dst = load_authors_state_dicts(_randomised(cfg, 4), gen)
    for (k, a), b in zip(src.generator.state_dict().items(), dst.generator.state_dict().values(), strict=True):
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(a, b), k


def test_refusals_are_one_line_errors(tmp_path):
    cfg = tiny()
    model = HighDAN(cfg)
    good = to_authors_state_dicts(model)["generator"]
    missing = dict(good)
    del missing["final_conv.weight"]
    extra = {**good, "aux_head.weight": torch.zeros(1)}
    wrong = {**good, "conv1.weight": torch.zeros(16, 242, 3, 3)}  # trained without PCA
    for bad, words in ((missing, "lacks 'final_conv.weight'"), (extra, "unexpected"), (wrong, "shape")):
        with pytest.raises(C2SegError, match=words) as info:
            load_authors_state_dicts(model, bad)
        assert "\n" not in str(info.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(C2SegError, match="is not a readable generator checkpoint") as info:
        load_authors_state_dicts(model, junk)
    assert "\n" not in str(info.value)
    with pytest.raises(C2SegError, match="not found"):
        load_authors_state_dicts(model, tmp_path / "nope.pth")


def test_config_is_read_off_the_generator_file():
    state = to_authors_state_dicts(HighDAN(paper()))["generator"]
    state["conv1.weight"] = torch.zeros(64, 12, 3, 3)
    cfg = config_from_authors(state)
    assert cfg.model.in_channels["hsi"] == 12 and cfg.model.num_outputs == 14
    assert cfg.model.stages == paper().model.stages
    model = load_authors_model(state)
    assert torch.equal(model.generator.stems["hsi"][0].conv.weight, state["conv1.weight"])
