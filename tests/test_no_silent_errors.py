"""No silent wrong results: resume state tied to the exact inputs, empty sets refused, and bad input stopped with one
line that names the problem, leaving no partial output behind."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import REPO

import training.engine as engine
from avzsl.common import DamagedFileError
from extractors.extract import ExtractOptions, extract_shard
from extractors.feature_store import FeatureStore
from extractors.sources.manifest import ManifestRow, read_manifest, write_manifest
from extractors.splits import SplitError, SplitRecipe, build_splits, read_splits, write_splits
from training.config import ConfigError, RunConfig, TrainConfig, resolve_hparams
from training.memory import MemoryBudgetError


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture()
def inputs(tiny_dataset, tmp_path) -> dict:
    """A private copy of the tiny dataset's stores, so that a test can change an input in place."""
    out = {"features": tmp_path / "in" / "features.h5", "splits": tmp_path / "in" / "splits",
           "text": tmp_path / "in" / "text.h5"}
    out["features"].parent.mkdir(parents=True)
    shutil.copy(tiny_dataset["features"], out["features"])
    shutil.copytree(tiny_dataset["splits"], out["splits"])
    shutil.copy(tiny_dataset["text"], out["text"])
    return out


def _cfg(paths: dict, **train) -> RunConfig:
    hp = resolve_hparams("avca", "demo")
    t = {**hp["train"], "epochs": 3, "n_batches": 4, "batch_size": 16, **train}
    return RunConfig(model="avca", seed=3, train=TrainConfig.from_dict(t), model_params=hp["model"], dataset="tiny",
                     feature_set="handcrafted", profile="demo", features=str(paths["features"]),
                     splits=str(paths["splits"]), text=str(paths["text"]), device="cpu")


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _train(cfg, run_dir, caplog, stage=1, selection=None) -> tuple[dict, str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avzsl"):
        result = engine.train_stage(cfg, stage, run_dir, selection, progress=False)
    return result, caplog.text


def _rebuild_splits(tiny, folder: Path, seed: int) -> None:
    from extractors.sources.demo import read_factors

    rows = read_manifest(tiny["manifest"])
    splits = build_splits([(r.video_id, r.label, r.group) for r in rows],
                          SplitRecipe(n_val_unseen=2, n_test_unseen=2, val_seen_fraction=0.2,
                                      test_seen_fraction=0.2, seed=seed),
                          read_factors(Path(tiny["manifest"]).parent / "class_names.csv"))
    write_splits(folder, splits)


# ------------------------------------------------------------------------------------------------ stale inputs
def test_an_unchanged_rerun_resumes_and_trains_nothing(inputs, tmp_path, caplog):
    cfg = _cfg(inputs)
    first, _ = _train(cfg, tmp_path / "run", caplog)
    again, log = _train(cfg, tmp_path / "run", caplog)
    assert again == first
    assert "resuming after epoch 2" in log and "epoch 0:" not in log


@pytest.mark.parametrize("change", ["splits", "features", "dataset"])
def test_a_changed_input_discards_the_checkpoint_and_retrains(inputs, tiny_dataset, tmp_path, caplog, change):
    cfg = _cfg(inputs)
    run = tmp_path / "run"
    old, _ = _train(cfg, run, caplog)
    old_weights = _weights(run)
    if change == "splits":  # e.g. other unseen classes: same folder, new contents
        _rebuild_splits(tiny_dataset, inputs["splits"], seed=5)
        expect = "splits"
    elif change == "features":  # an extractor parameter: same path, new features
        extract_shard(tiny_dataset["manifest"], 0, 1, "handcrafted", {"frames_per_window": 6}, inputs["features"],
                      ExtractOptions(workers=0, progress=False))
        expect = "features"
    else:  # the dataset itself: fewer clips, so new features and new splits
        rows = read_manifest(tiny_dataset["manifest"])
        # without the broken clips too: a split drawn from them may leave a test class without features, which
        # stage 1 refuses (the test classes are checked before any training)
        keep = [r for r in rows if not r.video_id.endswith("_005") and not r.video_id.startswith("broken_")]
        manifest = tmp_path / "data" / "manifest.csv"
        write_manifest(manifest, [ManifestRow(r.video_id, str(Path(tiny_dataset["manifest"]).parent / r.path),
                                              r.label, r.group) for r in keep])
        shutil.copy(Path(tiny_dataset["manifest"]).parent / "class_names.csv", manifest.parent)
        extract_shard(manifest, 0, 1, "handcrafted", {}, inputs["features"], ExtractOptions(workers=0,
                                                                                             progress=False))
        _rebuild_splits({"manifest": manifest}, inputs["splits"], seed=0)
        expect = "features, splits"
    new, log = _train(cfg, run, caplog)
    assert f"discarding checkpoint {run / 'checkpoint.pt'}: it was made from other inputs ({expect} changed)" in log
    assert "resuming" not in log and "epoch 0:" in log and "epoch 2:" in log
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    assert not _same_weights(_weights(run), old_weights)
    assert new["val"] != old["val"]
    fresh, _ = _train(cfg, tmp_path / "fresh", caplog)  # the same as a run that never saw the old inputs
    assert new == fresh and _same_weights(_weights(run), _weights(tmp_path / "fresh"))


def test_a_changed_stage1_selection_retrains_stage2(inputs, tmp_path, caplog):
    cfg = _cfg(inputs)
    run = tmp_path / "s2"
    _train(cfg, run, caplog, stage=2, selection={"best_epoch": 1, "beta": 0.4, "val": {}})
    old_weights = (run / "model.pt").read_bytes()
    _, log = _train(cfg, run, caplog, stage=2, selection={"best_epoch": 1, "beta": 0.4, "val": {}})
    assert "resuming after epoch 1" in log
    _, log = _train(cfg, run, caplog, stage=2, selection={"best_epoch": 2, "beta": 0.4, "val": {}})
    assert "(selection changed)" in log and "resuming" not in log
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    assert (run / "model.pt").read_bytes() != old_weights


def test_the_run_header_records_the_content_identity_of_every_input(inputs, tmp_path, caplog):
    import yaml

    _train(_cfg(inputs), tmp_path / "run", caplog)
    header = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert set(header["inputs"]) == {"config", "code_version", "features", "splits", "text"}
    assert all(len(header["inputs"][k]) == 64 for k in ("features", "splits", "text"))


# ------------------------------------------------------------------------------------------------ empty sets
def _official_copy(tiny, tmp_path) -> Path:
    dst = tmp_path / "split"
    shutil.copytree(tiny["splits"], dst)
    return dst


def test_an_empty_test_unseen_csv_is_refused(tiny_dataset, tmp_path):
    split = _official_copy(tiny_dataset, tmp_path)
    (split / "stage_2_test_unseen.csv").write_text("filename,label,label_code\n")
    with pytest.raises(SplitError, match=r"stage_2_test_unseen has no videos"):
        read_splits(split)


def test_a_scored_class_without_videos_is_refused(tiny_dataset, tmp_path):
    split = _official_copy(tiny_dataset, tmp_path)
    lines = (split / "stage_1_val_seen.csv").read_text().splitlines()
    dropped = lines[1].split(",")[1]
    (split / "stage_1_val_seen.csv").write_text("\n".join([lines[0]] + [ln for ln in lines[1:]
                                                                         if ln.split(",")[1] != dropped]) + "\n")
    with pytest.raises(SplitError, match=rf"stage_1_val_seen lists class\(es\) with no videos: \['{dropped}'\]"):
        read_splits(split)


def test_fewer_than_two_seen_classes_is_refused(tiny_dataset):
    rows = read_manifest(tiny_dataset["manifest"])
    with pytest.raises(SplitError, match="cannot draw 9 unseen classes from 9"):
        build_splits([(r.video_id, r.label, r.group) for r in rows], SplitRecipe(n_val_unseen=4, n_test_unseen=5))
    splits = build_splits([(r.video_id, r.label, r.group) for r in rows], SplitRecipe(n_val_unseen=3,
                                                                                      n_test_unseen=3))
    splits.classes["stage_1_train"] = splits.classes["stage_1_train"][:1]
    splits.classes["stage_1_val_seen"] = splits.classes["stage_1_train"]
    with pytest.raises(SplitError, match="stage_1_train has 1 seen class"):
        splits.validate()


def test_a_class_whose_every_video_failed_extraction_cannot_be_scored(inputs, tmp_path):
    """The split lists the class, but none of its test videos has features: an error naming split and class."""
    from extractors.feature_store import write_store

    splits = read_splits(inputs["splits"])
    victim = splits.classes["stage_2_test_unseen"][0]
    gone = {v for v, c in splits.videos["stage_2_test_unseen"] if c == victim}
    store = FeatureStore(inputs["features"])
    write_store(inputs["features"], store.spec(), [v for v in store.iter_videos() if v.video_id not in gone],
                store.failures() + [(v, "decode error") for v in sorted(gone)])
    with pytest.raises(ValueError, match=rf"stage_2_test_unseen: class '{victim}' has no video with features"):
        engine.load_data(_cfg(inputs), 2, torch.device("cpu"))


def _fail_extraction(paths: dict, gone: set[str]) -> None:
    """Rewrite the feature store as if the videos ``gone`` had failed extraction (listed in its failures)."""
    from extractors.feature_store import write_store

    store = FeatureStore(paths["features"])
    write_store(paths["features"], store.spec(), [v for v in store.iter_videos() if v.video_id not in gone],
                store.failures() + [(v, "decode error") for v in sorted(gone)])


@pytest.mark.parametrize("split_name", ["stage_2_test_unseen", "stage_2_test_seen"])
def test_a_test_class_whose_every_video_failed_extraction_stops_stage_1_before_training(inputs, tmp_path,
                                                                                         split_name):
    """Issue 25, item 7: the class's only test clips decode in the scan but fail extraction. Stage 1 refuses with one
    line naming split and class, before it trains (no checkpoint, no selection), not stage 2 after stage 1."""
    splits = read_splits(inputs["splits"])
    victim = splits.classes[split_name][0]
    _fail_extraction(inputs, {v for v, c in splits.videos[split_name] if c == victim})
    proc = avzsl("train", "--stage", "1", "--run-config", json.dumps(_cfg(inputs).to_dict()), "--run-dir",
                 str(tmp_path / "r"), "--out", str(tmp_path / "sel.json"))
    assert_one_line_error(proc, rf"^avzsl train: error: {split_name}: class '{victim}' has no video with features "
                                r"in .*features\.h5 \(its videos failed extraction or are absent\)")
    assert not (tmp_path / "sel.json").exists()
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    assert "epoch" not in proc.stderr


def test_videos_that_failed_extraction_are_left_out_and_counted(inputs, tmp_path, caplog):
    """A failed video of a class that keeps others is dropped from training and scoring, counted in the run's log
    and its record (counts), and the run goes on."""
    splits = read_splits(inputs["splits"])
    from collections import Counter

    train_vid = splits.videos["stage_1_train"][0][0]
    test = [vc for name in ("stage_2_test_seen", "stage_2_test_unseen") for vc in splits.videos[name]]
    per_class = Counter(c for _, c in test)
    test_vid = next(v for v, c in test if per_class[c] > 1)  # its class keeps a video
    before = (engine.load_data(_cfg(inputs), 1, torch.device("cpu")), engine.load_data(_cfg(inputs), 2,
                                                                                           torch.device("cpu")))
    _fail_extraction(inputs, {train_vid, test_vid})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="avzsl"):
        one = engine.load_data(_cfg(inputs), 1, torch.device("cpu"))
        two = engine.load_data(_cfg(inputs), 2, torch.device("cpu"))
    n_train, n_test = len(splits.train_videos(1)), len(splits.eval_videos(2))
    missing_train = before[0].counts["train"]["missing_features"] + 1
    assert one.counts["train"] == {"listed": n_train, "missing_features": missing_train}
    assert len(one.train_labels) == len(before[0].train_labels) - 1
    assert two.counts["test"] == {"listed": n_test, "missing_features": before[1].counts["test"]["missing_features"]
                                  + 1}
    assert len(two.test.labels) == len(before[1].test.labels) - 1
    assert (f"train: {missing_train} of {n_train} split videos have no features (failed or absent media); left out"
            in caplog.text)


