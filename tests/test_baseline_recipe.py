"""The `paper` config is the authors' recipe, with the kit's variants as switches.

The authors' values, read off their scripts: AB 6000 iterations on 128 px windows, BW 10000 on
256 px, 50 % overlap on the source city; augmentation (rotation, flips) drawn once per window when
the window list is built; a fresh random batch every iteration; the target stream reuses the
non-overlapping, unaugmented test windows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baseline_support import make_prepared, read_log, tiny_options, weights

from c2seg_baseline import checkpoint as ckpt
from c2seg_baseline.batches import StepBatches, stream_windows
from c2seg_baseline.config import HighDANConfig, get_config, paper, tiny
from c2seg_baseline.datasets import C2SegPrepared
from c2seg_baseline.train import train
from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData
from c2seg_kit.tiling import window_origins


def test_paper_is_the_authors_recipe_and_tiny_keeps_the_kits_variants():
    t = paper().train
    assert (t.window, t.stride, t.steps) == ({"AB": 128, "BW": 256}, {"AB": 64, "BW": 128}, {"AB": 6000, "BW": 10000})
    assert (t.augment, t.sampling, t.target_windows, t.batch_size) == ("once", "fresh", "disjoint", 4)
    assert paper().predict.stitch == "blend"  # the kit's default stitch (docs/participants.md says why)
    s = tiny().train
    assert (s.augment, s.sampling, s.target_windows) == ("per-epoch", "epochs", "like-source")


def test_per_track_fields_take_one_number_or_an_object(tmp_path):
    cfg = HighDANConfig.from_dict({"base": "paper", "train": {"window": 64, "stride": 32, "steps": {"BW": 7}}})
    assert cfg.validate().train.window == {"AB": 64, "BW": 64} and cfg.train.stride == {"AB": 32, "BW": 32}
    assert cfg.train.steps == {"AB": 6000, "BW": 7}  # the other track keeps its value
    assert cfg.train.for_track("BW", "steps") == 7
    for bad, message in (({"train": {"augment": "always"}}, "train.augment must be one of once, per-epoch"),
                         ({"train": {"sampling": "random"}}, "train.sampling must be one of fresh, epochs"),
                         ({"train": {"stride": 200}}, "train.stride for AB is larger than its window"),
                         ({"predict": {"stitch": "mosaic"}}, "predict.stitch must be one of blend, authors"),
                         ({"predict": {"window": -32}}, "predict.window must be null")):
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"base": "paper", **bad}))
        with pytest.raises(C2SegError, match=message):
            get_config(path)
    # A run's config.json (config + "run") is a config.
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**tiny().to_dict(), "run": {"track": "AB"}}))
    assert get_config(path).train == tiny().train


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("recipe") / "AB")


def test_augmentation_once_is_drawn_per_window_and_per_epoch_anew(prepared):
    once = C2SegPrepared(prepared, "source", window=32, stride=32, augment="once", seed=5)
    per_epoch = C2SegPrepared(prepared, "source", window=32, stride=32, augment="per-epoch", seed=5)
    plain = C2SegPrepared(prepared, "source", window=32, stride=32)
    n = len(once)

    def items(ds, epoch):
        ds.set_epoch(epoch)
        return [ds[i]["image"] for i in range(n)]

    first, later = items(once, 0), items(once, 7)
    assert all(torch.equal(a, b) for a, b in zip(first, later, strict=True))  # the same every epoch
    assert any(not torch.equal(a, p["image"]) for a, p in zip(first, [plain[i] for i in range(n)], strict=True))
    e0, e1 = items(per_epoch, 0), items(per_epoch, 1)
    assert any(not torch.equal(a, b) for a, b in zip(e0, e1, strict=True))
    # Image and label move together under the drawn transform.
    item, ref = once[3], plain[3]
    labels = {tuple(np.rot90(f, k).ravel()) for k in range(4)
              for f in (ref["mask"].numpy(), ref["mask"].numpy()[::-1], ref["mask"].numpy()[:, ::-1],
                        ref["mask"].numpy()[::-1, ::-1])}
    assert tuple(item["mask"].numpy().ravel()) in labels


def test_fresh_batches_are_a_function_of_the_step_and_shard_ranks():
    full = StepBatches(10, 3, seed=5, mode="fresh")
    it = iter(full)
    first = [next(it) for _ in range(20)]
    resumed = iter(StepBatches(10, 3, seed=5, start_step=13, mode="fresh"))
    assert [next(resumed) for _ in range(7)] == first[13:]
    assert all(len({i for _, i in b}) == 3 for b in first)  # distinct windows within a batch
    assert len({tuple(i for _, i in b) for b in first}) > 15  # not one fixed order
    assert [b[0][0] for b in first] == list(range(20))  # each step is its own augmentation key
    r0, r1 = iter(StepBatches(10, 2, 5, rank=0, world_size=2, mode="fresh")), iter(
        StepBatches(10, 2, 5, rank=1, world_size=2, mode="fresh"))
    both = iter(StepBatches(10, 4, 5, mode="fresh"))
    for _ in range(6):
        assert next(r0) + next(r1) == next(both)
    # Over many steps every window is drawn about equally often (uniform draws, not a fixed subset).
    counts = np.bincount([i for b in [next(it) for _ in range(3000)] for _, i in b], minlength=10)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_the_bw_preset_windows_and_the_disjoint_target_stream(tmp_path):
    bw = make_prepared(tmp_path / "BW", track="BW", source_shape=(300, 400), target_shape=(270, 520))
    with PreparedData(bw) as data:
        source, target = stream_windows(data, paper().train, "BW", seed=0)
        assert (source.window, target.window) == (256, 256)
        assert source.origins == [(None, r, c) for r, c in window_origins(300, 400, 256, 128)]
        assert target.origins == [(None, r, c) for r, c in window_origins(270, 520, 256, 256)]
        assert (source.augment, target.augment) == ("once", None)
        _, like = stream_windows(data, tiny().train, "BW", seed=0)
        assert like.origins == [(None, r, c) for r, c in window_origins(270, 520, 64, 32)]
        assert like.augment == "per-epoch"


RECIPE = {"base": "tiny", "name": "tiny-recipe", "train": {"window": 32, "stride": 16, "augment": "once",
                                                           "sampling": "fresh", "target_windows": "disjoint"}}


def test_a_run_on_the_authors_recipe_resumes_exactly_and_records_it(prepared, tmp_path):
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps(RECIPE))
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_options(prepared, straight, config=str(cfg), steps=5, eval_every=100))
    train(tiny_options(prepared, split, config=str(cfg), steps=5, eval_every=100, stop_after=2))
    train(tiny_options(prepared, split, config=None, steps=None, eval_every=100, resume=True))
    a, b = weights(straight / "last.pt"), weights(split / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same losses at every step (the split run also evaluated where it stopped)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sec"} for r in rows if "eval" not in r]  # noqa: E731
    assert strip(read_log(straight)) == strip(read_log(split))
    saved = ckpt.read_checkpoint(straight / "last.pt")["config"]["train"]
    assert (saved["augment"], saved["sampling"], saved["target_windows"]) == ("once", "fresh", "disjoint")
    # --augment overrides the config's and is recorded
    train(tiny_options(prepared, tmp_path / "pe", config=str(cfg), steps=1, eval_every=100, augment="per-epoch"))
    assert ckpt.read_checkpoint(tmp_path / "pe" / "last.pt")["config"]["train"]["augment"] == "per-epoch"
