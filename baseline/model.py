"""HighDAN (the authors' network, as their code builds it), built from :class:`~c2seg_baseline.config.ModelConfig` with loops.

Layout of the network, named after what each part does:

* ``generator.stems[m]`` and ``generator.stage1[m]``: one stem and one bottleneck stage per modality
  ``m`` in (hsi, msi, sar). The stem's first conv has stride 2, so everything after it lives on the
  1/2 grid (branch 0) and coarser (branches 1..3).
* ``generator.transitions[s]`` / ``generator.stages[s]``: HRNet stages 2-4 with weights SHARED by the
  three modalities (each modality runs through the same modules).
* fusion: every branch of every modality resized (bilinear) to the branch-0 grid and concatenated.
* ``generator.head`` -> ``generator.upsample`` (2x2 stride-2 transposed conv) -> ``generator.classifier``.
* ``d0``: feature discriminator on the fused features; on target inputs its output is also the
  attention ``features * (1 + |tanh(d0(features))|)``.
* ``d1``: output discriminator on the softmax of the logits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import HighDANConfig, ModelConfig


class ConvBNAct(nn.Sequential):
    """Conv -> BatchNorm -> (ReLU); keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin, cout, kernel, stride=1, *, act=True, bias=False, momentum=0.01):
        layers = OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=bias),
            bn=nn.BatchNorm2d(cout, momentum=momentum),
        )
        if act:
            layers["act"] = nn.ReLU()
        super().__init__(layers)


class Residual(nn.Module):
    """``relu(body(x) + shortcut(x))``; the shortcut projects when the width changes."""

    def __init__(self, body: list[nn.Module], cin: int, cout: int, momentum: float):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Identity() if cin == cout else ConvBNAct(cin, cout, 1, act=False, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def bottleneck(cin: int, planes: int, momentum: float) -> Residual:
    """1x1 reduce, 3x3, 1x1 expand to 4 x planes."""
    body = [
        ConvBNAct(cin, planes, 1, momentum=momentum),
        ConvBNAct(planes, planes, 3, momentum=momentum),
        ConvBNAct(planes, planes * 4, 1, act=False, momentum=momentum),
    ]
    return Residual(body, cin, planes * 4, momentum)


def basic_block(cin: int, width: int, momentum: float) -> Residual:
    """Two 3x3 convs."""
    body = [ConvBNAct(cin, width, 3, momentum=momentum), ConvBNAct(width, width, 3, act=False, momentum=momentum)]
    return Residual(body, cin, width, momentum)


def _resize(x: Tensor, size, *, align_corners: bool | None = None) -> Tensor:
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class HRModule(nn.Module):
    """Parallel branches of basic blocks, then every branch i receives the sum over all branches j.

    ``fuse[i][j]`` maps branch j to branch i's width: Identity (j == i), a 1x1 conv+BN followed by a
    bilinear resize (j > i, coarser), or a chain of stride-2 3x3 convs (j < i, finer). The forward
    pass is one double loop over (i, j).
    """

    def __init__(self, cins: Sequence[int], widths: Sequence[int], blocks: Sequence[int], momentum: float):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(basic_block(cin if k == 0 else w, w, momentum) for k in range(n)))
            for cin, w, n in zip(cins, widths, blocks, strict=True)
        )
        n = len(widths)
        self.fuse = nn.ModuleList(
            nn.ModuleList(self._fuse_path(widths, i, j, momentum) for j in range(n)) for i in range(n)
        ) if n > 1 else None

    @staticmethod
    def _fuse_path(widths, i, j, momentum) -> nn.Module:
        if j == i:
            return nn.Identity()
        if j > i:  # coarser: project, then resized in forward
            return ConvBNAct(widths[j], widths[i], 1, act=False, momentum=momentum)
        # finer: i - j stride-2 convs; the intermediate ones keep branch j's width and have a ReLU
        steps = i - j
        return nn.Sequential(*(
            ConvBNAct(widths[j], widths[i] if k == steps - 1 else widths[j], 3, 2,
                      act=k < steps - 1, momentum=momentum)
            for k in range(steps)
        ))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse):
            size = xs[i].shape[-2:]
            y = _resize(row[0](xs[0]), size)
            for j in range(1, len(row)):
                y = y + _resize(row[j](xs[j]), size)
            out.append(F.relu(y))
        return out


