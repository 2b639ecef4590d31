"""The Lightning DataModule: the four streams, a fast_dev_run, and predictions back into a submission."""

from __future__ import annotations

import numpy as np
import pytest
from baseline_support import make_prepared

from c2seg_kit.submission.readers import open_submission

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning", reason="the 'lightning' extra is not installed")
from c2seg_baseline.datamodule import C2SegDataModule, write_predictions  # noqa: E402
from c2seg_baseline.datasets import C2SegPrepared  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    # source 96 x 64 (rows x columns), target 80 x 72
    return make_prepared(tmp_path_factory.mktemp("dm") / "AB", source_shape=(96, 64), target_shape=(80, 72))


def test_streams_follow_the_arguments_and_validation_is_held_out(prepared):
    dm = C2SegDataModule(prepared, batch_size=3, window=32, stride=16, val_fraction=0.25)
    dm.setup("fit")
    dm.setup("predict")
    source = C2SegPrepared(prepared, "train", window=32, stride=16)
    train_rows = {source.origins[i][1] for i in dm.train_indices}
    val_rows = {source.origins[i][1] for i in dm.val_indices}
    # the bottom 32 rows (a quarter of 96 is 24, less than a window) are held out: no training window reaches them
    assert val_rows == {64} and max(train_rows) + 32 <= 64 and dm.train_indices and dm.val_indices
    batch = next(iter(dm.train_dataloader()))[0]
    assert set(batch) == {"source", "target"}
    assert tuple(batch["source"]["image"].shape) == (3, 16, 32, 32) and tuple(batch["source"]["mask"].shape) == (3, 32, 32)
    assert tuple(batch["target"]["image"].shape) == (3, 16, 32, 32)
    assert len(dm.target) == 3 * 3  # the target's adaptation windows do not overlap: 80 x 72 in 32 px windows
    val = next(iter(dm.val_dataloader()))
    assert all(r0 == 64 for r0 in val["origin"][:, 0].tolist())
    assert dm.test.window == 32 and dm.predict_stride == 24  # the prediction windows overlap by a quarter
    assert len(dm.test) == len(C2SegPrepared(prepared, "test", window=32, stride=24))
    with pytest.raises(ValueError, match="batch_size"):
        C2SegDataModule(prepared, batch_size=0)
    with pytest.raises(ValueError, match="augment must be None or 'once'"):
        C2SegDataModule(prepared, augment="per-epoch")


class TinySegmenter(L.LightningModule):
    """A 1 x 1 convolution from the stacked image to 14 outputs (output 0 "unlabelled", as HighDAN)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 14, 1)

    def forward(self, image):
        return self.conv(image)

    def training_step(self, batch, _):
        src = batch["source"]
        loss = torch.nn.functional.cross_entropy(self(src["image"]), src["mask"], ignore_index=0)
        return loss + 0 * self(batch["target"]["image"]).sum()  # the target stream reaches the step

    def validation_step(self, batch, _):
        loss = torch.nn.functional.cross_entropy(self(batch["image"]), batch["mask"], ignore_index=0)
        self.log("val_loss", loss, batch_size=len(batch["image"]))

    def predict_step(self, batch, _):
        return self(batch["image"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fast_dev_run_trains_validates_and_predicts_into_a_submission(prepared, tmp_path):
    dm = C2SegDataModule(prepared, batch_size=2, window=32, stride=16)
    model = TinySegmenter(16)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(model, datamodule=dm)
    out = tmp_path / "predictions.h5"
    summary = write_predictions(outputs, dm, out, method="tiny")
    assert summary == {"out": str(out), "windows": len(dm.test), "rasters": 1}
    with open_submission(out, track="AB", expected_shape=(80, 72)) as sub:
        pred = sub.read()
    assert pred.min() >= 1 and pred.max() <= 13
    # the stitched map equals the blend computed here from one whole-city forward pass, where the
    # 1 x 1 convolution sees every pixel as every window does
    with torch.no_grad():
        image = C2SegPrepared(prepared, "test", window=80)[0]["image"]  # the 80 x 72 city, padded to 80 x 80
        expected = model(image[None])[0, 1:, :, :72].argmax(0).numpy() + 1
    np.testing.assert_array_equal(pred, expected)


def test_write_predictions_refuses_missing_batches(prepared, tmp_path):
    dm = C2SegDataModule(prepared, batch_size=4, window=32)
    dm.setup("predict")
    logits = [torch.zeros(4, 14, 32, 32)]
    with pytest.raises(ValueError, match="predictions for"):
        write_predictions(logits, dm, tmp_path / "p.h5")
    with pytest.raises(ValueError, match="predict_step must return logits"):
        write_predictions([torch.zeros(4, 3, 32, 32)], dm, tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


def test_a_tile_cache_predicts_every_test_tile_at_its_shape(tmp_path):
    """Tiles smaller than the window are padded to it and cropped back; every test tile is written."""
    from city_tiles import make_city_tiles

    from c2seg_kit.prepare.cache import PreparedData
    from c2seg_kit.prepare.pipeline import prepare
    from c2seg_kit.registry import TRACKS

    make_city_tiles(tmp_path / "src" / "C2Seg_AB", seed=4)
    prepare(tmp_path / "src", TRACKS["AB"], tmp_path / "prep", progress=False)
    dm = C2SegDataModule(tmp_path / "prep", batch_size=2, window=16, predict_overlap=4, val_fraction=0.3)
    dm.setup("fit")
    held = {dm.source.origins[i][0] for i in dm.val_indices}
    assert len(held) == 3 and not held & {dm.source.origins[i][0] for i in dm.train_indices}  # whole tiles held out
    dm.setup("predict")
    torch.manual_seed(0)
    model = TinySegmenter(16)
    with torch.no_grad():
        outputs = [model(b["image"]) for b in dm.predict_dataloader()]
    write_predictions(outputs, dm, tmp_path / "predictions.h5")
    with PreparedData(tmp_path / "prep") as data, open_submission(tmp_path / "predictions.h5", track="AB") as sub:
        got = dict(sub.iter_tiles())
        assert sorted(got) == sorted(data.target.ids)
        for tile_id in data.target.ids:
            h, w = data.target.tile(tile_id).shape
            whole = C2SegPrepared(data, "test", window=max(h, w, 16))  # pointwise model: any window gives the same
            image = next(s["image"] for s in whole if s["tile"] == tile_id)
            with torch.no_grad():
                expected = model(image[None])[0, 1:, :h, :w].argmax(0).numpy() + 1
            np.testing.assert_array_equal(got[tile_id], expected)
