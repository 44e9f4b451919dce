"""The preparation commands of ``avzsl`` (:mod:`avzsl.app.cli` joins every package's commands): everything that
turns raw inputs into stored artefacts. Each command is the function of its name (``-`` as ``_``) and runs the rule
of that name, or the rules ``<command>_<qualifier>`` (README, "Commands"); the work itself is done by the
module each function calls."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from avzsl.common import json_arg

TITLE = "preparation (extractors/): raw inputs to stored features, splits and text"


def demo_videos(a):
    from extractors.sources.demo import DemoSpec, generate

    out = Path(a.manifest).parent
    print(generate(out, DemoSpec.from_dict(a.spec), workers=a.workers, progress=not a.quiet, manifest=a.manifest,
                   class_names=a.class_names))


def scan_local_folder(a):
    from extractors.sources.local import scan

    print(scan(a.root, Path(a.manifest).parent, a.descriptions, manifest=a.manifest, class_names=a.class_names))


def extract(a):
    from extractors.extract import ExtractOptions, extract_shard
    from extractors.weights import read_record

    opts = ExtractOptions(decoder=a.decoder, workers=a.workers, batch_windows=a.batch_windows, device=a.device,
                          precision=a.precision, max_seconds=a.max_seconds, progress=not a.quiet,
                          chunk_videos=a.chunk_videos, videos_per_load=a.videos_per_load,
                          chunk_seconds=a.chunk_seconds or None, missing_modality=a.missing_modality,
                          feature_set_name=a.feature_set_name, threads=getattr(a, "threads", 0) or None)
    backbone = a.feature_set if a.feature_set else a.backbone
    weights = [read_record(p) for p in a.weights_record] or None
    stats = extract_shard(a.manifest, a.shard, a.shards, backbone, a.params, a.out, opts, weights=weights)
    print(json.dumps(stats, indent=2))


def download(a):
    from extractors.sources.download import DownloadOptions, download

    opts = DownloadOptions.from_dict(a.options)
    print(json.dumps(download(a.list, a.manifest, a.unavailable, a.videos, opts, a.shard, a.shards)))


def download_manifest(a):
    from extractors.sources.download import coverage, merge_shards, write_coverage

    merge_shards(a.shard_manifest, a.shard_unavailable, a.manifest, a.unavailable, a.class_names, a.descriptions)
    write_coverage(coverage(a.list, a.manifest, a.split_dir or None), a.coverage_tsv, a.coverage_md)
    print(a.manifest)


def ucf_archive(a):
    from extractors.sources.ucf_archive import ucf_from_archive
    from extractors.splits import read_class_list

    classes = list(a.classes)
    if a.classes_file:
        classes += read_class_list(a.classes_file)
    print(json.dumps(ucf_from_archive(a.archive, Path(a.manifest).parent / "videos", a.manifest, a.class_names,
                                      classes or None, a.descriptions)))


def fetch(a):
    from extractors.weights import fetch, sidecar

    if a.record and Path(a.record) != sidecar(a.out):
        raise SystemExit(f"--record must be {sidecar(a.out)} (where the record of --out is written), got {a.record}")
    if bool(a.backbone) != bool(a.param):
        raise SystemExit("--backbone and --param go together (the backbone parameter the file fills)")
    content = None
    if a.backbone:  # what the file holds: Backbone.check_file (torch: only here)
        import extractors.backbones  # noqa: F401 - registers the backbones
        from extractors.backbones.base import backbone_class

        content = functools.partial(backbone_class(a.backbone).check_file, a.param, name=Path(a.out).name)
    what = f"the {a.param} file of backbone {a.backbone!r}" if a.backbone else ""
    print(json.dumps(fetch(a.url, a.out, a.sha256 or None, a.where, retries=a.retries, backoff=a.backoff,
                           limits=_limits(a, deadline=None), content=content, content_name=what)))


def lock(a):
    from avzsl import lockfile

    path = lockfile.lock_path()
    if a.update or a.update_all:
        removed = lockfile.forget(a.update, every=a.update_all)
        print(json.dumps({"lock": str(path), "removed": removed,
                          "note": "the next fetch of each locks the digest it gets"}))
    else:
        print(json.dumps({"lock": str(path), "files": lockfile.read()}, indent=1, sort_keys=True))


def _lock_arg(p: argparse.ArgumentParser, func) -> None:
    """``--lock``: the lock file of the digests fetched files must keep (avzsl.lockfile); ``func`` runs with it."""
    p.add_argument("--lock", default="", help="lock file of the fetched files' sha256 (default: $AVZSL_LOCK, else "
                                              "avzsl.lock.json in the working directory)")

    @functools.wraps(func)
    def run(a):
        from avzsl import lockfile

        lockfile.use(a.lock or None)
        try:
            func(a)
        finally:
            lockfile.use(None)

    p.set_defaults(func=run)


def _limits(a, deadline: float | None):
    """The download limits of a fetching command (avzsl.fetching.Limits); ``deadline``: the default of --deadline."""
    from avzsl.fetching import Limits

    given = deadline if a.deadline is None else (a.deadline or None)
    return Limits(timeout=a.timeout, min_rate=a.min_rate, rate_window=a.rate_window, deadline=given,
                  retry_after_cap=a.retry_after_cap)


def _limit_args(p: argparse.ArgumentParser, deadline: str) -> None:
    p.add_argument("--timeout", type=float, default=60, help="seconds one connect or read may wait")
    p.add_argument("--min-rate", type=float, default=10_000,
                   help="bytes/s averaged over --rate-window below which a download is stopped (0: none)")
    p.add_argument("--rate-window", type=float, default=60, help="seconds the --min-rate is averaged over")
    p.add_argument("--deadline", type=float, default=None,
                   help=f"seconds the whole fetch may take, retries included (0: none; default {deadline})")
    p.add_argument("--retry-after-cap", type=float, default=300,
                   help="the longest Retry-After of a 429/503 answer waited for (longer: stop, run again later)")


def merge_features(a):
    from extractors.feature_store import merge_features

    merge_features(a.shards, a.out, a.failures, a.notes)


def build_splits(a):
    from extractors.sources.demo import read_factors
    from extractors.sources.manifest import read_manifest
    from extractors.splits import SplitRecipe, build_splits, write_splits

    rows = read_manifest(a.manifest)
    recipe = SplitRecipe(**a.recipe)
    factors = read_factors(a.class_names) if a.class_names and a.cover_factors else None
    splits = build_splits([(r.video_id, r.label, r.group) for r in rows], recipe, factors)
    write_splits(a.out, splits)
    print(json.dumps({s: [len(splits.classes[s]), len(splits.videos[s])] for s in splits.classes}, indent=1))


def copy_splits(a):
    from extractors.splits import read_splits, write_splits

    write_splits(a.out, read_splits(a.src, a.all_class))


def fetch_official_splits(a):
    from extractors.sources.official import write_official_split

    print(json.dumps(write_official_split(a.cache, a.source or None, a.dataset, a.variant, a.out, a.class_names,
                                          a.retries, _limits(a, 600), a.backoff)))


def official_download_list(a):
    from extractors.sources.official import write_official_download_list

    annotations = (a.activitynet_annotations or None) if a.dataset == "ActivityNet" else None
    print(json.dumps(write_official_download_list(a.splits, a.dataset, a.variant, annotations, a.out, a.problems)))


def leakage_free_splits(a):
    from extractors.leakage import write_leakage_free_splits
    from extractors.splits import SplitError

    try:
        summary = write_leakage_free_splits(a.manifest, a.class_names, a.recipe, a.backbone, a.vocabularies,
                                            a.overrides, a.keep_sources_apart, a.out, a.report)
    except SplitError as e:  # LeakageError too: what the split could not avoid, named with the backbone
        raise SystemExit(f"leakage-free split for backbone {a.backbone}: {e}") from None
    print(json.dumps(summary))


def split_coverage(a):
    from extractors.sources.download import coverage, write_coverage

    write_coverage(coverage(a.list or None, a.manifest, a.split_dir), a.coverage_tsv, a.coverage_md)
    print(a.coverage_md)


def class_text(a):
    from extractors.class_text import write_class_text

    write_class_text(a.splits, a.class_names, a.encoder, a.params, a.template, a.out, a.report)


def import_released(a):
    from extractors.sources import released_avca as R

    if a.what == "features":
        out = R.import_features(a.root, a.dataset, a.feature_set, a.out, a.layout)
    elif a.what == "splits":
        R.import_splits(a.root, a.dataset, a.feature_set, a.out)
        out = {"splits": str(a.out)}
    else:
        out = R.import_text(a.root, a.dataset, a.feature_set, a.out, a.legacy_reference_order, a.npy, a.layout)
    print(json.dumps(out))


def add_commands(sub: argparse._SubParsersAction) -> list[str]:
    """Register the preparation commands; returns their names (for the grouped help)."""
    before = set(sub.choices)
    p = sub.add_parser("demo-videos", help="generate the offline demo dataset")
    p.add_argument("--manifest", required=True, help="manifest to write (the clips go to videos/ beside it)")
    p.add_argument("--class-names", required=True, help="class-name table to write")
    p.add_argument("--spec", type=json_arg, default={})
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=demo_videos)

    p = sub.add_parser("scan-local-folder", help="manifest for <root>/<class>/<video> files")
    p.add_argument("--root", required=True)
    p.add_argument("--manifest", required=True, help="manifest to write")
    p.add_argument("--class-names", required=True, help="class-name table to write")
    p.add_argument("--descriptions", type=json_arg, default={})
    p.set_defaults(func=scan_local_folder)

    p = sub.add_parser("extract", help="features for one shard of a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--backbone", default="handcrafted")
    p.add_argument("--params", type=json_arg, default={})
    p.add_argument("--out", required=True)
    p.add_argument("--decoder", default="pyav", choices=["pyav", "decord"])
    p.add_argument("--workers", type=lambda v: None if v == "auto" else int(v), default=None,
                   help="decode worker processes, or auto (planned from the global --threads: "
                        "extractors.extract.plan_threads)")
    p.add_argument("--batch-windows", type=lambda v: None if v == "auto" else int(v), default=None,
                   help="windows per backbone call, or auto (extractors.extract.AUTO_BATCH_WINDOWS)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--feature-set", type=json_arg, default=None,
                   help="feature-set entry as JSON ({backbone, params} and/or {audio: {...}, video: {...}}); "
                        "replaces --backbone/--params")
    p.add_argument("--feature-set-name", default="", help="its name, for messages")
    p.add_argument("--weights-record", action="append", default=[],
                   help="sidecar JSON of a fetched weight file, kept as provenance (repeatable)")
    p.add_argument("--chunk-videos", type=int, default=64, help="videos per committed chunk (resume granularity)")
    p.add_argument("--videos-per-load", type=int, default=64,
                   help="finished videos that may wait for a full batch before a padded batch is run")
    p.add_argument("--chunk-seconds", type=float, default=60.0,
                   help="decode and window long videos in pieces of this many seconds (0: whole)")
    p.add_argument("--missing-modality", default="drop", choices=["drop", "keep"],
                   help="a video without an audio or video stream: record it as failed (drop) or keep it marked")
    p.set_defaults(func=extract)

    p = sub.add_parser("fetch", help="download (or copy) a weight file, check and record its sha256")
    p.add_argument("--url", required=True, help="http(s) or file:// URL, or a local path")
    p.add_argument("--sha256", default="", help="expected digest (checked when given)")
    p.add_argument("--out", required=True)
    p.add_argument("--where", default="weights", help="config key for messages")
    p.add_argument("--record", help="where the workflow expects the record (checked: always <out>.json)")
    p.add_argument("--backbone", default="", help="check the file as this backbone's --param file (its keys)")
    p.add_argument("--param", default="", help="the backbone parameter the file fills (weights, pca, ...)")
    p.add_argument("--retries", type=int, default=0, help="further tries after a network error or HTTP 5xx/429")
    p.add_argument("--backoff", type=float, default=5.0, help="seconds before the first retry, doubled each time")
    _limit_args(p, "none")
    _lock_arg(p, fetch)

    p = sub.add_parser("lock", help="list the lock file of fetched files' sha256, or re-lock urls deliberately")
    p.add_argument("--update", nargs="+", default=[], metavar="URL",
                   help="forget these urls' locked digests: the next fetch of each locks the digest it gets")
    p.add_argument("--update-all", action="store_true", help="forget every locked digest")
    _lock_arg(p, lock)

    p = sub.add_parser("download", help="clips of a download list through yt-dlp; manifest and unavailable.tsv")
    p.add_argument("--list", required=True, help="download list csv (video_id,youtube_id,url,start,end,label,group)")
    p.add_argument("--manifest", required=True, help="manifest of the available clips of this shard")
    p.add_argument("--unavailable", required=True, help="unavailable.tsv of this shard")
    p.add_argument("--videos", help="clip folder (default videos/ beside the manifest)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--options", type=json_arg, default={},
                   help="JSON: url_pattern, attempts, backoff, max_backoff, ratelimit, sleep_interval, timeout, "
                        "sections, retry_unavailable, ytdlp_options")
    p.set_defaults(func=download)

    p = sub.add_parser("download-manifest", help="join download shards; coverage report")
    p.add_argument("--list", required=True)
    p.add_argument("--shard-manifest", nargs="+", required=True)
    p.add_argument("--shard-unavailable", nargs="+", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--unavailable", required=True)
    p.add_argument("--class-names", required=True)
    p.add_argument("--descriptions", type=json_arg, default={})
    p.add_argument("--split-dir", default="", help="official split folder (coverage per split when present)")
    p.add_argument("--coverage-tsv", required=True)
    p.add_argument("--coverage-md", required=True)
    p.set_defaults(func=download_manifest)

    p = sub.add_parser("ucf-archive", help="extract UCF101's .rar (unar or bsdtar) and write its manifest")
    p.add_argument("--archive", required=True)
    p.add_argument("--manifest", required=True, help="manifest to write (the clips go to videos/ beside it)")
    p.add_argument("--class-names", required=True)
    p.add_argument("--classes", nargs="*", default=[], help="keep only these classes (default all)")
    p.add_argument("--classes-file", help="keep (also) the classes listed in this file, one a line (all_class.txt)")
    p.add_argument("--descriptions", type=json_arg, default={})
    p.set_defaults(func=ucf_archive)

    p = sub.add_parser("merge-features", help="join shard stores")
    p.add_argument("--out", required=True)
    p.add_argument("--failures", help="also write failed media as TSV here")
    p.add_argument("--notes", help="also write the notes on stored videos (e.g. header fallbacks) as TSV here")
    p.add_argument("shards", nargs="+")
    p.set_defaults(func=merge_features)

    p = sub.add_parser("build-splits", help="two-stage zero-shot splits from a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--class-names")
    p.add_argument("--cover-factors", action="store_true",
                   help="keep every class attribute of unseen classes covered by training classes")
    p.add_argument("--recipe", type=json_arg, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=build_splits)

    p = sub.add_parser("copy-splits", help="validate an official split folder and write it canonically")
    p.add_argument("--src", required=True)
    p.add_argument("--all-class")
    p.add_argument("--out", required=True)
    p.set_defaults(func=copy_splits)

    p = sub.add_parser("fetch-official-splits", help="fetch the official AVCA split files and write one split canonically")
    p.add_argument("--dataset", required=True, choices=["UCF", "ActivityNet", "VGGSound"])
    p.add_argument("--variant", default="main", choices=["main", "cls"])
    p.add_argument("--source", default="", help="http(s) base URL or local folder holding avgzsl_benchmark_datasets/ "
                                                "(default: GitHub at the pinned commit)")
    p.add_argument("--cache", required=True, help="where the verified files are kept (reused when their digests match)")
    p.add_argument("--retries", type=int, default=3, help="further tries after a transient failure")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubled each time")
    p.add_argument("--out", required=True, help="split folder to write")
    p.add_argument("--class-names", help="also write the class-name table (original,manual) of the official files")
    _limit_args(p, "600")
    _lock_arg(p, fetch_official_splits)

    p = sub.add_parser("official-download-list", help="download list of an official split folder")
    p.add_argument("--splits", required=True, help="split folder (canonical, as fetch-official-splits writes it)")
    p.add_argument("--dataset", required=True, choices=["ActivityNet", "VGGSound"])
    p.add_argument("--variant", default="main", choices=["main", "cls"])
    p.add_argument("--activitynet-annotations", default="",
                   help="ActivityNet 1.3 annotation JSON (path or URL) for the segments' time ranges")
    p.add_argument("--out", required=True, help="download list csv to write")
    p.add_argument("--problems", help="videos whose time range could not be resolved, one a line")
    _lock_arg(p, official_download_list)

    p = sub.add_parser("leakage-free-splits", help="splits free of a backbone's pre-training classes, and a report")
    p.add_argument("--manifest", required=True)
    p.add_argument("--class-names", help="original,manual csv (the manual name is matched too)")
    p.add_argument("--recipe", type=json_arg, required=True, help="SplitRecipe fields as JSON")
    p.add_argument("--backbone", required=True, help="backbone or vocabulary name (extractors.leakage)")
    p.add_argument("--vocabularies", type=json_arg, default={},
                   help="JSON {vocabulary: local file or URL} instead of the original sources")
    p.add_argument("--overrides", default="", help="override table (class,vocabulary,decision)")
    p.add_argument("--keep-sources-apart", action="store_true",
                   help="no source recording on both sides of training and seen-test")
    p.add_argument("--out", required=True, help="split folder to write")
    p.add_argument("--report", required=True, help="leakage report (markdown) to write")
    _lock_arg(p, leakage_free_splits)

    p = sub.add_parser("split-coverage", help="available / listed videos per split and class")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split-dir", required=True)
    p.add_argument("--list", default="", help="download list (default: the split's videos)")
    p.add_argument("--coverage-tsv", required=True)
    p.add_argument("--coverage-md", required=True)
    p.set_defaults(func=split_coverage)

    p = sub.add_parser("class-text", help="class text embeddings")
    p.add_argument("--splits", required=True, help="split folder (for the class list)")
    p.add_argument("--class-names", required=True, help="original,manual csv")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--params", type=json_arg, default={})
    p.add_argument("--template", default="{}")
    p.add_argument("--out", required=True)
    p.add_argument("--report", help="JSON report to write (per class: text, out-of-vocabulary words)")
    _lock_arg(p, class_text)

    p = sub.add_parser("import-released", help="read a released AVCA (h5 means) or TCaF (pickled sequences) feature tree")
    p.add_argument("what", choices=["features", "splits", "text"])
    p.add_argument("--layout", default="avca", choices=["avca", "tcaf"])
    p.add_argument("--root", required=True)
    p.add_argument("--dataset", required=True, choices=["UCF", "ActivityNet", "VGGSound"])
    p.add_argument("--feature-set", required=True, choices=["main", "cls"])
    p.add_argument("--legacy-reference-order", action="store_true")
    p.add_argument("--npy", help="text embedding .npy (default: the tree's features/<set>/text/ file)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=import_released)
    return [name for name in sub.choices if name not in before]