# ------------------------------------------------------------------------------------------------ training settings
@pytest.mark.parametrize("setting,value,message", [
    ("lr", "fast", r"train\.lr must be a positive number, got 'fast'"),
    ("lr", 0, r"train\.lr must be a positive number, got 0"),
    ("epochs", True, r"train\.epochs must be a positive integer, got True"),
    ("batch_size", 2.5, r"train\.batch_size must be a positive integer, got 2\.5"),
    ("max_steps", 0, r"train\.max_steps must be a positive integer or null, got 0"),
    ("factor", 1.5, r"train\.factor must be a number between 0 and 1"),
])
def test_training_settings_are_checked_for_type_and_range(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({setting: value})


def test_model_hyper_parameters_are_checked_against_their_declared_kind():
    from training.config import check_hparam_types
    from training.models import get_model_class

    declared = get_model_class("avca").hparams
    with pytest.raises(ConfigError, match=r"avca\.margin must be a number, got 'wide'"):
        check_hparam_types(declared, {"margin": "wide"}, "avca")
    check_hparam_types(declared, {"margin": 2}, "avca")  # an integer is a number


def test_a_batch_larger_than_the_training_set_is_capped_with_a_warning(inputs, tmp_path, caplog):
    cfg = _cfg(inputs, batch_size=100000, epochs=1)
    n_train = len(engine.load_data(cfg, 1, torch.device("cpu")).train_idx)
    _, log = _train(cfg, tmp_path / "run", caplog)
    assert f"batch_size 100000 is larger than the training set ({n_train} videos): using batches of {n_train}" in log
    import yaml

    header = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert header["run"]["train"]["batch_size"] == n_train


def test_a_job_that_cannot_fit_its_memory_budget_stops_before_training(inputs, tmp_path):
    cfg = _cfg(inputs, batch_size=64)
    with pytest.raises(MemoryBudgetError, match=r"training avca needs about \d+ MB .* more than the job's 401 MB: "
                                                r"lower train\.batch_size"):
        engine.train_stage(cfg, 1, tmp_path / "run", progress=False, mem_mb=401)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # the same run within budget trains, and the check leaves its result untouched
    with_budget = engine.train_stage(cfg, 1, tmp_path / "a", progress=False, mem_mb=8000)
    without = engine.train_stage(cfg, 1, tmp_path / "b", progress=False)
    assert with_budget == without and _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))


