"""HighDAN model: parameter counts at paper settings, shapes, attention and prediction on tiny."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from c2seg_baseline.config import HighDANConfig, get_config, paper, tiny
from c2seg_baseline.model import HighDAN, labels_from_logits
from c2seg_kit.errors import C2SegError


def _inputs(batch=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, c, size, size, generator=g) for c in (10, 4, 2)]


def test_parameter_counts_at_paper_settings():
    # The counts of the authors' network at their settings; counting needs no forward pass.
    assert HighDAN(paper()).parameter_counts() == {"generator": 16_562_222, "d0": 27_560_521, "d1": 699_873}


def test_paper_fusion_width_and_shared_stages():
    model = HighDAN(paper())
    assert paper().model.fused_channels == 2160
    assert model.d0.convs[0].in_channels == 2160
    assert model.generator.head[0].conv.in_channels == 2160
    # one set of stage 2-4 weights for all three modalities, one stem/stage-1 per modality
    assert len(model.generator.stages) == 3
    assert set(model.generator.stems) == set(model.generator.stage1) == {"hsi", "msi", "sar"}
    assert [len(s[0].branches) for s in model.generator.stages] == [2, 3, 4]


def test_tiny_shapes_and_attention():
    torch.manual_seed(0)
    model = HighDAN(tiny()).eval()
    x = _inputs()
    feats = model.features(*x)
    assert feats.shape == (2, tiny().model.fused_channels, 16, 16)
    attended, d0_out = model.attend(feats)
    assert d0_out.shape == (2, 1, 16, 16)
    expected = feats * (1 + torch.tanh(d0_out).abs())
    torch.testing.assert_close(attended, expected)
    src = model(*x, target=False)
    tgt = model(*x, target=True)
    assert src.shape == tgt.shape == (2, 14, 32, 32)
    assert not torch.allclose(src, tgt)  # the attention changes the target-side logits
    torch.testing.assert_close(src, model.segment(feats, (32, 32)))


def test_odd_input_size_gives_logits_at_input_resolution():
    model = HighDAN(tiny()).eval()
    x = [t[..., :37, :45] for t in _inputs(batch=1, size=48)]
    assert model(*x, target=True).shape == (1, 14, 37, 45)


def test_prediction_never_chooses_output_zero():
    logits = torch.zeros(1, 14, 2, 3)
    logits[:, 0] = 100.0  # output 0 dominates everywhere
    logits[0, 5, 0, 1] = 1.0
    labels = labels_from_logits(logits)
    assert labels.dtype == torch.uint8
    # Ties among outputs 1..13 go to the first: class 1 everywhere but the one pixel of class 5.
    assert labels.tolist() == [[[1, 5, 1], [1, 1, 1]]]
    model = HighDAN(tiny()).eval()
    x = _inputs()
    pred = model.predict(*x)
    with torch.no_grad():
        logits = model(*x, target=True)
    assert pred.dtype == torch.uint8 and pred.shape == (2, 32, 32)
    assert torch.equal(pred.long(), logits[:, 1:].argmax(dim=1) + 1)


def test_source_only_config_turns_attention_off():
    cfg = HighDANConfig.from_dict({"base": "tiny", "loss": {"adversarial": False}})
    model = HighDAN(cfg).eval()
    x = _inputs()
    torch.testing.assert_close(model(*x, target=True), model(*x, target=False))


def test_config_json_roundtrip_and_errors(tmp_path):
    for cfg in (paper(), tiny()):
        assert HighDANConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"base": "tiny", "train": {"lr": 0.01}, "loss": {"dice": False}}))
    cfg = get_config(path)
    assert cfg.train.lr == 0.01 and cfg.loss.dice is False and cfg.model == tiny().model
    assert get_config("paper") == paper()
    for bad in ({"train": {"nope": 1}}, {"loss": {"dice": "yes"}}, {"base": "huge"},
                {"model": {"stages": [{"widths": [8, 16], "blocks": [1]}]}}):
        path.write_text(json.dumps({"base": "tiny", **bad} if "base" not in bad else bad))
        with pytest.raises(C2SegError):
            get_config(path)
    with pytest.raises(C2SegError):
        get_config(tmp_path / "missing.json")