def transition(prev: Sequence[int], widths: Sequence[int], momentum: float) -> nn.ModuleList:
    """Maps the previous stage's branches to this stage's: keep, re-width, or create coarser ones.

    A new branch i >= len(prev) is made from the coarsest previous branch by stride-2 convs.
    """
    paths = []
    for i, w in enumerate(widths):
        if i < len(prev):
            paths.append(nn.Identity() if prev[i] == w else ConvBNAct(prev[i], w, 3, momentum=momentum))
        else:
            steps = i + 1 - len(prev)
            paths.append(nn.Sequential(*(
                ConvBNAct(prev[-1], w if k == steps - 1 else prev[-1], 3, 2, momentum=momentum)
                for k in range(steps)
            )))
    return nn.ModuleList(paths)


class Generator(nn.Module):
    """Multimodal HRNet encoder + segmentation head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        mom = cfg.bn_momentum
        self.modalities = cfg.modalities
        self.stems = nn.ModuleDict()
        self.stage1 = nn.ModuleDict()
        stage1_out = cfg.stage1_planes * 4
        for m in self.modalities:
            widths = (cfg.in_channels[m], *cfg.stem_widths[m])
            self.stems[m] = nn.Sequential(*(
                ConvBNAct(cin, cout, 3, 2 if k == 0 else 1, momentum=mom)
                for k, (cin, cout) in enumerate(pairwise(widths))
            ))
            cin = widths[-1]
            self.stage1[m] = nn.Sequential(*(
                bottleneck(cin if k == 0 else stage1_out, cfg.stage1_planes, mom) for k in range(cfg.stage1_blocks)
            ))
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev: tuple[int, ...] = (stage1_out,)
        for spec in cfg.stages:
            self.transitions.append(transition(prev, spec.widths, mom))
            self.stages.append(nn.Sequential(*(
                HRModule(spec.widths, spec.widths, spec.blocks, mom) for _ in range(spec.modules)
            )))
            prev = spec.widths
        # The head's convs carry a bias (as in the authors' model) although a BN follows.
        widths = (cfg.fused_channels, *cfg.head_widths)
        self.head = nn.Sequential(*(
            ConvBNAct(cin, cout, 3, bias=True, momentum=mom) for cin, cout in pairwise(widths)
        ))
        self.upsample = nn.ConvTranspose2d(widths[-1], widths[-1], kernel_size=2, stride=2)
        self.classifier = nn.Conv2d(widths[-1], cfg.num_outputs, 1)

    def encode(self, modality: str, x: Tensor) -> list[Tensor]:
        """One modality through its stem and stage 1, then the shared stages: a list of branches."""
        branches = [self.stage1[modality](self.stems[modality](x))]
        for paths, stage in zip(self.transitions, self.stages, strict=True):
            branches = [path(branches[min(i, len(branches) - 1)]) for i, path in enumerate(paths)]
            branches = stage(branches)
        return branches

    def features(self, hsi: Tensor, msi: Tensor, sar: Tensor) -> Tensor:
        """Fused features on the 1/2 grid: all branches of hsi, msi, sar, in that order."""
        parts = []
        for modality, x in zip(self.modalities, (hsi, msi, sar), strict=True):
            branches = self.encode(modality, x)
            size = branches[0].shape[-2:]
            parts += [_resize(b, size, align_corners=True) for b in branches]
        return torch.cat(parts, dim=1)

    def segment(self, features: Tensor, size=None) -> Tensor:
        """Logits on the full grid (2x the feature grid), cropped to ``size`` (H, W) when given."""
        logits = self.classifier(self.upsample(self.head(features)))
        if size is not None:
            logits = logits[..., : size[0], : size[1]]
        return logits


class Discriminator(nn.Module):
    """Convs with LeakyReLU(0.2) between them; the last conv outputs one channel, no activation."""

    def __init__(self, cin: int, widths: Sequence[int], kernel: int, stride: int):
        super().__init__()
        chans = (cin, *widths, 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel, stride, padding=1) for a, b in pairwise(chans)
        )

    def forward(self, x: Tensor) -> Tensor:
        for k, conv in enumerate(self.convs):
            x = conv(x)
            if k < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.2)
        return x


def feature_discriminator(cfg: ModelConfig) -> Discriminator:
    """D0: 3x3 stride-1 convs on the fused features (output on the feature grid)."""
    return Discriminator(cfg.fused_channels, cfg.d0_widths, kernel=3, stride=1)


def output_discriminator(cfg: ModelConfig) -> Discriminator:
    """D1: 4x4 stride-2 convs on the softmax of the logits."""
    return Discriminator(cfg.num_outputs, cfg.d1_widths, kernel=4, stride=2)


def init_weights(module: nn.Module) -> None:
    """The authors' init: Kaiming-normal (fan-in, ReLU gain) conv weights; BN weight 1, bias 0."""
    for m in module.modules():
        if type(m) is nn.Conv2d:  # not the transposed conv, which keeps PyTorch's default
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def labels_from_logits(logits: Tensor) -> Tensor:
    """Class per pixel: argmax over outputs 1..13, plus one. Output 0 (unlabelled) is never chosen."""
    return (logits[:, 1:].argmax(dim=1) + 1).to(torch.uint8)


