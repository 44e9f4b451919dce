"""Feature backbones behind a registry; importing this package registers every backbone module in it."""

import importlib
import pkgutil

from extractors.backbones.base import BACKBONES, Backbone, build_backbone, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["BACKBONES", "Backbone", "build_backbone", "register"]
