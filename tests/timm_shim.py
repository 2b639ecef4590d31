"""timm for the tests, without torchvision.

timm is the tests' independent HRNet (its ``hrnet_w48``: the HRNet image-classification network
and key names). Its HRNet needs no torchvision, but ``import timm`` imports torchvision names at
module level (FrozenBatchNorm2d, transforms, datasets), and PyPI's torchvision does not import
beside this project's torch 2.13 CPU build ("operator torchvision::nms does not exist"); an
installed but broken torchvision also breaks torchmetrics, so it cannot be a dev dependency.
Install timm alone: ``pip install --no-deps timm`` (the Makefile does).

:func:`import_timm` imports timm with a stand-in for torchvision: a finder that answers every
``torchvision.*`` import with an empty module whose attributes are inert placeholder classes.
It is active only during the import and its modules are removed from ``sys.modules`` after, so
nothing else ever sees it. Nothing the tests use from timm (the HRNet model, its blocks, its
state_dict) touches a placeholder: a model built from one would fail, not pass silently.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import pytest


class _Placeholder(type):
    """A class whose every attribute is another placeholder class (InterpolationMode.NEAREST...)."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Placeholder(name, (), {})

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """The timm module (imported with the torchvision stand-in), or skip when timm is not installed."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed: pip install --no-deps timm (see tests/timm_shim.py)")
    try:  # a torchvision that works is used as it is
        importlib.import_module("torchvision")
        return importlib.import_module("timm")
    except Exception:  # noqa: BLE001 -- ImportError when absent, RuntimeError when built for another torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    finder = _TorchvisionStandIn()
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("timm")
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            if isinstance(sys.modules[name].__spec__.loader, _TorchvisionStandIn):
                del sys.modules[name]