class HighDAN(nn.Module):
    """Generator, feature discriminator ``d0`` and output discriminator ``d1``.

    ``attention`` (default: ``cfg.loss.adversarial``) switches the target-side D0 attention; a
    source-only model never trains D0, so it does not use it.
    """

    def __init__(self, cfg: HighDANConfig, *, attention: bool | None = None):
        super().__init__()
        self.cfg = cfg
        self.attention = cfg.loss.adversarial if attention is None else attention
        self.generator = Generator(cfg.model)
        self.d0 = feature_discriminator(cfg.model)
        self.d1 = output_discriminator(cfg.model)
        init_weights(self)

    def features(self, hsi: Tensor, msi: Tensor, sar: Tensor) -> Tensor:
        return self.generator.features(hsi, msi, sar)

    def attend(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Target-side attention: ``features * (1 + |tanh(d0)|)``; returns it and D0's raw output."""
        d0_out = self.d0(features)
        weight = torch.tanh(d0_out).abs()
        return features + weight * features, d0_out

    def segment(self, features: Tensor, size=None) -> Tensor:
        return self.generator.segment(features, size)

    def forward(self, hsi: Tensor, msi: Tensor, sar: Tensor, *, target: bool) -> Tensor:
        """Logits (B, num_outputs, H, W); ``target=True`` applies the D0 attention (if enabled)."""
        features = self.features(hsi, msi, sar)
        if target and self.attention:
            features, _ = self.attend(features)
        return self.segment(features, hsi.shape[-2:])

    @torch.no_grad()
    def predict_logits(self, hsi: Tensor, msi: Tensor, sar: Tensor, *, target: bool = True) -> Tensor:
        return self(hsi, msi, sar, target=target)

    @torch.no_grad()
    def predict(self, hsi: Tensor, msi: Tensor, sar: Tensor, *, target: bool = True) -> Tensor:
        """uint8 class map (B, H, W) with values 1..13."""
        return labels_from_logits(self.predict_logits(hsi, msi, sar, target=target))

    def parameter_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in part.parameters())
                for name, part in (("generator", self.generator), ("d0", self.d0), ("d1", self.d1))}


def build_model(cfg: HighDANConfig) -> HighDAN:
    return HighDAN(cfg)