def test_measured_activation_memory_grows_with_the_batch(inputs):
    from training.memory import check_training_memory

    cfg = engine.complete_config(_cfg(inputs))
    data = engine.load_data(cfg, 1, torch.device("cpu"))
    model = engine.build_for_data(cfg, data, torch.device("cpu"))
    small = check_training_memory(replace(cfg, train=replace(cfg.train, batch_size=16)), data, model, 100000)
    large = check_training_memory(replace(cfg, train=replace(cfg.train, batch_size=1600)), data, model, 100000)
    assert large["activations"] > 10 * small["activations"]  # grows with the batch (about linearly)
    assert small["features"] > 0 and small["parameters_and_optimiser"] > 0


# ------------------------------------------------------------------------------------------------ damaged stores
def test_a_truncated_feature_store_is_moved_aside_with_one_message(inputs):
    path = inputs["features"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFileError, match=r"features\.h5 is damaged \(not a readable feature store: .*\); "
                                               r"moved it to features\.h5\.damaged so that the next run rebuilds it"):
        FeatureStore(path)
    assert not path.exists() and (path.parent / "features.h5.damaged").exists()


# ------------------------------------------------------------------------------------------------ the CLI
def avzsl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avzsl", "--quiet", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    import re

    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert re.search(pattern, errors[0]), errors[0]


