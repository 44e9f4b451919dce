"""What every registered backbone (extractors/backbones) promises the configuration check and the person who runs
it, checked on each backbone of the registry."""

from __future__ import annotations

import re

import pytest

from extractors.backbones import base
from extractors.backbones.base import BackboneError, build_backbone

# the package's own backbones (test modules may register backbones of their own)
BUILTIN = {n: cls for n, cls in base.BACKBONES.items() if cls.__module__.startswith("extractors.backbones.")}
WITH_WEIGHTS = sorted(n for n, cls in BUILTIN.items() if cls.weights_param)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_unknown_parameters_are_refused_naming_the_known_ones(name):
    known = sorted(BUILTIN[name].default_params)
    with pytest.raises(BackboneError, match=re.escape(f"backbone {name!r}: unknown parameter(s) ['no_such']; "
                                                      f"known: {known}")):
        build_backbone(name, {"no_such": 1})


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_missing_weights_say_where_to_get_them(name, tmp_path):
    param = BUILTIN[name].weights_param
    with pytest.raises(BackboneError, match=rf"backbone '{name}' needs its weights: (download|get|save) .*"
                                            rf"set the parameter '{param}'"):
        build_backbone(name)
    absent = tmp_path / "absent.pth"
    with pytest.raises(BackboneError, match=rf"backbone '{name}': weights (file|folder) not found: "
                                            rf"{re.escape(str(absent))} \(parameter '{param}'\); (download|get|save) "):
        build_backbone(name, {param: str(absent)})


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - set(WITH_WEIGHTS)))
def test_a_backbone_without_weights_builds_from_its_defaults(name):
    b = build_backbone(name)
    assert b.modalities and all(b.dim(m) > 0 and b.specs[m].window_seconds > 0 for m in b.modalities)
