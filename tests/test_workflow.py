"""The Snakemake DAG end to end on tiny data: results, reruns, invalidation, and bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_DEMO_CONFIG, TINY_TRAINING

from extractors.feature_store import FeatureStore

pytestmark = pytest.mark.slow  # every test here runs Snakemake

TINY = {
    **TINY_DEMO_CONFIG,
    "models": ["avca"],
    "seeds": [1, 2],
    "training": {"device": "cpu", "overrides": {"train": TINY_TRAINING}},
}


UMASK = 0o027  # not the usual 022, so that the test sees the umask at work


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1200,
                          preexec_fn=lambda: os.umask(UMASK), env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def workdir_with(tmp: Path, config: dict) -> Path:
    (tmp / "config").mkdir(parents=True, exist_ok=True)
    (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
            if m.group(1) != "total"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    wd = workdir_with(tmp_path_factory.mktemp("wf") / "a work dir", TINY)
    proc = snakemake(wd)
    return wd, proc


def test_demo_dag_produces_the_results_table(demo_run):
    wd, proc = demo_run
    assert "results table at" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(open(wd / "results" / "summary.csv")))
    assert [(r["dataset"], r["feature_set"], r["model"], r["seed"]) for r in rows] == [
        ("demo", "handcrafted", "avca", "1"), ("demo", "handcrafted", "avca", "2")]
    for r in rows:
        assert 0 <= float(r["HM"]) <= 100 and r["code_version"]
    md = (wd / "results" / "summary.md").read_text()
    assert "± " in md and "| Audio-visual | AVCA |" in md and "## Per seed" in md
    failed = (wd / "results" / "features" / "demo" / "handcrafted" / "failed_media.tsv").read_text()
    assert "broken_no_audio\tno audio stream" in failed
    run = wd / "results" / "runs" / "demo" / "handcrafted" / "avca" / "seed1"
    assert (run / "stage1" / "config.yaml").exists() and (run / "stage1" / "log.jsonl").exists()
    for log in ("logs/demo_videos/demo.log", "logs/train_stage1/demo/handcrafted/avca/seed1.log"):
        assert (wd / log).exists()


def test_every_file_the_pipeline_writes_has_the_umask_permissions(demo_run):
    wd, _ = demo_run
    written = [p for top in ("resources", "results", "logs", "benchmarks") for p in (wd / top).rglob("*")
               if p.is_file()]
    assert len(written) > 50
    wrong = {str(p.relative_to(wd)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != 0o666 & ~UMASK}
    assert wrong == {}


def _copy_run(demo_run, tmp_path) -> Path:
    wd, _ = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(wd, copy, symlinks=True)
    return copy


def test_a_changed_extractor_parameter_retrains_from_scratch_through_the_dag(demo_run, tmp_path):
    """Snakemake re-runs training after an extractor change; the jobs must not resume the old checkpoints."""
    wd = _copy_run(demo_run, tmp_path)
    runs = wd / "results" / "runs" / "demo" / "handcrafted" / "avca"
    old = {(s, st): (runs / f"seed{s}" / f"stage{st}" / "log.jsonl").read_text() for s in (1, 2) for st in (1, 2)}
    cfg = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    cfg["feature_sets"]["handcrafted"]["params"] = {"frames_per_window": 6}
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd)
    for seed in ("1", "2"):
        for stage in (1, 2):
            log = (wd / "logs" / f"train_stage{stage}" / "demo" / "handcrafted" / "avca" / f"seed{seed}.log").read_text()
            assert "discarding checkpoint" in log and "features" in log.split("discarding checkpoint")[1].split("\n")[0]
            assert "resuming" not in log
    for (seed, stage), text in old.items():  # trained anew on the new features: other losses in every epoch
        new = (runs / f"seed{seed}" / f"stage{stage}" / "log.jsonl").read_text()
        assert [json.loads(x)["loss"] for x in new.splitlines()] != [json.loads(x)["loss"] for x in text.splitlines()]


def test_a_truncated_feature_store_is_rebuilt_by_the_next_run(demo_run, tmp_path):
    """Issue 25, item 7: after a complete run the store is truncated. The next run's first reader moves it aside and
    fails with one line; the run after it (plain, nothing deleted by hand) rebuilds the store, re-runs what read it
    and gives the same table. Before, it said "Nothing to be done": the store was a missing intermediate file whose
    other consumers were up to date."""
    wd = _copy_run(demo_run, tmp_path)
    table = (wd / "results" / "summary.csv").read_text()
    store = wd / "results" / "features" / "demo" / "handcrafted" / "features.h5"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 3])
    proc = snakemake(wd, check=False)
    assert proc.returncode != 0
    assert re.search(r"avzsl train: error: results/features/demo/handcrafted/features\.h5 is damaged \(not a "
                     r"readable feature store: .*\); moved it to features\.h5\.damaged", proc.stdout + proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not store.exists() and store.with_name("features.h5.damaged").exists()
    plan = snakemake(wd, "-n")
    jobs = planned_jobs(plan.stdout)
    assert jobs["merge_features"] == 1 and "extract_shard" not in jobs  # the shards are sound: only the merge
    assert jobs["train_stage1"] == jobs["train_stage2"] == jobs["evaluate"] == 2
    snakemake(wd)  # nothing deleted by hand
    assert len(FeatureStore(store)) > 0
    assert (wd / "results" / "summary.csv").read_text() == table
    proc = snakemake(wd, "-n")  # the aside copy, kept, triggers nothing more
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_second_run_does_nothing(demo_run):
    wd, _ = demo_run
    proc = snakemake(wd, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_an_extractor_parameter_invalidates_extraction_and_downstream_only(demo_run, tmp_path):
    wd, _ = demo_run
    changed = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    changed["feature_sets"]["handcrafted"]["params"] = {"frames_per_window": 6}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    proc = snakemake(wd, "-n", "--configfile", str(tmp_path / "changed.yaml"))
    jobs = planned_jobs(proc.stdout)
    assert jobs == {"extract_shard": 2, "merge_features": 1, "train_stage1": 2, "train_stage2": 2, "evaluate": 2,
                    "summary": 1, "report_files": 1, "all": 1}
    assert "Params have changed" in proc.stdout


def test_a_plugin_backbone_runs_through_the_dag_and_its_parameter_reruns_extraction_and_downstream(demo_run, tmp_path):
    """A backbone from another installed package (entry-point group avzsl.backbones) as a feature set's audio."""
    from test_backbone_plugins import PLUGIN_MODULE

    site = tmp_path / "site"
    info = site / "avzsl_test_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "avzsl_test_plugin.py").write_text(PLUGIN_MODULE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: avzsl-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[avzsl.backbones]\nmean_level = avzsl_test_plugin:MeanLevel\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    wd = _copy_run(demo_run, tmp_path)
    cfg = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    cfg["feature_sets"]["plugin"] = {"backbone": "handcrafted", "params": {},
                                     "audio": {"backbone": "mean_level", "params": {"scale": 1.0}}}
    cfg["datasets"]["demo"]["feature_sets"] = ["plugin"]
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    first = planned_jobs(snakemake(wd, "-n", env=env).stdout)
    assert "demo_videos" not in first and first["extract_shard"] == 2  # the clips are reused
    snakemake(wd, env=env)
    store = FeatureStore(wd / "results" / "features" / "demo" / "plugin" / "features.h5")
    assert store.dims == {"audio": 2, "video": 96}
    assert [r["feature_set"] for r in csv.DictReader(open(wd / "results" / "summary.csv"))] == ["plugin"] * 2
    cfg["feature_sets"]["plugin"]["audio"]["params"]["scale"] = 2.0
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", env=env)
    print(proc.stdout.split("Job stats:")[-1][:600])  # the dry run, for the record
    assert planned_jobs(proc.stdout) == {"extract_shard": 2, "merge_features": 1, "train_stage1": 2,
                                         "train_stage2": 2, "evaluate": 2, "summary": 1, "report_files": 1, "all": 1}


