"""pyproject.toml, envs/avzsl.yaml and envs/requirements.lock agree: every dependency pinned, at one version."""

from __future__ import annotations

import importlib.metadata
import re

import tomllib
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = REPO / "envs" / "requirements.lock"
ENV = REPO / "envs" / "avzsl.yaml"


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate(LOCK.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;#]*)", line)
        assert m, f"{LOCK.name}:{n}: not an exact pin: {line!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{LOCK.name}:{n}: {name} pinned twice"
        pins[name] = Version(m.group(2))
    return pins


def _env_pip() -> list[str]:
    env = yaml.safe_load(ENV.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_the_lock_pins_every_dependency_within_pyproject_s_range():
    project, pins = _project(), _lock()
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not in {LOCK.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK.name} pins {name}=={pins[name]}, outside pyproject.toml's {text!r}"


def test_the_conda_environment_pins_exactly_the_lock_s_versions():
    pins = _lock()
    project = _project()
    extras = project["optional-dependencies"]
    expected = {canonicalize_name(Requirement(r).name) for r in project["dependencies"] + extras["decord"]
                + extras["text"]}
    listed = {}
    for text in _env_pip():
        req = Requirement(text)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"envs/avzsl.yaml: {text!r} is not an exact pin"
        listed[canonicalize_name(req.name)] = Version(spec[0].version)
    assert set(listed) == expected, "envs/avzsl.yaml's pip list and pyproject.toml's packages differ"
    assert {n: v for n, v in listed.items() if pins.get(n) != v} == {}, "envs/avzsl.yaml and the lock disagree"


def test_the_conda_packages_have_versions():
    env = yaml.safe_load(ENV.read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str) and d != "pip"]
    assert conda and all(re.fullmatch(r"[\w.-]+ =\d+(\.\d+)*", d) for d in conda), conda
    python = next(d for d in conda if d.startswith("python "))
    assert SpecifierSet(_project()["requires-python"]).contains(python.split("=")[1])


def test_the_environment_under_test_has_the_lock_s_versions():
    """CI installs with the lock as constraints (by hand: ``pip install -e '.[test]' -c envs/requirements.lock``): every
    installed package the lock pins is at its pinned version."""
    pins = _lock()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in importlib.metadata.distributions()}
    assert {n: str(v) for n, v in installed.items() if n in pins and pins[n] != v} == {}, \
        f"packages not at {LOCK.name}'s versions: install with -c {LOCK.relative_to(REPO)}"
