"""Where a run's weights start: --init-backbone (ImageNet HRNetV2-W48) and --init-from (another run).

The backbone mapping is checked against timm's hrnet_w48 (an HRNet written by others, with the key
names of the HRNet classification release): after loading its random weights, our stage outputs
equal timm's own forward pass through the parts the authors load.
"""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")

from baseline_support import assert_one_line_error, config_file, make_prepared, run_cli, tiny_options
from timm_shim import import_timm

from c2seg_baseline import checkpoint as ckpt
from c2seg_baseline.config import HighDANConfig, get_config, paper
from c2seg_baseline.importer import to_authors_state_dicts
from c2seg_baseline.model import HighDAN
from c2seg_baseline.pretrained import backbone_key_map, init_backbone, init_from
from c2seg_baseline.train import train
from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import MODALITIES

LOADED = ("stage1.", "transitions.", "stages.")  # what the authors load from the ImageNet file


def _randomise_bn_buffers(state: dict, seed: int = 0) -> dict:
    """Running statistics that are not 0/1, so a loader that skipped BN buffers shows."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if k.endswith("running_mean"):
            v = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        out[k] = v
    return out


def _cut_to_authors_depth(stage, blocks: int):
    """timm's stage cut to what the authors' model has: its first module, the first `blocks` per branch;
    fusion by bilinear resizing as theirs (the classification release upsamples by nearest)."""
    module = stage[0]
    for i, branch in enumerate(module.branches):
        module.branches[i] = torch.nn.Sequential(*list(branch)[:blocks])
    for m in module.modules():
        if isinstance(m, torch.nn.Upsample):
            m.mode = "bilinear"
    return type(stage)(module)


@pytest.fixture(scope="module")
def timm_w48():
    timm = import_timm()
    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w48", pretrained=False)
    ref.load_state_dict(_randomise_bn_buffers(ref.state_dict()))
    return ref.eval()


def test_backbone_from_timm_hrnet_w48_gives_timms_stage_outputs(timm_w48, tmp_path):
    state = timm_w48.state_dict()
    path = tmp_path / "hrnet_w48.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    model = HighDAN(paper()).eval()
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    d0_before = {k: v.clone() for k, v in model.d0.state_dict().items()}

    report = init_backbone(model, path)
    expected = [k for k in before if k.startswith(LOADED) and not k.endswith("num_batches_tracked")]
    assert report["mapped"] == report["expected"] == len(expected) == 550
    assert report["by_part"] == {
        **{f"stage1 {m}": sum(1 for k in expected if k.startswith(f"stage1.{m}.")) for m in MODALITIES},
        **{f"transition {i + 1}": sum(1 for k in expected if k.startswith(f"transitions.{i}.")) for i in range(3)},
        **{f"stage {i + 2}": sum(1 for k in expected if k.startswith(f"stages.{i}.")) for i in range(3)}}
    assert report["by_part"]["stage1 msi"] == sum(1 for k in state if k.startswith("layer1.")
                                                   and not k.endswith("num_batches_tracked"))
    after = model.generator.state_dict()
    # The authors load no stem (their input widths differ; they drop conv1/bn1/conv2/bn2), no head.
    for k, v in after.items():
        if not k.startswith(LOADED):
            assert torch.equal(v, before[k]), k
    assert all(torch.equal(v, d0_before[k]) for k, v in model.d0.state_dict().items())
    # Stage 1 is the file's layer1 in all three modalities.
    layer1 = timm_w48.layer1.state_dict()
    for m in MODALITIES:
        ours = model.generator.stage1[m].state_dict()
        assert len(ours) == len(layer1)
        for (ka, a), (kb, b) in zip(ours.items(), layer1.items(), strict=True):
            assert torch.equal(a, b), (m, ka, kb)

    # timm's forward through the parts the authors load: layer1, the transitions, and the first module
    # of stages 2, 3 and 4 with their first 4, 3 and 1 blocks per branch.
    ref = copy.deepcopy(timm_w48)
    for name, blocks in (("stage2", 4), ("stage3", 3), ("stage4", 1)):
        setattr(ref, name, _cut_to_authors_depth(getattr(ref, name), blocks))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in MODALITIES:
            x = torch.rand(2, paper().model.in_channels[m], 64, 64, generator=g)
            ours = model.generator.encode(m, x)
            theirs = ref.stages(model.generator.stems[m](x))
            assert len(ours) == len(theirs) == 4
            for a, b in zip(ours, theirs, strict=True):
                assert a.shape == b.shape
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
                assert a.abs().mean() > 1e-3  # not a trivially equal all-zero output


def test_backbone_in_the_release_layout_loads_the_same_weights(timm_w48, tmp_path):
    """The HRNet release's names without num_batches_tracked, saved from DataParallel ("module."),
    wrapped in a {"state_dict": ...} training checkpoint: the same weights arrive."""
    state = timm_w48.state_dict()
    plain, release = tmp_path / "timm.pth", tmp_path / "release.pth"
    torch.save(state, plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")},
                "epoch": 100}, release)
    a, b = HighDAN(paper()), HighDAN(paper())
    ra, rb = init_backbone(a, plain), init_backbone(b, release)
    assert ra["mapped"] == rb["mapped"] == ra["expected"]
    sa, sb = a.generator.state_dict(), b.generator.state_dict()
    for k in sa:
        if k.startswith(LOADED) and not k.endswith("num_batches_tracked"):
            assert torch.equal(sa[k], sb[k]), k


def test_a_w32_file_is_refused_naming_the_first_mismatching_key(tmp_path):
    timm = import_timm()
    path = tmp_path / "w32.pth"
    torch.save(timm.create_model("hrnet_w32", pretrained=False).state_dict(), path)
    with pytest.raises(C2SegError, match=r"'transition1\.0\.0\.weight' has shape \(32, 256, 3, 3\)") as e:
        init_backbone(HighDAN(paper()), path)
    assert "\n" not in str(e.value)


# --- bad files on the command line: one line, nothing trained ---------------------------------------

def _tiny_backbone_file(root, **change) -> tuple:
    """A backbone file for the tests' tiny network in the release's names (layer1, stage2.0...)."""
    model = HighDAN(get_config(config_file(root)))
    ours = model.generator.state_dict()
    state = {theirs: ours[key].clone() for key, theirs in backbone_key_map(model).items()}
    return model, state


def _train_cli(prep, out, *extra):
    return run_cli(["train-baseline", "--data", str(prep), "--track", "AB", "--out", str(out),
                    "--config", config_file(prep.parent), "--steps", "1", "--device", "cpu", "--batch-size", "2",
                    "--quiet", *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("init") / "AB")


def test_cli_loads_a_backbone_and_reports_it(prepared, tmp_path):
    _, state = _tiny_backbone_file(prepared.parent)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    out = tmp_path / "run"
    r = _train_cli(prepared, out, "--init-backbone", str(path))
    assert r.returncode == 0, r.stderr
    n = sum(1 for k in state if not k.endswith("num_batches_tracked")) + 2 * sum(
        1 for k in state if k.startswith("layer1.") and not k.endswith("num_batches_tracked"))
    assert f"init: {n} of {n} backbone keys from {path}" in r.stderr
    init = ckpt.read_checkpoint(out / "last.pt")["run"]["init"]
    assert init["mapped"] == init["expected"] == n
    assert json.loads((out / "config.json").read_text())["run"]["init"] == init


@pytest.mark.parametrize("case", ["not-a-state-dict", "junk", "too-few", "wrong-shape", "with-resume"])
def test_cli_refuses_a_bad_backbone_file_in_one_line_and_trains_nothing(prepared, tmp_path, case):
    model, state = _tiny_backbone_file(prepared.parent)
    path = tmp_path / "backbone.pth"
    keys = list(state)
    extra = []
    if case == "not-a-state-dict":
        torch.save([torch.zeros(3)], path)
        message = "does not hold a state_dict"
    elif case == "junk":
        path.write_bytes(b"not a torch file" * 4)
        message = "is not a readable backbone weights file"
    elif case == "too-few":
        counted = [k for k in keys if not k.endswith("num_batches_tracked")]
        dropped = counted[len(counted) // 3: len(counted) // 3 + len(counted) // 5]  # 20 % of the file
        torch.save({k: v for k, v in state.items() if k not in dropped}, path)
        message = f"the first missing is {dropped[0]!r}"
    elif case == "wrong-shape":
        victim = next(k for k in keys[len(keys) // 2:] if k.endswith("weight"))
        state[victim] = torch.zeros(*state[victim].shape, 2)
        torch.save(state, path)
        message = f"{victim!r} has shape"
    else:
        torch.save(state, path)
        extra = ["--resume"]
        message = "--init-backbone and --init-from start a new run"
    out = tmp_path / "run"
    assert_one_line_error(_train_cli(prepared, out, "--init-backbone", str(path), *extra), message)
    assert not out.exists()


def test_init_from_starts_the_generator_from_another_run(prepared, tmp_path):
    """BW from an AB run, as the authors: every generator weight; fresh discriminators."""
    ab = tmp_path / "ab"
    train(tiny_options(prepared, ab, steps=2, eval_every=100))
    bw_prep = make_prepared(tmp_path / "BW", track="BW")
    cfg = get_config(config_file(prepared.parent))
    source = ckpt.read_checkpoint(ab / "best.pt" if (ab / "best.pt").exists() else ab / "last.pt")
    model = HighDAN(cfg)
    fresh_d0 = {k: v.clone() for k, v in model.d0.state_dict().items()}
    report = init_from(model, ab / "last.pt")
    assert report["track"] == "AB" and report["step"] == 2
    for k, v in model.generator.state_dict().items():
        assert torch.equal(v, source["generator"][k]), k
    assert all(torch.equal(v, fresh_d0[k]) for k, v in model.d0.state_dict().items())
    # The authors' generator file works the same way.
    theirs = tmp_path / "best_model.pth"
    torch.save(to_authors_state_dicts(model)["generator"], theirs)
    again = HighDAN(cfg)
    assert init_from(again, theirs)["layout"] == "authors"
    assert all(torch.equal(v, source["generator"][k]) for k, v in again.generator.state_dict().items())
    # On the command line, a BW run records where it started.
    out = tmp_path / "bw"
    r = run_cli(["train-baseline", "--data", str(bw_prep), "--track", "BW", "--out", str(out), "--config",
                 config_file(prepared.parent), "--steps", "1", "--device", "cpu", "--batch-size", "2", "--quiet",
                 "--init-from", str(ab / "last.pt")])
    assert r.returncode == 0, r.stderr
    assert "generator from" in r.stderr and "AB run at step 2" in r.stderr
    assert ckpt.read_checkpoint(out / "last.pt")["run"]["init"]["from"] == str(ab / "last.pt")


def test_init_from_another_network_is_refused_naming_the_key(prepared, tmp_path):
    other = HighDANConfig.from_dict({"base": "tiny", "model": {"head_widths": [8, 8, 8]}}).validate()
    path = tmp_path / "other.pt"
    ckpt.save_checkpoint(path, ckpt.make_state(HighDAN(other), other, step=0, with_rng=False))
    out = tmp_path / "run"
    assert_one_line_error(_train_cli(prepared, out, "--init-from", str(path)), "generator key 'head.0.conv.weight'")
    assert not out.exists()