def test_a_model_hyper_parameter_invalidates_training_only(demo_run, tmp_path):
    wd, _ = demo_run
    changed = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    changed["training"]["overrides"]["model"] = {"margin": 0.5}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(snakemake(wd, "-n", "--configfile", str(tmp_path / "changed.yaml")).stdout)
    assert jobs == {"train_stage1": 2, "train_stage2": 2, "evaluate": 2, "summary": 1, "report_files": 1, "all": 1}


def _bad(tmp_path, mutate) -> subprocess.CompletedProcess:
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    mutate(cfg)
    wd = workdir_with(tmp_path, cfg)
    proc = snakemake(wd, check=False)
    assert proc.returncode != 0
    assert not (wd / "results").exists() and not (wd / "resources").exists(), "partial outputs left behind"
    return proc


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["datasets"]["demo"]["demo"].update(n_clips=3), r"unknown key n_clips in datasets\.demo\.demo"),
    (lambda c: c["extract"].update(shards="two"), r"extract\.shards: 'two' is not of type 'integer'"),
    (lambda c: c.update(models=["avca", "nosuchmodel"]), r"unknown model 'nosuchmodel'"),
    (lambda c: c["training"]["overrides"].update(model={"margn": 1}), r"has no hyper-parameter\(s\) \['margn'\]"),
    (lambda c: c["datasets"].update(ucf={"source": "released_avca", "feature_sets": ["main"],
                                         "released_avca": {"root": "/nonexistent/avca", "dataset": "UCF"}})
     or c.update(active_datasets=["ucf"]), r"released_avca\.root: feature root not found: /nonexistent/avca"),
    (lambda c: c["training"]["overrides"]["train"].update(lr="fast"),
     r"avca train settings\.lr must be a positive number, got 'fast'"),
    (lambda c: c["training"]["overrides"]["train"].update(epochs=True),
     r"avca train settings\.epochs must be a positive integer, got True"),
    (lambda c: c["training"]["overrides"].update(model={"margin": "wide"}), r"avca model .*\.margin must be a number"),
    (lambda c: c["extract"].update(max_seconds=0), r"extract\.max_seconds: 0 is less than or equal to the minimum of 0"),
    (lambda c: c["datasets"]["demo"]["splits"].update(n_val_unseen=4, n_test_unseen=4),
     r"datasets\.demo\.splits: 8 unseen classes \(n_val_unseen \+ n_test_unseen\) out of 9 leave 1 seen; at least "
     r"two are needed"),
])
def test_bad_configuration_stops_with_one_clear_message(tmp_path, mutate, message):
    proc = _bad(tmp_path, mutate)
    assert re.search(message, proc.stderr + proc.stdout), proc.stderr[-2000:]
    assert "ConfigError" in proc.stderr