def test_cli_bad_training_setting_is_one_line(inputs, tmp_path):
    run = _cfg(inputs).to_dict()
    run["train"] = {**run["train"], "lr": "fast"}
    proc = avzsl("train", "--stage", "1", "--run-config", json.dumps(run), "--run-dir", str(tmp_path / "r"),
                 "--out", str(tmp_path / "sel.json"))
    assert_one_line_error(proc, r"^avzsl train: error: train\.lr must be a positive number, got 'fast'$")
    assert not (tmp_path / "sel.json").exists()


def test_cli_truncated_store_is_one_line_and_rebuilt_by_the_next_run(inputs, tmp_path):
    data = inputs["features"].read_bytes()
    inputs["features"].write_bytes(data[:1000])
    run = _cfg(inputs).to_dict()
    proc = avzsl("train", "--stage", "1", "--run-config", json.dumps(run), "--run-dir", str(tmp_path / "r"),
                 "--out", str(tmp_path / "sel.json"))
    assert_one_line_error(proc, r"features\.h5 is damaged .* moved it to features\.h5\.damaged")
    assert not (tmp_path / "sel.json").exists()


def test_cli_max_seconds_zero_is_one_line(tiny_dataset, tmp_path):
    proc = avzsl("extract", "--manifest", str(tiny_dataset["manifest"]), "--max-seconds", "0", "--workers", "0",
                 "--out", str(tmp_path / "s.h5"))
    assert_one_line_error(proc, r"^avzsl extract: error: max_seconds must be a positive number of seconds")
    assert list(tmp_path.iterdir()) == []


