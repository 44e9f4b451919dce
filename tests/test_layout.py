"""One package per stage, one owner per artefact: the DAG builds without torch, the configuration checker and the
run-directory records stand alone, the tables are data, and an installed (non-editable) copy works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from avzsl.app.workflow_config import (
    check_config,
    default_tables,
    describe_schema_error,
    schema_error_in,
    tables,
)
from training import run_dir as rd
from training.config import ConfigError


def _validated(cfg: dict) -> dict:
    from snakemake.utils import validate

    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


def _default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _dry_run(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "2",
                           *args], cwd=workdir, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_building_the_default_dag_imports_no_torch(tmp_path):
    """A torch that refuses to import sits first on the path: the dry run must not need it."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch was imported while building the DAG')\n")
    wd = tmp_path / "wd"
    (wd / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", wd / "config" / "config.yaml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")])}
    proc = _dry_run(wd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train_stage1" in proc.stdout
    # and the fake really is in the way of anything that does import torch
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "torch was imported while building the DAG" in probe.stderr


def test_the_checker_runs_without_snakemake_on_a_plain_dictionary(tmp_path):
    cfg = _validated(_default_config())
    check_config(cfg)  # the shipped configuration passes
    assert cfg["extract"]["shards"] == 2 and cfg["training"]["mem_mb"] == 8000  # defaults filled by validate

    bad = _validated(_default_config())
    bad["active_datasets"] = ["nowhere"]
    with pytest.raises(ConfigError, match="active_datasets names 'nowhere', which is not defined"):
        check_config(bad)

    bad = _validated(_default_config())
    bad["models"] = ["avca", "nosuchmodel"]
    with pytest.raises(ConfigError, match="unknown model 'nosuchmodel'"):
        check_config(bad)

    bad = _validated(_default_config())
    bad["report"]["tables"]["mine"] = {"models": ["avca", "zzz"], "title": "t", "layout": "flat",
                                       "in_default_target": False}
    with pytest.raises(ConfigError, match=r"report\.tables\.mine\.models: unknown model\(s\) \['zzz'\]"):
        check_config(bad)


def test_schema_errors_are_described_by_key():
    from snakemake.exceptions import WorkflowError

    cfg = _default_config()
    cfg["extract"]["shards"] = "two"
    with pytest.raises(WorkflowError) as info:
        _validated(cfg)
    assert describe_schema_error(schema_error_in(info.value)) == "config: extract.shards: 'two' is not of type 'integer'"


def test_tables_are_data_in_the_configuration():
    cfg = _validated(_default_config())
    t = tables(cfg)
    assert list(t) == ["summary", "table1", "ablation"]
    assert t["ablation"]["models"] == ["daan_base", "daan_qdma", "daan_qdma_csgm_vc", "daan"]
    assert t["ablation"]["layout"] == "flat" and "daan_base" not in t["table1"]["models"]
    assert default_tables(cfg) == ["summary", "ablation"]  # every ablation model is configured by default
    cfg["models"] = ["avca"]
    assert default_tables(cfg) == ["summary"]


@pytest.mark.slow
def test_a_new_table_is_one_configuration_entry(tmp_path):
    cfg = _default_config()
    cfg["report"] = {"tables": {"mine": {"title": "Two models", "models": ["avca", "ale"], "layout": "flat"}}}
    wd = tmp_path / "wd"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _dry_run(wd, "mine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results/mine.md" in proc.stdout and re.search(r"^summary\s+1\s*$", proc.stdout, re.M)


def test_run_directory_records_round_trip(tmp_path):
    sel = rd.Selection(best_epoch=3, beta=0.4, val={"HM": 50.0}, epochs=10, model="avca", seed=1)
    sel.write(tmp_path / rd.SELECTION)
    assert rd.Selection.read(tmp_path / rd.SELECTION) == sel
    (tmp_path / "broken.json").write_text('{"beta": 0.4}')
    with pytest.raises(rd.RunFileError, match=r"broken\.json: missing \['best_epoch'\]"):
        rd.Selection.read(tmp_path / "broken.json")
    run = rd.run_path("demo", "handcrafted", "avca", 42)
    assert rd.selection_path(run) == "results/runs/demo/handcrafted/avca/seed42/stage1/selection.json"
    assert rd.model_path(run) == "results/runs/demo/handcrafted/avca/seed42/stage2/model.pt"
    assert rd.test_path(run) == "results/runs/demo/handcrafted/avca/seed42/test.json"


def test_a_non_editable_install_finds_its_model_configurations(tmp_path):
    """`pip install .` copies the packages: the model configurations must travel as package data."""
    src, target = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for package in ("avzsl", "extractors", "training", "bench"):  # a copy, so that the build leaves the checkout alone
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=600)
    assert (target / "training" / "model_configs" / "daan.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", "import training, sys; print(training.__file__)"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith(str(target))
    listing = subprocess.run([sys.executable, "-m", "avzsl", "resolve"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, check=True).stdout
    from training.config import available_models

    for model in available_models():
        assert re.search(rf"^  {model}\s+profiles: default", listing, re.M), listing
    help_text = subprocess.run([sys.executable, "-m", "avzsl", "--help"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, check=True).stdout
    for cmd in ("demo-videos", "scan-local-folder", "extract", "merge-features", "build-splits", "copy-splits",
                "class-text", "import-released", "resolve", "train", "evaluate", "summary", "evidence-table"):
        assert re.search(rf"^  {cmd}\s", help_text, re.M), cmd