def test_overlapping_official_split_stops_before_anything_runs(shared_splits, tmp_path):
    src = shared_splits / "avgzsl_benchmark_datasets" / "UCF" / "class-split"
    split = tmp_path / "split"
    shutil.copytree(src / "main_split", split)
    shutil.copy(src / "all_class.txt", split)
    (split / "stage_1_val_unseen.txt").write_text((split / "stage_1_val_unseen.txt").read_text() + "Archery\n")
    proc = _bad(tmp_path / "wd", lambda c: c["datasets"]["demo"]["splits"].update(official_dir=str(split)))
    assert re.search(r"unseen classes overlap seen ones: stage_1_val_unseen and stage_1_train share 1 class\(es\): "
                     r"\['Archery'\]", proc.stderr), proc.stderr[-2000:]


def test_an_empty_test_unseen_csv_stops_before_anything_runs(shared_splits, tmp_path):
    src = shared_splits / "avgzsl_benchmark_datasets" / "UCF" / "class-split"
    split = tmp_path / "split"
    shutil.copytree(src / "main_split", split)
    shutil.copy(src / "all_class.txt", split)
    (split / "stage_2_test_unseen.csv").write_text("filename,label\n")
    proc = _bad(tmp_path / "wd", lambda c: c["datasets"]["demo"]["splits"].update(official_dir=str(split)))
    assert re.search(r"split error in .*split: stage_2_test_unseen has no videos", proc.stderr), proc.stderr[-2000:]


def test_a_missing_text_npy_stops_before_anything_runs(shared_splits, tmp_path):
    from avca_tree import fabricate_tree

    tree = fabricate_tree(shared_splits, tmp_path / "tree", "UCF", feature_sets=("main",), dims={"main": (8, 8)})
    proc = _bad(tmp_path / "wd", lambda c: c["datasets"].update(ucf={
        "source": "released_avca", "feature_sets": ["main"],
        "released_avca": {"root": str(tree), "dataset": "UCF", "text_npy": str(tmp_path / "no such.npy")}})
        or c.update(active_datasets=["ucf"]))
    assert re.search(r"datasets\.ucf\.released_avca\.text_npy: file not found: .*no such\.npy", proc.stderr)