def test_a_shard_whose_every_video_fails_leaves_nothing_and_reruns_after_the_fix(tiny_dataset, tmp_path):
    src = Path(tiny_dataset["manifest"]).parent
    rows = read_manifest(tiny_dataset["manifest"])[:3]
    media = tmp_path / "media"
    media.mkdir()
    for r in rows:  # not media at all
        (media / Path(r.path).name).write_bytes(b"this is not a video\n" * 10)
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, [ManifestRow(r.video_id, f"media/{Path(r.path).name}", r.label, r.group)
                              for r in rows])
    out = tmp_path / "shard.h5"
    proc = avzsl("extract", "--manifest", str(manifest), "--workers", "0", "--out", str(out))
    assert_one_line_error(proc, r"every one of the 3 videos of shard 0 of .*manifest\.csv failed \(first: "
                                rf"{rows[0].video_id}: .*\); nothing was written")
    assert not out.exists() and not out.with_name("shard.h5.partial").exists()
    for r in rows:  # the fix: the real files
        shutil.copy(src / r.path, media / Path(r.path).name)
    proc = avzsl("extract", "--manifest", str(manifest), "--workers", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(FeatureStore(out)) == 3 and FeatureStore(out).failures() == []


def test_every_shipped_model_profile_passes_the_type_checks():
    from training.config import available_models, check_hparam_types, load_model_config
    from training.models import get_model_class

    for model in available_models():
        profiles = ["default", *(load_model_config(model).get("profiles") or {})]
        for key in profiles:
            profile, _, feature_set = key.partition("/")
            hp = resolve_hparams(model, profile, feature_set)
            check_hparam_types(get_model_class(model).hparams, hp["model"], f"{model} {key}")
