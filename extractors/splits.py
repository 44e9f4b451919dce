"""Zero-shot split files: the one module that reads, checks, builds and writes them.

The format is the AVCA benchmark's ``class-split`` layout, so official splits and new ones are interchangeable::

    all_class.txt                   every class of the source dataset; class id = index in the sorted list
    stage_1_train.{txt,csv}         stage 1: train on these ...
    stage_1_val_seen.{txt,csv}      ... select the epoch and the calibration on val_seen + val_unseen
    stage_1_val_unseen.{txt,csv}
    stage_2_train.{txt,csv}         stage 2: retrain on train + val ...
    stage_2_test_seen.{txt,csv}     ... and test on test_seen + test_unseen
    stage_2_test_unseen.{txt,csv}

``.txt``: one class name per line. ``.csv``: one video per row with at least ``filename`` and ``label`` (the UCF,
ActivityNet and VGGSound header variants are all read). A class listed in the ``.txt`` is part of the stage; csv rows
of other classes are ignored, exactly as the reference loaders filter them.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avzsl.common import atomic_path, config_hash

STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen",
          "stage_2_train", "stage_2_test_seen", "stage_2_test_unseen")
TRAIN_STAGES = ("stage_1_train",)  # stage 2 trains on stage_1_train + val, as the reference reads it
SCORED_STAGES = ("stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen")


class SplitError(ValueError):
    pass


@dataclass
class Splits:
    all_classes: list[str]  # sorted; class id = index
    classes: dict[str, list[str]]  # stage -> class names (canonical spelling)
    videos: dict[str, list[tuple[str, str]]]  # stage -> [(video id, class name)] restricted to the stage's classes
    source: str = ""
    _ids: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._ids = {c: i for i, c in enumerate(self.all_classes)}

    def class_id(self, name: str) -> int:
        return self._ids[name]

    def class_ids(self, stage: str) -> list[int]:
        return sorted(self._ids[c] for c in self.classes[stage])

    # the protocol's views ------------------------------------------------------------------------
    def seen_unseen(self, stage: int) -> tuple[list[int], list[int]]:
        """Class ids searched at evaluation: val (stage 1) or test (stage 2), seen and unseen."""
        if stage == 1:
            return self.class_ids("stage_1_val_seen"), self.class_ids("stage_1_val_unseen")
        return self.class_ids("stage_2_test_seen"), self.class_ids("stage_2_test_unseen")

    def train_videos(self, stage: int) -> list[tuple[str, str]]:
        """Stage 1 trains on stage_1_train; stage 2 on stage_1_train + val_seen + val_unseen, as the reference reads it."""
        if stage == 1:
            return list(self.videos["stage_1_train"])
        return [*self.videos["stage_1_train"], *self.videos["stage_1_val_seen"], *self.videos["stage_1_val_unseen"]]

    def eval_videos(self, stage: int) -> list[tuple[str, str]]:
        if stage == 1:
            return [*self.videos["stage_1_val_seen"], *self.videos["stage_1_val_unseen"]]
        return [*self.videos["stage_2_test_seen"], *self.videos["stage_2_test_unseen"]]

    def digest(self) -> str:
        """Content identity: the classes and videos of every stage, independent of file formatting."""
        content = {"all_classes": self.all_classes, "classes": {s: sorted(c) for s, c in self.classes.items()},
                   "videos": {s: sorted(v) for s, v in self.videos.items()}}
        return config_hash(content, length=64)

    # consistency --------------------------------------------------------------------------------
    def validate(self) -> None:
        c = {s: set(v) for s, v in self.classes.items()}
        where = f" in {self.source}" if self.source else ""

        def overlap(a: str, b: str, what: str):
            both = sorted(c[a] & c[b])
            if both:
                raise SplitError(f"split error{where}: {what}: {a} and {b} share {len(both)} class(es): {both[:5]}")

        overlap("stage_1_val_unseen", "stage_1_train", "unseen classes overlap seen ones")
        overlap("stage_2_test_unseen", "stage_2_train", "unseen classes overlap seen ones")
        overlap("stage_2_test_unseen", "stage_1_train", "unseen classes overlap seen ones")
        overlap("stage_2_test_unseen", "stage_1_val_unseen", "test and validation unseen classes overlap")
        for sub, sup in (("stage_1_val_seen", "stage_1_train"), ("stage_2_test_seen", "stage_2_train"),
                         ("stage_1_train", "stage_2_train"), ("stage_1_val_unseen", "stage_2_train")):
            extra = sorted(c[sub] - c[sup])
            if extra:
                raise SplitError(f"split error{where}: {sub} has class(es) not in {sup}: {extra[:5]}")
        for s in STAGES:
            if not c[s]:
                raise SplitError(f"split error{where}: {s} lists no classes")
        if len(c["stage_1_train"]) < 2:
            raise SplitError(f"split error{where}: stage_1_train has {len(c['stage_1_train'])} seen class(es); "
                             "training and calibrated stacking need at least two (use fewer unseen classes)")
        # every stage that is trained on or scored must hold videos, and every class it scores at least one: an
        # empty set would score 0 and an empty class would silently drop out of the mean class accuracy
        for s in (*TRAIN_STAGES, *SCORED_STAGES):
            if not self.videos[s]:
                raise SplitError(f"split error{where}: {s} has no videos ({s}.csv is empty or lists none of the "
                                 f"stage's classes)")
        for s in SCORED_STAGES:
            have = {cls for _, cls in self.videos[s]}
            empty = sorted(set(c[s]) - have)
            if empty:
                raise SplitError(f"split error{where}: {s} lists class(es) with no videos: {empty[:5]}")
        owner: dict[str, str] = {}
        for s in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen"):
            for vid, _ in self.videos[s]:
                if vid in owner:
                    raise SplitError(f"split error{where}: video {vid!r} is in both {owner[vid]} and {s}")
                owner[vid] = s


# ------------------------------------------------------------------------------------------------ reading
def read_splits(split_dir: str | Path, all_class_file: str | Path | None = None) -> Splits:
    """Read and validate a split folder. ``all_class_file`` defaults to ``all_class.txt`` in the folder or its parent."""
    split_dir = Path(split_dir)
    if all_class_file is None:
        candidates = [split_dir / "all_class.txt", split_dir.parent / "all_class.txt"]
        all_class_file = next((p for p in candidates if p.exists()), candidates[0])
    all_class_file = Path(all_class_file)
    if not all_class_file.exists():
        raise SplitError(f"class list not found: {all_class_file}")
    all_classes = sorted(read_class_list(all_class_file))
    if len(set(all_classes)) != len(all_classes):
        raise SplitError(f"{all_class_file}: duplicate class names")
    canon = _canonicaliser(all_classes, all_class_file)
    classes, videos = {}, {}
    for stage in STAGES:
        txt = split_dir / f"{stage}.txt"
        if not txt.exists():
            raise SplitError(f"split file not found: {txt}")
        classes[stage] = [canon(n, txt) for n in _lines(txt)]
        keep = set(classes[stage])
        csv_path = split_dir / f"{stage}.csv"
        rows = _read_csv(csv_path, canon) if csv_path.exists() else []
        videos[stage] = [(v, c) for v, c in rows if c in keep]
    splits = Splits(all_classes, classes, videos, source=str(split_dir))
    splits.validate()
    return splits


def read_class_list(path: str | Path) -> list[str]:
    """The class names of a class list (``all_class.txt``): one a line, surrounding blanks and empty lines dropped."""
    return _lines(Path(path))


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _canonicaliser(all_classes: Sequence[str], source: Path):
    exact = set(all_classes)
    folded: dict[str, list[str]] = defaultdict(list)
    for c in all_classes:
        folded[c.casefold()].append(c)

    def canon(name: str, where: Path) -> str:
        if name in exact:
            return name
        match = folded.get(name.casefold(), [])
        if len(match) == 1:  # UCF's split files write HandStandPushups for all_class's HandstandPushups
            return match[0]
        raise SplitError(f"{where}: class {name!r} is not in {source}")
    return canon


def _read_csv(path: Path, canon) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"filename", "label"} <= set(reader.fieldnames or []):
            raise SplitError(f"{path}: expected 'filename' and 'label' columns, found {reader.fieldnames}")
        return [(r["filename"], canon(r["label"], path)) for r in reader]


# ------------------------------------------------------------------------------------------------ writing
def write_splits(split_dir: str | Path, splits: Splits) -> None:
    split_dir = Path(split_dir)
    splits.validate()
    _write_lines(split_dir / "all_class.txt", splits.all_classes)
    for stage in STAGES:
        _write_lines(split_dir / f"{stage}.txt", sorted(splits.classes[stage]))
        with atomic_path(split_dir / f"{stage}.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["filename", "label", "label_code"])
            for vid, c in sorted(splits.videos[stage], key=lambda r: (r[1], r[0])):
                w.writerow([vid, c, splits.class_id(c)])


def split_files(split_dir: str | Path) -> list[Path]:
    split_dir = Path(split_dir)
    return [split_dir / "all_class.txt"] + [split_dir / f"{s}.{e}" for s in STAGES for e in ("txt", "csv")]


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with atomic_path(path, suffix=".txt") as tmp:
        tmp.write_text("".join(f"{ln}\n" for ln in lines))


# ------------------------------------------------------------------------------------------------ building
@dataclass(frozen=True)
class SplitRecipe:
    """How to split a labelled video collection into the two-stage zero-shot structure."""

    n_val_unseen: int
    n_test_unseen: int
    val_seen_fraction: float = 0.1
    test_seen_fraction: float = 0.1
    seed: int = 0
    seen_only: tuple[str, ...] = ()  # classes that must stay seen (e.g. overlap with backbone pre-training)
    max_tries: int = 10000


def build_splits(videos: Sequence[tuple[str, str, str]], recipe: SplitRecipe,
                 factors: Mapping[str, Mapping[str, str]] | None = None,
                 forbid_unseen: Iterable[str] = ()) -> Splits:
    """Split ``(video id, class, group)`` triples.

    Unseen classes are drawn at random (seeded). When ``factors`` gives each class's attributes (e.g. what is seen
    and what is heard), a draw is accepted only if every attribute value of every unseen class also occurs among the
    stage-1 training classes, so that each unseen class is describable from seen material. ``forbid_unseen``: classes
    that must never be unseen (e.g. those a backbone's pre-training vocabulary covers, see ``extractors.leakage``);
    like ``recipe.seen_only``, but names not in ``videos`` are ignored. Within a class, whole
    ``group``s (clips of one source recording) go to one side, so no recording straddles training and testing.
    """
    all_classes = sorted({c for _, c, _ in videos})
    n_unseen = recipe.n_val_unseen + recipe.n_test_unseen
    seen_only = set(recipe.seen_only)
    unknown = seen_only - set(all_classes)
    if unknown:
        raise SplitError(f"seen_only lists unknown classes: {sorted(unknown)[:5]}")
    seen_only |= set(forbid_unseen) & set(all_classes)
    candidates = [c for c in all_classes if c not in seen_only]
    if n_unseen >= len(all_classes) or n_unseen > len(candidates):
        raise SplitError(f"cannot draw {n_unseen} unseen classes from {len(all_classes)} classes "
                         f"({len(candidates)} eligible)")
    rng = np.random.default_rng(recipe.seed)
    for _ in range(recipe.max_tries):
        pick = list(rng.permutation(candidates)[:n_unseen])
        val_unseen, test_unseen = sorted(pick[:recipe.n_val_unseen]), sorted(pick[recipe.n_val_unseen:])
        train = [c for c in all_classes if c not in set(pick)]
        if factors is None or _covered(val_unseen + test_unseen, train, factors):
            break
    else:
        raise SplitError("no draw of unseen classes keeps every class attribute covered by training classes; "
                         "lower the number of unseen classes")
    by_class: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for vid, c, g in videos:
        by_class[c][g or vid].append(vid)
    out = {s: [] for s in STAGES}
    for c in all_classes:
        groups = by_class[c]
        keys = list(rng.permutation(sorted(groups)))
        if c in test_unseen:
            parts = {"stage_2_test_unseen": keys}
        else:
            n_test = _count(len(keys), recipe.test_seen_fraction)
            rest = keys[n_test:]
            if c in val_unseen:
                parts = {"stage_2_test_seen": keys[:n_test], "stage_1_val_unseen": rest}
            else:
                n_val = _count(len(rest), recipe.val_seen_fraction)
                parts = {"stage_2_test_seen": keys[:n_test], "stage_1_val_seen": rest[:n_val],
                         "stage_1_train": rest[n_val:]}
        for stage, ks in parts.items():
            if not ks:
                raise SplitError(f"class {c!r} has too few recordings ({len(keys)}) to give {stage} one; a seen class "
                                 "needs at least three (train, val_seen, test_seen), a validation-unseen class two: "
                                 "add videos, lower the held-out fractions, or leave the class out")
            out[stage].extend((v, c) for k in ks for v in groups[k])
    out["stage_2_train"] = out["stage_1_train"] + out["stage_1_val_seen"] + out["stage_1_val_unseen"]
    classes = {
        "stage_1_train": train, "stage_1_val_seen": train, "stage_1_val_unseen": val_unseen,
        "stage_2_train": sorted(train + val_unseen), "stage_2_test_seen": sorted(train + val_unseen),
        "stage_2_test_unseen": test_unseen,
    }
    splits = Splits(all_classes, classes, out, source="built")
    splits.validate()
    return splits


def _covered(unseen: Sequence[str], train: Sequence[str], factors: Mapping[str, Mapping[str, str]]) -> bool:
    seen_values = defaultdict(set)
    for c in train:
        for k, v in factors.get(c, {}).items():
            seen_values[k].add(v)
    return all(v in seen_values[k] for c in unseen for k, v in factors.get(c, {}).items())


def _count(n: int, fraction: float) -> int:
    """Held-out groups for a fraction: at least one when the class has more than one group."""
    if n <= 1 or fraction <= 0:
        return 0
    return min(n - 1, max(1, int(round(n * fraction))))
