"""The preparation commands of ``avzsl``: everything that turns raw inputs into stored artefacts.

    demo-data       generate the offline demo dataset (videos, manifest, class names)
    scan-folder     manifest for a local folder of <class>/<video> files
    extract         per-window features for one shard of a manifest
    fetch-weights   download a weight file into place, check and record its sha256
    lock            list the lock file's digests; --update <url> / --update-all re-lock deliberately
    download        clips of a download list (yt-dlp), their manifest and the unavailable ones
    download-merge  join download shards; coverage per split and class
    ucf-archive     extract UCF101 from its .rar and write its manifest
    merge-features  join shard stores into one feature store
    build-splits    two-stage zero-shot splits from a manifest
    copy-splits     check an official split folder and write it in canonical form
    official-splits fetch the official AVCA split files (pinned commit, checksums) and write one split canonically
    official-download-list
                    the download list of an official split (YouTube ids, time ranges)
    leakage-free-splits
                    splits whose unseen classes a backbone's pre-training vocabularies do not cover, and a report
    coverage        available / listed videos per split and class, from a manifest and a split folder
    text            class text embeddings
    import-avca     features, splits or text from a released AVCA feature tree
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from avzsl.common import json_arg

TITLE = "preparation (extractors/): raw inputs to stored features, splits and text"


def cmd_demo_data(a):
    from extractors.sources.demo import DemoSpec, generate

    out = Path(a.manifest).parent
    print(generate(out, DemoSpec.from_dict(a.spec), workers=a.workers, progress=not a.quiet, manifest=a.manifest,
                   class_names=a.class_names))


def cmd_scan_folder(a):
    from extractors.sources.local import scan

    print(scan(a.root, Path(a.manifest).parent, a.descriptions, manifest=a.manifest, class_names=a.class_names))


def cmd_extract(a):
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


def cmd_download(a):
    from extractors.sources.download import DownloadOptions, download

    opts = DownloadOptions.from_dict(a.options)
    print(json.dumps(download(a.list, a.manifest, a.unavailable, a.videos, opts, a.shard, a.shards)))


def cmd_download_merge(a):
    from extractors.sources.download import coverage, merge_shards, write_coverage

    merge_shards(a.shard_manifest, a.shard_unavailable, a.manifest, a.unavailable, a.class_names, a.descriptions)
    write_coverage(coverage(a.list, a.manifest, a.split_dir or None), a.coverage_tsv, a.coverage_md)
    print(a.manifest)


def cmd_ucf_archive(a):
    from extractors.sources.ucf_archive import ucf_from_archive

    classes = list(a.classes)
    if a.classes_file:
        classes += [c.strip() for c in Path(a.classes_file).read_text().splitlines() if c.strip()]
    print(json.dumps(ucf_from_archive(a.archive, Path(a.manifest).parent / "videos", a.manifest, a.class_names,
                                      classes or None, a.descriptions)))


def cmd_fetch_weights(a):
    from extractors.weights import fetch, sidecar

    if a.record and Path(a.record) != sidecar(a.out):
        raise SystemExit(f"--record must be {sidecar(a.out)} (where the record of --out is written), got {a.record}")
    print(json.dumps(fetch(a.url, a.out, a.sha256 or None, a.where, retries=a.retries, backoff=a.backoff,
                           limits=_limits(a, deadline=None))))


def cmd_lock(a):
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


def cmd_merge_features(a):
    from extractors.feature_store import FeatureStore, merge_stores, write_failures_tsv

    n = merge_stores(a.shards, a.out)
    store = FeatureStore(a.out)
    failures, notes = store.failures(), store.notes()
    logging.getLogger("avzsl").info("merged %d shards: %d videos, %d failed media, %d notes", len(a.shards), n,
                                    len(failures), len(notes))
    if a.failures:
        write_failures_tsv(a.failures, failures)
    if a.notes:
        write_failures_tsv(a.notes, notes, header="note")


def cmd_build_splits(a):
    from extractors.sources.demo import read_factors
    from extractors.sources.manifest import read_manifest
    from extractors.splits import SplitRecipe, build_splits, write_splits

    rows = read_manifest(a.manifest)
    recipe = SplitRecipe(**a.recipe)
    factors = read_factors(a.class_names) if a.class_names and a.cover_factors else None
    splits = build_splits([(r.video_id, r.label, r.group) for r in rows], recipe, factors)
    write_splits(a.out, splits)
    print(json.dumps({s: [len(splits.classes[s]), len(splits.videos[s])] for s in splits.classes}, indent=1))


def cmd_copy_splits(a):
    from extractors.splits import read_splits, write_splits

    write_splits(a.out, read_splits(a.src, a.all_class))


def cmd_official_splits(a):
    from extractors.sources.manifest import write_class_names
    from extractors.sources.official import fetch_official, official_class_names, official_splits
    from extractors.splits import write_splits

    root = fetch_official(a.cache, a.source or None, [a.dataset], retries=a.retries, limits=_limits(a, 600))
    splits = official_splits(root, a.dataset, a.variant)
    write_splits(a.out, splits)
    if a.class_names:
        rows = official_class_names(root, a.dataset)
        extra = [k for k in rows[0] if k not in ("original", "manual")]
        write_class_names(a.class_names, rows, extra)
    print(json.dumps({"dataset": a.dataset, "variant": a.variant, "classes": len(splits.all_classes),
                      "videos": {s: len(v) for s, v in splits.videos.items()}}))


def cmd_official_download_list(a):
    from extractors.sources.download import write_download_list
    from extractors.sources.official import download_items, download_rows
    from extractors.splits import read_splits

    annotations = None
    if a.dataset == "ActivityNet":
        annotations = a.activitynet_annotations or None
    items, problems = download_items({a.variant: read_splits(a.splits)}, a.dataset, annotations)
    write_download_list(a.out, download_rows(items))
    if a.problems:
        from avzsl.common import write_text_atomic

        write_text_atomic(a.problems, "".join(f"{p}\n" for p in problems))
    if problems:
        logging.getLogger("avzsl").warning("%d video(s) without a time range (whole video listed), e.g. %s",
                                           len(problems), problems[0])
    print(json.dumps({"videos": len(items), "unresolved": len(problems)}))


def cmd_leakage_free_splits(a):
    from extractors.leakage import (
        LeakageError,
        backbone_matches,
        check_leakage,
        keep_groups_apart,
        leakage_free_splits,
        read_overrides,
        write_leakage_report,
    )
    from extractors.sources.manifest import read_class_names, read_manifest
    from extractors.splits import SplitError, SplitRecipe, write_splits

    rows = read_manifest(a.manifest)
    groups = {r.video_id: r.group or r.video_id for r in rows}
    names = read_class_names(a.class_names) if a.class_names else {}
    recipe = SplitRecipe(**{**a.recipe, "seen_only": tuple(a.recipe.get("seen_only", ()))})
    try:
        matches = backbone_matches(sorted({r.label for r in rows}), a.backbone, a.vocabularies, names,
                                   read_overrides(a.overrides) if a.overrides else None)
        covered = {v: set(m) for v, m in matches.items()}
        splits = leakage_free_splits([(r.video_id, r.label, r.group) for r in rows], recipe, matches)
        if a.keep_sources_apart:
            splits, _ = keep_groups_apart(splits, groups)
        report = check_leakage(splits, covered, groups, keep_groups_apart=a.keep_sources_apart)
    except (LeakageError, SplitError) as e:
        raise SystemExit(f"leakage-free split for backbone {a.backbone}: {e}") from None
    write_splits(a.out, splits)
    write_leakage_report(a.report, a.backbone, matches, splits, report, a.keep_sources_apart)
    print(json.dumps({"backbone": a.backbone, "covered": {v: len(m) for v, m in matches.items()},
                      "sharing": report.summary()}))


def cmd_coverage(a):
    from extractors.sources.download import coverage, write_coverage

    write_coverage(coverage(a.list or None, a.manifest, a.split_dir), a.coverage_tsv, a.coverage_md)
    print(a.coverage_md)


def cmd_text(a):
    from avzsl.common import write_json_atomic
    from extractors.sources.manifest import read_class_names
    from extractors.splits import read_splits
    from extractors.text_encoders import check_params, encode_with_report
    from extractors.text_encoders.word_vectors import NoKnownWord
    from extractors.text_store import write_text_store

    classes = read_splits(a.splits).all_classes
    manual = read_class_names(a.class_names)
    missing = [c for c in classes if c not in manual]
    if missing:
        raise ValueError(f"{a.class_names} has no text for classes {missing[:5]}")
    texts = [a.template.format(manual[c]) for c in classes]
    params = check_params(a.encoder, a.params)
    try:
        vectors, report = encode_with_report(texts, a.encoder, params)
    except NoKnownWord as e:
        raise ValueError(f"class {classes[e.index]!r}: {e}") from None
    write_text_store(a.out, classes, texts, vectors, a.encoder, {**params, "template": a.template})
    if a.report:
        write_json_atomic(a.report, text_report(classes, texts, a.encoder, params, vectors, report))


def text_report(classes, texts, encoder, params, vectors, report) -> dict:
    """What the text command records beside the store: per class its text and, for word-vector encoders, the
    words left out as out of vocabulary (fastText: whether the whole text was a vocabulary entry)."""
    per_class = {}
    for i, (c, t) in enumerate(zip(classes, texts)):
        entry = {"text": t}
        if "oov" in report:
            entry["oov"] = report["oov"][i]
        if "in_vocabulary" in report:
            entry["in_vocabulary"] = bool(report["in_vocabulary"][i])
        per_class[c] = entry
    summary = {"encoder": encoder, "params": params, "dim": int(vectors.shape[1]), "classes": len(classes)}
    if "oov" in report:
        summary["classes_with_oov"] = sum(bool(x) for x in report["oov"])
    summary.update({k: v for k, v in report.items() if k not in ("oov", "in_vocabulary")})
    return {**summary, "per_class": per_class}


def cmd_import_avca(a):
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
    p = sub.add_parser("demo-data", help="generate the offline demo dataset")
    p.add_argument("--manifest", required=True, help="manifest to write (the clips go to videos/ beside it)")
    p.add_argument("--class-names", required=True, help="class-name table to write")
    p.add_argument("--spec", type=json_arg, default={})
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("scan-folder", help="manifest for <root>/<class>/<video> files")
    p.add_argument("--root", required=True)
    p.add_argument("--manifest", required=True, help="manifest to write")
    p.add_argument("--class-names", required=True, help="class-name table to write")
    p.add_argument("--descriptions", type=json_arg, default={})
    p.set_defaults(func=cmd_scan_folder)

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
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("fetch-weights", help="download (or copy) a weight file, check and record its sha256")
    p.add_argument("--url", required=True, help="http(s) or file:// URL, or a local path")
    p.add_argument("--sha256", default="", help="expected digest (checked when given)")
    p.add_argument("--out", required=True)
    p.add_argument("--where", default="weights", help="config key for messages")
    p.add_argument("--record", help="where the workflow expects the record (checked: always <out>.json)")
    p.add_argument("--retries", type=int, default=0, help="further tries after a network error or HTTP 5xx/429")
    p.add_argument("--backoff", type=float, default=5.0, help="seconds before the first retry, doubled each time")
    _limit_args(p, "none")
    _lock_arg(p, cmd_fetch_weights)

    p = sub.add_parser("lock", help="list the lock file of fetched files' sha256, or re-lock urls deliberately")
    p.add_argument("--update", nargs="+", default=[], metavar="URL",
                   help="forget these urls' locked digests: the next fetch of each locks the digest it gets")
    p.add_argument("--update-all", action="store_true", help="forget every locked digest")
    _lock_arg(p, cmd_lock)

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
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("download-merge", help="join download shards; coverage report")
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
    p.set_defaults(func=cmd_download_merge)

    p = sub.add_parser("ucf-archive", help="extract UCF101's .rar (unar or bsdtar) and write its manifest")
    p.add_argument("--archive", required=True)
    p.add_argument("--manifest", required=True, help="manifest to write (the clips go to videos/ beside it)")
    p.add_argument("--class-names", required=True)
    p.add_argument("--classes", nargs="*", default=[], help="keep only these classes (default all)")
    p.add_argument("--classes-file", help="keep (also) the classes listed in this file, one a line (all_class.txt)")
    p.add_argument("--descriptions", type=json_arg, default={})
    p.set_defaults(func=cmd_ucf_archive)

    p = sub.add_parser("merge-features", help="join shard stores")
    p.add_argument("--out", required=True)
    p.add_argument("--failures", help="also write failed media as TSV here")
    p.add_argument("--notes", help="also write the notes on stored videos (e.g. header fallbacks) as TSV here")
    p.add_argument("shards", nargs="+")
    p.set_defaults(func=cmd_merge_features)

    p = sub.add_parser("build-splits", help="two-stage zero-shot splits from a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--class-names")
    p.add_argument("--cover-factors", action="store_true",
                   help="keep every class attribute of unseen classes covered by training classes")
    p.add_argument("--recipe", type=json_arg, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_build_splits)

    p = sub.add_parser("copy-splits", help="validate an official split folder and write it canonically")
    p.add_argument("--src", required=True)
    p.add_argument("--all-class")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_copy_splits)

    p = sub.add_parser("official-splits", help="fetch the official AVCA split files and write one split canonically")
    p.add_argument("--dataset", required=True, choices=["UCF", "ActivityNet", "VGGSound"])
    p.add_argument("--variant", default="main", choices=["main", "cls"])
    p.add_argument("--source", default="", help="http(s) base URL or local folder holding avgzsl_benchmark_datasets/ "
                                                "(default: GitHub at the pinned commit)")
    p.add_argument("--cache", required=True, help="where the verified files are kept (reused when their digests match)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--out", required=True, help="split folder to write")
    p.add_argument("--class-names", help="also write the class-name table (original,manual) of the official files")
    _limit_args(p, "600")
    _lock_arg(p, cmd_official_splits)

    p = sub.add_parser("official-download-list", help="download list of an official split folder")
    p.add_argument("--splits", required=True, help="split folder (canonical, as official-splits writes it)")
    p.add_argument("--dataset", required=True, choices=["ActivityNet", "VGGSound"])
    p.add_argument("--variant", default="main", choices=["main", "cls"])
    p.add_argument("--activitynet-annotations", default="",
                   help="ActivityNet 1.3 annotation JSON (path or URL) for the segments' time ranges")
    p.add_argument("--out", required=True, help="download list csv to write")
    p.add_argument("--problems", help="videos whose time range could not be resolved, one a line")
    _lock_arg(p, cmd_official_download_list)

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
    _lock_arg(p, cmd_leakage_free_splits)

    p = sub.add_parser("coverage", help="available / listed videos per split and class")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split-dir", required=True)
    p.add_argument("--list", default="", help="download list (default: the split's videos)")
    p.add_argument("--coverage-tsv", required=True)
    p.add_argument("--coverage-md", required=True)
    p.set_defaults(func=cmd_coverage)

    p = sub.add_parser("text", help="class text embeddings")
    p.add_argument("--splits", required=True, help="split folder (for the class list)")
    p.add_argument("--class-names", required=True, help="original,manual csv")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--params", type=json_arg, default={})
    p.add_argument("--template", default="{}")
    p.add_argument("--out", required=True)
    p.add_argument("--report", help="JSON report to write (per class: text, out-of-vocabulary words)")
    _lock_arg(p, cmd_text)

    p = sub.add_parser("import-avca", help="read a released AVCA (h5 means) or TCaF (pickled sequences) feature tree")
    p.add_argument("what", choices=["features", "splits", "text"])
    p.add_argument("--layout", default="avca", choices=["avca", "tcaf"])
    p.add_argument("--root", required=True)
    p.add_argument("--dataset", required=True, choices=["UCF", "ActivityNet", "VGGSound"])
    p.add_argument("--feature-set", required=True, choices=["main", "cls"])
    p.add_argument("--legacy-reference-order", action="store_true")
    p.add_argument("--npy", help="text embedding .npy (default: the tree's features/<set>/text/ file)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_import_avca)
    return ["demo-data", "scan-folder", "extract", "fetch-weights", "lock", "download", "download-merge", "ucf-archive",
            "merge-features", "build-splits", "copy-splits", "official-splits", "official-download-list",
            "leakage-free-splits", "coverage", "text", "import-avca"]