def test_released_feature_tree_trains_and_evaluates_through_the_dag(shared_splits, tmp_path):
    """Also: every path the configuration names, and the working directory, contain spaces."""
    from avca_tree import fabricate_tree

    tree = fabricate_tree(shared_splits, tmp_path / "released tree", "UCF", dims={"main": (32, 32), "cls": (16, 64)})
    npy = next((tree / "UCF" / "features" / "main_features" / "text").glob("*.npy"))
    text_npy = tmp_path / "my text" / "word vectors.npy"
    text_npy.parent.mkdir()
    shutil.copy(npy, text_npy)
    cfg = {"active_datasets": ["ucf"],
           "datasets": {"ucf": {"source": "released_avca", "hparams": "ucf", "feature_sets": ["main", "cls"],
                                "released_avca": {"root": str(tree), "dataset": "UCF", "text_npy": str(text_npy)}}},
           "models": ["avca"], "seeds": [42],
           "training": {"device": "cpu", "overrides": {"train": {"epochs": 2, "n_batches": 3, "batch_size": 32}}}}
    wd = workdir_with(tmp_path / "work dir", cfg)
    snakemake(wd)
    rows = {r["feature_set"]: r for r in csv.DictReader(open(wd / "results" / "summary.csv"))}
    assert set(rows) == {"main", "cls"}
    for fs, n_unseen in (("main", 9), ("cls", 6)):
        result = json.loads((wd / "results" / "runs" / "ucf" / fs / "avca" / "seed42" / "test.json").read_text())
        assert result["counts"]["test"]["missing_features"] == 0
        assert len(result["config"]["model_params"]) > 5
        test_unseen = (wd / "results" / "splits" / "ucf" / fs / "stage_2_test_unseen.txt").read_text().split()
        assert len(test_unseen) == n_unseen
    # the reference hyper-parameters of the UCF profile were used (cls: BatchNorm momentum 0.99)
    cls_cfg = yaml.safe_load((wd / "results" / "runs" / "ucf" / "cls" / "avca" / "seed42" / "stage1" /
                              "config.yaml").read_text())
    assert cls_cfg["run"]["model_params"]["momentum"] == 0.99 and cls_cfg["run"]["train"]["lr"] == 0.001


def test_daan_trains_and_evaluates_on_a_tcaf_pickle_tree_through_the_dag(shared_splits, tmp_path):
    from avca_tree import fabricate_tcaf_tree

    tree = fabricate_tcaf_tree(shared_splits, tmp_path / "tree", "UCF", dims={"main": (16, 16)})
    small = {"hidden_dim": 32, "out_dim": 16, "qk_dim": 8, "attn_mlp_dim": 32, "mlp_hidden": 32}
    cfg = {"active_datasets": ["ucf"],
           "datasets": {"ucf": {"source": "released_avca", "hparams": "ucf", "feature_sets": ["main"],
                                "released_avca": {"root": str(tree), "dataset": "UCF", "layout": "tcaf"}}},
           "models": ["daan"], "seeds": [42],
           "training": {"device": "cpu", "overrides": {"train": {"epochs": 2, "n_batches": 3, "batch_size": 32},
                                                        "model": small}}}
    wd = workdir_with(tmp_path / "wd", cfg)
    snakemake(wd)
    rows = list(csv.DictReader(open(wd / "results" / "summary.csv")))
    assert [(r["dataset"], r["feature_set"], r["model"]) for r in rows] == [("ucf", "main", "daan")]
    run = yaml.safe_load((wd / "results" / "runs" / "ucf" / "main" / "daan" / "seed42" / "stage1" /
                          "config.yaml").read_text())["run"]
    assert run["model_params"]["diff_weight"] == 1.15 and run["model_params"]["dilation"] == 3  # §III.A, UCF


def test_table_one_target_runs_every_model_on_a_released_avca_tree(shared_splits, tmp_path):
    """All models, S/U/HM/ZSL, on a fabricated UCF tree of per-video means (temporal models get one-step inputs)."""
    from avca_tree import fabricate_tree

    tree = fabricate_tree(shared_splits, tmp_path / "tree", "UCF", feature_sets=("main",), dims={"main": (32, 32)})
    cfg = {"active_datasets": ["ucf"],
           "datasets": {"ucf": {"source": "released_avca", "hparams": "ucf", "feature_sets": ["main"],
                                "released_avca": {"root": str(tree), "dataset": "UCF"}}},
           "models": ["avca"], "seeds": [42],
           "training": {"device": "cpu", "overrides": {"train": {"epochs": 1, "n_batches": 2, "batch_size": 32}},
                        "model_overrides": {
                            "fvaegan": {"model": {"hidden_dim": 64, "syn_num": 10, "real_per_class": 10,
                                                  "cls_epochs": 2, "cls_batch_size": 64}},
                            "daan": {"model": {"hidden_dim": 32, "out_dim": 16, "qk_dim": 8, "attn_mlp_dim": 32}}}}}
    wd = workdir_with(tmp_path / "wd", cfg)
    snakemake(wd, "table1")
    rows = list(csv.DictReader(open(wd / "results" / "table1.csv")))
    from training.models import MODELS
    expected = sorted(m for m in MODELS if MODELS[m].family != "Ablation")
    assert sorted(r["model"] for r in rows) == expected
    for r in rows:
        for metric in ("S", "U", "HM", "ZSL"):
            assert 0.0 <= float(r[metric]) <= 100.0
        assert r["inputs"] == ("mean as one step" if MODELS[r["model"]].needs_sequences else "mean")
    md = (wd / "results" / "table1.md").read_text()
    assert "| ZSL | ALE |" in md and "| Audio-visual | AVCA |" in md and "†" in md
    assert md.index("| ZSL |") < md.index("| Audio-visual |")
