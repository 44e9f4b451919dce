"""The example configurations of config/examples/ plan the whole chain (dry runs: no network, no data), and the
split-stage rules of real datasets: official splits, their download lists, leakage-free splits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_workflow import planned_jobs

from extractors.sources.manifest import ManifestRow, write_class_names, write_manifest
from extractors.splits import read_splits

EXAMPLES = REPO / "config" / "examples"
TRAINING = {"train_stage1", "train_stage2", "evaluate", "summary", "report_files", "all"}
EXTRACTION = {"fetch_weights", "extract_shard", "merge_features"}
TEXT = {"fetch_text_weights", "class_text"}  # fastText wiki.en.bin by url
UCF = {"fetch_ucf_archive", "ucf_archive", "fetch_official_splits", "split_coverage"} | EXTRACTION | TEXT | TRAINING
DOWNLOADED = ({"fetch_official_splits", "official_download_list", "download_shard", "download_manifest"}
              | EXTRACTION | TEXT | TRAINING)
RELEASED = {"import_released_features", "import_released_splits", "import_released_text"} | TRAINING


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake -n`` in ``workdir`` (holding a copy of config/config.yaml) with the repository's Snakefile."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--dry-run", "--quiet", "rules", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=120)


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    shutil.copy(REPO / "config" / "leakage_overrides.csv", tmp_path / "config" / "leakage_overrides.csv")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("name, expected, weights", [
    ("ucf_main", UCF, 1), ("ucf_cls", UCF, 3),
    ("activitynet_main", DOWNLOADED, 1), ("activitynet_cls", DOWNLOADED, 3),
    ("vggsound_main", DOWNLOADED, 1), ("vggsound_cls", DOWNLOADED, 3)])
def test_each_benchmark_config_plans_the_whole_chain(workdir, name, expected, weights):
    """From the videos (archive or official download list) to the table, with nothing present and no network."""
    r = dry_run(workdir, "--configfile", str(EXAMPLES / f"{name}.yaml"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    jobs = planned_jobs(r.stdout)
    assert set(jobs) == expected, sorted(set(jobs) ^ expected)
    assert jobs["fetch_weights"] == weights  # SeLaVi: one checkpoint; C3D + VGGish + its PCA file
    cfg = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    (ds,) = cfg["datasets"].values()
    variant = name.split("_")[1]
    assert ds["feature_sets"] == [variant] and ds["splits"]["official"]["variant"] == variant
    fs = cfg["feature_sets"][variant]
    backbones = {fs["backbone"]} if "backbone" in fs else {fs["audio"]["backbone"], fs["video"]["backbone"]}
    assert backbones == ({"selavi"} if variant == "main" else {"c3d", "vggish"})
    assert cfg["text"]["encoder"] == "fasttext"  # the reference's embeddings (docs/text-encoders.md)


@pytest.mark.parametrize("name", ["ucf_main", "ucf_cls", "activitynet_main", "activitynet_cls", "vggsound_main",
                                  "vggsound_cls"])
def test_each_benchmark_config_extracts_in_the_reference_mode(name):
    """Regenerated benchmark features must be the released ones: every backbone of every feature set the config
    extracts resolves (defaults applied) to mode 'reference' (docs/backbones.md)."""
    from extractors.backbones.base import backbone_class
    from extractors.feature_sets import normalize_feature_set

    cfg = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    used = {fs for ds in cfg["datasets"].values() for fs in ds["feature_sets"]}
    assert used
    for fs in used:
        for m, entry in normalize_feature_set(cfg["feature_sets"][fs], fs).items():
            resolved = {**backbone_class(entry["backbone"]).default_params, **entry["params"]}
            assert resolved["mode"] == "reference", f"{name}: feature_sets.{fs}.{m} ({entry['backbone']})"


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["UCF", "ActivityNet", "VGGSound"])
def test_each_released_config_plans_the_import(workdir, shared_splits, dataset):
    name = {"UCF": "ucf", "ActivityNet": "activitynet", "VGGSound": "vggsound"}[dataset]
    root = workdir / "tree"
    shutil.copytree(shared_splits / "avgzsl_benchmark_datasets" / dataset / "class-split", root / dataset / "class-split")
    override = workdir / "root.yaml"
    override.write_text(yaml.safe_dump({"datasets": {name: {"released_avca": {"root": str(root)}}}}))
    r = dry_run(workdir, "--configfile", str(EXAMPLES / f"released_avca_{name}.yaml"), str(override))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    jobs = planned_jobs(r.stdout)
    assert set(jobs) == RELEASED and jobs["import_released_splits"] == 2  # main and cls


def _ucf_config(workdir: Path, splits: dict) -> Path:
    (workdir / "UCF101.zip").write_bytes(b"")  # present; nothing reads it in a dry run
    cfg = {"active_datasets": ["ucf"],
           "datasets": {"ucf": {"source": "ucf_archive", "feature_sets": ["handcrafted"],
                                "ucf_archive": {"archive": "UCF101.zip", "classes": [f"C{i}" for i in range(8)]},
                                "splits": splits}},
           "models": ["avca"]}
    path = workdir / "ucf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_a_leakage_free_split_is_planned_for_a_named_backbone(workdir):
    voc = workdir / "sports1m.txt"
    voc.write_text("archery\nbowling\n")
    cfg = _ucf_config(workdir, {"mode": "leakage_free", "backbone": "c3d", "vocabularies": {"sports1m": str(voc)},
                                "n_val_unseen": 2, "n_test_unseen": 2})
    r = dry_run(workdir, "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = planned_jobs(r.stdout)
    assert "leakage_free_splits" in jobs and "build_splits" not in jobs and "ucf_archive" in jobs


@pytest.mark.parametrize("splits, message", [
    ({"mode": "leakage_free"}, "datasets.ucf.splits.backbone: mode leakage_free needs the backbone"),
    ({"mode": "leakage_free", "backbone": "alexnet"}, "datasets.ucf.splits.backbone: no pre-training vocabulary"),
    ({"mode": "leakage_free", "backbone": "c3d", "vocabularies": {"sport1m": "x.txt"}},
     "datasets.ucf.splits.vocabularies: unknown vocabulary ['sport1m']"),
    ({"mode": "leakage_free", "backbone": "c3d", "keep_source_apart": True},
     "unknown key keep_source_apart in datasets.ucf.splits"),
    ({"mode": "official", "official_dir": "x"}, "datasets.ucf.splits.official_dir is for mode build"),
    ({"mode": "official", "official": {"variant": "zsl"}}, "datasets.ucf.splits.official.variant"),
    ({"mode": "official", "official": {"source": "no/such/folder"}}, "datasets.ucf.splits.official.source"),
])
@pytest.mark.slow
def test_bad_split_settings_name_the_key(workdir, splits, message):
    r = dry_run(workdir, "--configfile", str(_ucf_config(workdir, splits)))
    assert r.returncode != 0 and message in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


# ------------------------------------------------------------------------------------------ the commands
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avzsl", "--quiet", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def _manifest(tmp: Path) -> tuple[Path, Path]:
    classes = ["Archery", "Bowling", "ApplyEyeMakeup", "BabyCrawling", "Drumming", "Knitting", "Typing", "Rafting"]
    rows = [ManifestRow(f"v_{c}_g{g:02d}_c0{k}", f"videos/{c}/{g}.avi", c, f"{c}_g{g:02d}")
            for c in classes for g in range(1, 5) for k in (1, 2)]
    write_manifest(tmp / "manifest.csv", rows)
    write_class_names(tmp / "class_names.csv", [{"original": c, "manual": c} for c in classes])
    return tmp / "manifest.csv", tmp / "class_names.csv"


def test_leakage_free_split_command_writes_the_split_and_its_report(tmp_path):
    manifest, names = _manifest(tmp_path)
    (tmp_path / "k400.txt").write_text("archery\nbowling\nknitting\nrafting\ntyping\n")
    recipe = json.dumps({"n_val_unseen": 1, "n_test_unseen": 2, "seed": 0})
    out = tmp_path / "split"
    r = _cli("leakage-free-splits", "--manifest", str(manifest), "--class-names", str(names), "--recipe", recipe,
             "--backbone", "kinetics400", "--vocabularies", json.dumps({"kinetics400": str(tmp_path / "k400.txt")}),
             "--keep-sources-apart", "--out", str(out), "--report", str(out / "leakage_report.md"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    splits = read_splits(out)
    unseen = set(splits.classes["stage_1_val_unseen"]) | set(splits.classes["stage_2_test_unseen"])
    assert unseen <= {"ApplyEyeMakeup", "BabyCrawling", "Drumming"} and len(unseen) == 3
    report = (out / "leakage_report.md").read_text()
    assert "Kinetics-400: 5 class(es) covered" in report and "| Archery | archery | exact |" in report
    assert "no source recording is shared" in report

    # every class covered: no leakage-free split exists, one message says why
    (tmp_path / "k400.txt").write_text("archery\nbowling\nknitting\nrafting\ntyping\napply eye makeup\ndrumming\n")
    r = _cli("leakage-free-splits", "--manifest", str(manifest), "--class-names", str(names), "--recipe", recipe,
             "--backbone", "kinetics400", "--vocabularies", json.dumps({"kinetics400": str(tmp_path / "k400.txt")}),
             "--out", str(tmp_path / "split2"), "--report", str(tmp_path / "r2.md"), cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("leakage-free split for backbone kinetics400: cannot draw 3")


@pytest.mark.slow
def test_official_split_command_and_its_download_list(tmp_path, shared_splits):
    """The official VGGSound cls split from a local copy (digests checked), canonical, with its download list."""
    out = tmp_path / "results" / "splits" / "vgg" / "cls"
    r = _cli("fetch-official-splits", "--dataset", "VGGSound", "--variant", "cls", "--source", str(shared_splits),
             "--cache", str(tmp_path / "cache"), "--out", str(out), "--class-names", str(tmp_path / "names.csv"),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ref = shared_splits / "avgzsl_benchmark_datasets" / "VGGSound" / "class-split"
    a, b = read_splits(out), read_splits(ref / "cls_split", ref / "all_class.txt")
    assert a.classes == b.classes and {s: sorted(v) for s, v in a.videos.items()} == {
        s: sorted(v) for s, v in b.videos.items()}
    assert (tmp_path / "names.csv").read_text().startswith("original,manual,category")
    r = _cli("official-download-list", "--splits", str(out), "--dataset", "VGGSound", "--variant", "cls",
             "--out", str(tmp_path / "list.csv"), "--problems", str(tmp_path / "problems.txt"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from extractors.sources.download import read_download_list

    rows = read_download_list(tmp_path / "list.csv")
    assert len(rows) == len({v for vs in b.videos.values() for v, _ in vs})
    assert all(r.end - r.start == 10 for r in rows[:50]) and (tmp_path / "problems.txt").read_text() == ""


@pytest.mark.slow
def test_official_split_rules_run_offline(workdir, shared_splits):
    """fetch_official_splits and official_download_list through Snakemake, from a local copy of the official files:
    UCF's main split equals the shared copy; VGGSound's cls split gives its download list."""
    (workdir / "UCF101.zip").write_bytes(b"")
    official = {"source": str(shared_splits)}
    cfg = {"active_datasets": ["ucf", "vgg"],
           "datasets": {
               "ucf": {"source": "ucf_archive", "feature_sets": ["handcrafted"],
                       "ucf_archive": {"archive": "UCF101.zip"},
                       "splits": {"mode": "official", "official": {**official, "dataset": "UCF", "variant": "main"}}},
               "vgg": {"source": "download", "feature_sets": ["handcrafted"],
                       "splits": {"mode": "official",
                                  "official": {**official, "dataset": "VGGSound", "variant": "cls"}}}},
           "models": ["avca"]}
    (workdir / "two.yaml").write_text(yaml.safe_dump(cfg))
    targets = ["results/splits/ucf/main/all_class.txt", "resources/vgg/download/official_list.csv"]
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", *targets,
                        "--configfile", "two.yaml"], cwd=workdir, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = shared_splits / "avgzsl_benchmark_datasets" / "UCF" / "class-split"
    a, b = read_splits(workdir / "results/splits/ucf/main"), read_splits(ref / "main_split", ref / "all_class.txt")
    assert a.classes == b.classes and {s: sorted(v) for s, v in a.videos.items()} == {
        s: sorted(v) for s, v in b.videos.items()}
    names = (workdir / "resources/ucf/official_main_class_names.csv").read_text().splitlines()
    assert names[:2] == ["original,manual", "ApplyEyeMakeup,Apply Eye Makeup"]
    from extractors.sources.download import read_download_list

    rows = read_download_list(workdir / "resources/vgg/download/official_list.csv")
    vgg = read_splits(workdir / "results/splits/vgg/cls")
    assert {r.video_id for r in rows} == {v for vs in vgg.videos.values() for v, _ in vs}


@pytest.mark.slow
def test_leakage_free_split_rule_runs_and_refuses_a_leaky_config(workdir):
    """Rule leakage_free_splits on a local folder: the split and its report; a vocabulary covering too many classes
    stops the job with one message."""
    classes = ["Archery", "Bowling", "ApplyEyeMakeup", "BabyCrawling", "Drumming", "Knitting"]
    for c in classes:
        for k in range(4):
            f = workdir / "videos" / c / f"{c}_{k}.mp4"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"")  # scanned, never decoded here
    voc = workdir / "labels.txt"
    voc.write_text("archery\nbowling\n")
    cfg = {"active_datasets": ["loc"],
           "datasets": {"loc": {"source": "local", "feature_sets": ["handcrafted"], "local": {"root": "videos"},
                                "splits": {"mode": "leakage_free", "backbone": "c3d",
                                           "vocabularies": {"sports1m": "labels.txt"}, "overrides": "",
                                           "n_val_unseen": 1, "n_test_unseen": 2, "cover_factors": False}}},
           "models": ["avca"]}
    (workdir / "loc.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/splits/loc/default/leakage_report.md"

    def run():
        return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
                               target, "--configfile", "loc.yaml"], cwd=workdir, capture_output=True, text=True,
                              timeout=300)

    r = run()
    assert r.returncode == 0, r.stderr[-3000:]
    splits = read_splits(workdir / "results/splits/loc/default")
    unseen = set(splits.classes["stage_1_val_unseen"]) | set(splits.classes["stage_2_test_unseen"])
    assert len(unseen) == 3 and not unseen & {"Archery", "Bowling"}
    assert "Sports-1M (487 labels): 2 class(es) covered" in (workdir / target).read_text()

    voc.write_text("archery\nbowling\nknitting\ndrumming\n")  # 2 eligible classes left for 3 unseen
    r = run()
    assert r.returncode != 0
    log = (workdir / "logs/leakage_free_splits/loc.log").read_text()
    assert "leakage-free split for backbone c3d: cannot draw 3 unseen classes from 6 classes (2 eligible)" in log
