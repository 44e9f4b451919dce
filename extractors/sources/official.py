"""The official AV-GZSL class splits: fetched at a pinned commit, checked, and turned into download lists.

The AVCA-GZSL repository holds the benchmark's ``class-split`` folders (the same files are in TCaF and ClipClap).
``fetch_official`` brings them to a local folder, either from GitHub (``raw.githubusercontent.com`` at
``AVCA_COMMIT``) or from a local copy (offline). Every file is checked against the sha256 in
``avca_official_files.csv`` (checked in beside this module: path in the repository, sha256, size) and written
atomically, so a folder either holds verified files or nothing. Layout of the result, as in the repository::

    <dest>/avgzsl_benchmark_datasets/<UCF|ActivityNet|VGGSound>/class-split/
        all_class.txt, <ds>_w2v_class_names.csv, main_split/stage_*.{txt,csv}, cls_split/stage_*.{txt,csv}

``official_splits`` reads one split; ``download_list`` lists every video of every stage of both splits with what is
needed to obtain it: the YouTube id and time range (VGGSound ``<id>_<start>`` is the 10-s clip from ``start``;
ActivityNet ``<id>_<k>`` is the k-th annotated segment of the video in the ActivityNet 1.3 annotation file), or the
UCF101 file name and its group ``v_<Class>_gXX`` (clips of one source recording).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avzsl import fetching, lockfile
from avzsl.common import atomic_path, file_digest
from extractors.sources.download import DownloadRow, bad_character
from extractors.sources.manifest import ManifestRow
from extractors.splits import STAGES, Splits, read_splits

AVCA_REPO = "ExplainableML/AVCA-GZSL"
AVCA_COMMIT = "2711aeb5d7257ece4c5464fa46d7849a4edf6470"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
BENCHMARK = "avgzsl_benchmark_datasets"
DATASETS = ("UCF", "ActivityNet", "VGGSound")
VARIANTS = {"main": "main_split", "cls": "cls_split"}
FILE_TABLE = Path(__file__).with_name("avca_official_files.csv")
VGGSOUND_CLIP_SECONDS = 10
# ActivityNet 1.3 annotations (train/val segments with labels), as the ActivityNet challenge repository ships them
# at a pinned commit of that repository; the file's git blob id pins its content too (a local copy can be checked the
# same way: `git hash-object activity_net.v1-3.min.json`)
ACTIVITYNET_ANNOTATIONS_URL = ("https://raw.githubusercontent.com/activitynet/ActivityNet/"
                               "82304fa9f4a7219421df13dae6347a445c4cf5bc/Evaluation/data/activity_net.v1-3.min.json")
ACTIVITYNET_ANNOTATIONS_BLOB = "b0a5a827f7931156dacf1cfe223aa535e8fe673c"

log = logging.getLogger("avzsl.official")


class OfficialSplitError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ fetching
@dataclass(frozen=True)
class OfficialFile:
    path: str  # inside the repository, e.g. avgzsl_benchmark_datasets/UCF/class-split/all_class.txt
    sha256: str
    size: int

    @property
    def dataset(self) -> str:
        return self.path.split("/")[1]


def official_files(datasets: Iterable[str] = DATASETS) -> list[OfficialFile]:
    wanted = set(datasets)
    unknown = wanted - set(DATASETS)
    if unknown:
        raise OfficialSplitError(f"unknown dataset(s) {sorted(unknown)}; the official ones are {list(DATASETS)}")
    with open(FILE_TABLE, newline="") as f:
        rows = [OfficialFile(r["path"], r["sha256"], int(r["size"])) for r in csv.DictReader(f)]
    return [r for r in rows if r.dataset in wanted]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _local_root(source: str | Path) -> Path | None:
    """A local source folder (plain path or file:// URL), or None for http(s)."""
    root = fetching.local_path(source)
    # accept the folder holding avgzsl_benchmark_datasets/ or that folder itself
    return root.parent if root is not None and root.name == BENCHMARK else root


def http_get(url: str, timeout: float = 60, retries: int = 3, opener: Callable | None = None,
             limits: fetching.Limits | None = None, backoff: float = 1.0) -> bytes:
    """GET ``url`` (avzsl.fetching: retries with back-off on network errors, 5xx/429 answers and short bodies)."""
    try:
        return fetching.http_get(url, timeout=timeout, retries=retries, backoff=backoff, opener=opener,
                                 limits=limits)
    except fetching.FetchError as e:
        raise OfficialSplitError(str(e)) from None


def fetch_official(dest: str | Path, source: str | Path | None = None, datasets: Iterable[str] = DATASETS,
                   commit: str = AVCA_COMMIT, retries: int = 3, timeout: float = 60,
                   opener: Callable | None = None, limits: fetching.Limits | None = None,
                   backoff: float = 1.0) -> Path:
    """Bring the official split files to ``dest`` and return ``dest/avgzsl_benchmark_datasets``.

    ``source``: None (GitHub at ``commit``), an http(s) base URL (``<base>/<path>``), or a local folder holding
    ``avgzsl_benchmark_datasets/``. Files already present with the right sha256 are kept; any file whose sha256
    differs from the table is refused. A commit other than the pinned one is allowed only with the digests of the
    pinned one, so in practice it must hold the same files.
    """
    dest = Path(dest)
    local = _local_root(source) if source is not None else None
    for item in official_files(datasets):
        out = dest / item.path
        if out.is_file() and out.stat().st_size == item.size and file_digest(out) == item.sha256:
            continue
        if local is not None:
            src = local / item.path
            if not src.is_file():
                raise OfficialSplitError(f"official split file missing from the local source: {src}")
            data = src.read_bytes()
            where = str(src)
        else:
            if source is None:
                where = RAW_URL.format(repo=AVCA_REPO, commit=commit, path=item.path)
            else:
                where = str(source).rstrip("/") + "/" + item.path
            data = http_get(where, timeout=timeout, retries=retries, opener=opener, limits=limits, backoff=backoff)
        digest = _sha256(data)
        if digest != item.sha256:
            raise OfficialSplitError(f"{where}: sha256 {digest} differs from the pinned {item.sha256} "
                                     f"({FILE_TABLE.name}); the file was not written")
        if local is None:  # the pinned digest wins: the lock file is made to agree with it
            lockfile.check(where, digest, len(data), "official split file", pinned=True)
        with atomic_path(out, suffix=out.suffix) as tmp:
            tmp.write_bytes(data)
    return dest / BENCHMARK


def class_split_dir(root: str | Path, dataset: str) -> Path:
    root = Path(root)
    if (root / BENCHMARK).is_dir():
        root = root / BENCHMARK
    return root / dataset / "class-split"


def official_splits(root: str | Path, dataset: str, variant: str = "main") -> Splits:
    """One official split (``main`` or ``cls``) read from a fetched (or local) benchmark folder."""
    if variant not in VARIANTS:
        raise OfficialSplitError(f"split variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    cs = class_split_dir(root, dataset)
    return read_splits(cs / VARIANTS[variant], cs / "all_class.txt")


def official_class_names(root: str | Path, dataset: str) -> list[dict[str, str]]:
    """The rows (``original``, ``manual``, extra columns) of the dataset's ``<ds>_w2v_class_names.csv``: the text the
    reference embedded for each class."""
    cs = class_split_dir(root, dataset)
    found = sorted(cs.glob("*_class_names.csv"))
    if not found:
        raise OfficialSplitError(f"{cs}: no *_class_names.csv")
    with open(found[0], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"original", "manual"} <= set(rows[0]):
        raise OfficialSplitError(f"{found[0]}: expected the columns original and manual")
    return rows


# ------------------------------------------------------------------------------------------------ download list


@dataclass
class DownloadItem:
    video_id: str
    dataset: str
    label: str
    youtube_id: str = ""
    start: float | None = None  # seconds in the YouTube video; None when unknown
    end: float | None = None
    group: str = ""  # source recording: clips of one group must stay on one side of a split
    media: str = ""  # where extraction expects the file, relative to the media root
    stages: dict[str, list[str]] = field(default_factory=dict)  # variant -> stages listing the video


def parse_vggsound_id(video_id: str) -> tuple[str, int]:
    """``<youtube id>_<start, 6 digits>`` -> (youtube id, start seconds); YouTube ids may contain ``_``."""
    m = re.fullmatch(r"(.+)_(\d+)", video_id)
    if not m:
        raise OfficialSplitError(f"VGGSound video id {video_id!r} is not '<youtube id>_<start seconds>'")
    return m.group(1), int(m.group(2))


def parse_activitynet_id(video_id: str) -> tuple[str, int]:
    """``<youtube id>_<k>`` -> (youtube id, k = index of the annotated segment)."""
    m = re.fullmatch(r"(.+)_(\d+)", video_id)
    if not m:
        raise OfficialSplitError(f"ActivityNet video id {video_id!r} is not '<youtube id>_<segment index>'")
    return m.group(1), int(m.group(2))


def parse_ucf_id(video_id: str) -> tuple[str, str]:
    """``v_<Class>_gXX_cYY`` -> (class as spelled in the file name, group ``v_<Class>_gXX``)."""
    m = re.fullmatch(r"(v_([A-Za-z0-9]+)_g\d+)_c\d+", video_id)
    if not m:
        raise OfficialSplitError(f"UCF101 video id {video_id!r} is not 'v_<Class>_gXX_cYY'")
    return m.group(2), m.group(1)


def git_blob_id(data: bytes) -> str:
    """The id git gives a file with this content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def load_activitynet_annotations(source: str | Path, timeout: float = 60, retries: int = 3,
                                 opener: Callable | None = None, git_blob: str | None = None) -> dict:
    """The ActivityNet 1.3 annotation JSON (``{"database": {<youtube id>: {"annotations": [{"segment": [s, e],
    "label": ...}, ...], ...}}}``) from a local path, file:// or http(s) URL; returns the ``database`` dict.

    ``git_blob``: the content's expected git blob id; by default the pinned one when ``source`` is the pinned URL."""
    if git_blob is None and str(source) == ACTIVITYNET_ANNOTATIONS_URL:
        git_blob = ACTIVITYNET_ANNOTATIONS_BLOB
    try:
        raw = fetching.read_bytes(source, "ActivityNet annotation file", timeout=timeout, retries=retries,
                                  opener=opener)
    except fetching.FetchError as e:
        raise OfficialSplitError(str(e)) from None
    if git_blob and git_blob_id(raw) != git_blob:
        raise OfficialSplitError(f"{source}: content is not the pinned ActivityNet annotation file (git blob "
                                 f"{git_blob_id(raw)}, expected {git_blob})")
    try:  # a url: verified against the lock file, locked on first use (a pinned blob id wins)
        lockfile.check_data(str(source), raw, "ActivityNet annotation file", pinned=bool(git_blob))
    except lockfile.LockError as e:
        raise OfficialSplitError(str(e)) from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise OfficialSplitError(f"{source}: not an ActivityNet annotation file ({e})") from None
    db = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise OfficialSplitError(f"{source}: not an ActivityNet annotation file (no 'database' mapping)")
    return db


def _norm_label(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def download_list(root: str | Path, dataset: str, activitynet_annotations: dict | str | Path | None = None,
                  variants: Sequence[str] = ("main", "cls")) -> tuple[list[DownloadItem], list[str]]:
    """Every video of every stage of the official splits, once, with how to get it.

    Returns ``(items, problems)``; ``problems`` lists videos whose time range could not be resolved (ActivityNet
    ids absent from the annotations, segment indices out of range, labels that disagree) - they are still listed,
    with an empty range. For ActivityNet without annotations every range is empty and one problem says so.
    """
    if dataset not in DATASETS:
        raise OfficialSplitError(f"unknown dataset {dataset!r}; the official ones are {list(DATASETS)}")
    return download_items({v: official_splits(root, dataset, v) for v in variants}, dataset,
                          activitynet_annotations)


def download_items(splits_by_variant: Mapping[str, Splits], dataset: str,
                   activitynet_annotations: dict | str | Path | None = None) -> tuple[list[DownloadItem], list[str]]:
    """``download_list`` for splits already read (e.g. the canonical copy the workflow wrote): ``{variant: Splits}``."""
    if dataset not in DATASETS:
        raise OfficialSplitError(f"unknown dataset {dataset!r}; the official ones are {list(DATASETS)}")
    items: dict[str, DownloadItem] = {}
    for variant, splits in splits_by_variant.items():
        for stage in STAGES:
            for vid, label in splits.videos[stage]:
                item = items.get(vid)
                if item is None:
                    item = items[vid] = DownloadItem(vid, dataset, label)
                elif item.label != label:
                    raise OfficialSplitError(f"{dataset}: video {vid} is labelled {item.label!r} and {label!r}")
                item.stages.setdefault(variant, []).append(stage)
    problems: list[str] = []
    if dataset == "VGGSound":
        for it in items.values():
            it.youtube_id, start = parse_vggsound_id(it.video_id)
            it.start, it.end = float(start), float(start + VGGSOUND_CLIP_SECONDS)
            it.group, it.media = it.youtube_id, f"video/{it.video_id}.mp4"
    elif dataset == "UCF":
        for it in items.values():
            spelled, it.group = parse_ucf_id(it.video_id)
            it.media = f"UCF-101/{spelled}/{it.video_id}.avi"
    else:
        db = activitynet_annotations
        if db is not None and not isinstance(db, dict):
            db = load_activitynet_annotations(db)
        if db is None:
            problems.append("ActivityNet: no annotation file given, so no time ranges")
        for it in items.values():
            it.youtube_id, k = parse_activitynet_id(it.video_id)
            it.group, it.media = it.youtube_id, f"video/{it.label}/{it.video_id}.mp4"
            if db is None:
                continue
            entry = db.get(it.youtube_id) or db.get("v_" + it.youtube_id)
            if entry is None:
                problems.append(f"{it.video_id}: video {it.youtube_id} is not in the annotations")
                continue
            segments = entry.get("annotations", [])
            if k >= len(segments):
                problems.append(f"{it.video_id}: segment {k} requested, the annotations list {len(segments)}")
                continue
            seg = segments[k]
            if _norm_label(seg.get("label", "")) != _norm_label(it.label):
                problems.append(f"{it.video_id}: segment {k} is labelled {seg.get('label')!r}, the split says "
                                f"{it.label!r}")
                continue
            try:
                start, end = float(seg["segment"][0]), float(seg["segment"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                start = end = math.nan
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
                problems.append(f"{it.video_id}: segment {k} has no valid time range ({seg.get('segment')!r}); "
                                "the whole video is listed")
                continue
            it.start, it.end = start, end
    return sorted(items.values(), key=lambda i: (i.label, i.video_id)), problems


def download_rows(items: Sequence[DownloadItem]) -> list[DownloadRow]:
    """The listed videos in the download list format (``extractors.sources.download`` owns the file): what the
    ``download`` source fetches. UCF's videos have no YouTube id: they come from the UCF101 archive."""
    for it in items:
        bad = bad_character(it.video_id) or bad_character(it.youtube_id) or bad_character(it.label)
        if bad:
            raise OfficialSplitError(f"{it.dataset}: video {it.video_id[:60]!r} ({it.label[:40]!r}) contains {bad}; "
                                     "the split files are damaged: fetch them again")
    missing = [it.video_id for it in items if not it.youtube_id]
    if missing:
        raise OfficialSplitError(f"{len(missing)} videos have no YouTube id (e.g. {missing[0]}): UCF101's come from its "
                                 "archive (source ucf_archive), not from a download list")
    return [DownloadRow(it.video_id, it.label, youtube_id=it.youtube_id, start=it.start, end=it.end, group=it.group)
            for it in items]


def manifest_rows(items: Sequence[DownloadItem]) -> list[ManifestRow]:
    """The extraction manifest for the listed videos (paths relative to the media root)."""
    return [ManifestRow(it.video_id, it.media, it.label, it.group) for it in items]


def write_official_split(cache: str | Path, source: str | None, dataset: str, variant: str, out: str | Path,
                         class_names: str | Path | None, retries: int, limits, backoff: float = 1.0) -> dict:
    """Fetch the official files (checked) into ``cache``, write one split canonically to ``out`` and, when asked,
    the class-name table the reference embedded; returns what was written, in numbers."""
    from extractors.sources.manifest import write_class_names
    from extractors.splits import write_splits

    root = fetch_official(cache, source, [dataset], retries=retries, limits=limits, backoff=backoff)
    splits = official_splits(root, dataset, variant)
    write_splits(out, splits)
    if class_names:
        rows = official_class_names(root, dataset)
        extra = [k for k in rows[0] if k not in ("original", "manual")]
        write_class_names(class_names, rows, extra)
    return {"dataset": dataset, "variant": variant, "classes": len(splits.all_classes),
            "videos": {s: len(v) for s, v in splits.videos.items()}}


def write_official_download_list(split_dir: str | Path, dataset: str, variant: str, annotations: str | None,
                                 out: str | Path, problems_path: str | Path | None = None) -> dict:
    """The download list of an official split folder; the videos without a time range (listed whole) go to
    ``problems_path`` and are logged."""
    from avzsl.common import write_text_atomic
    from extractors.sources.download import write_download_list

    items, problems = download_items({variant: read_splits(split_dir)}, dataset, annotations)
    write_download_list(out, download_rows(items))
    if problems_path:
        write_text_atomic(problems_path, "".join(f"{p}\n" for p in problems))
    if problems:
        logging.getLogger("avzsl").warning("%d video(s) without a time range (whole video listed), e.g. %s",
                                           len(problems), problems[0])
    return {"videos": len(items), "unresolved": len(problems)}
