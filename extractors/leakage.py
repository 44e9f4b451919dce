"""Leakage between a zero-shot split and what a backbone was pre-trained on, and between its stages.

A class is *unseen* only if the features never saw it labelled: a backbone pre-trained with Kinetics labels has
seen "playing flute", so UCF's ``PlayingFlute`` cannot be an unseen class for it. This module

- loads the label vocabulary of a pre-training dataset (``VOCABULARIES``; ``BACKBONE_VOCABULARIES`` names the ones
  of each backbone) from its original source, a local file, or (Kinetics-400) torchvision's weight metadata;
- matches benchmark class names against it (``match_classes``): normalised names (case, punctuation, underscores,
  CamelCase), the same word stems in any order, plus a user-editable override table;
- builds splits whose unseen classes avoid the matches (``leakage_free_splits``);
- checks a split (``check_leakage``): no unseen class that is also seen, no video in two stages, no unseen class in a
  declared vocabulary, and a report of source recordings (groups) shared by training and seen-test clips.

Override table (CSV, header ``class,vocabulary,decision``): ``decision`` is ``match`` (the class counts as covered by
the vocabulary, e.g. a judgement the string rules cannot make, like ``HammerThrow`` for Sports-1M's "track and field")
or ``nomatch`` (a false positive of the rules). ``vocabulary`` ``*`` applies to every vocabulary.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avzsl import fetching, lockfile
from avzsl.common import write_text_atomic
from extractors.splits import STAGES, SplitError, SplitRecipe, Splits, build_splits


class LeakageError(SplitError):
    pass


# ------------------------------------------------------------------------------------------------ vocabularies
@dataclass(frozen=True)
class Vocabulary:
    name: str
    title: str
    url: str  # the original source, pinned where it lives in a repository
    kind: str  # "lines": one label per line; "csv:<column>": that column of a CSV
    synonyms: str = ""  # separator of synonyms inside one label (AudioSet "Fixed-wing aircraft, airplane")


_AVCA_VGGSOUND = ("https://raw.githubusercontent.com/ExplainableML/AVCA-GZSL/2711aeb5d7257ece4c5464fa46d7849a4edf6470/"
                  "avgzsl_benchmark_datasets/VGGSound/class-split/all_class.txt")
_MMA = "https://raw.githubusercontent.com/open-mmlab/mmaction2/4d6c93474730cad2f25e51109adcf96824efc7a3/"
VOCABULARIES = {
    "sports1m": Vocabulary("sports1m", "Sports-1M (487 labels)",
                           "https://raw.githubusercontent.com/gtoderici/sports-1m-dataset/"
                           "a035faa1aa89272ab40f2083d2e1c0755ebf823d/labels.txt", "lines"),
    "kinetics400": Vocabulary("kinetics400", "Kinetics-400", _MMA + "tools/data/kinetics/label_map_k400.txt", "lines"),
    "kinetics600": Vocabulary("kinetics600", "Kinetics-600", _MMA + "tools/data/kinetics/label_map_k600.txt", "lines"),
    "kinetics700": Vocabulary("kinetics700", "Kinetics-700", _MMA + "tools/data/kinetics/label_map_k700.txt", "lines"),
    "audioset": Vocabulary("audioset", "AudioSet (527 classes)",
                           "https://raw.githubusercontent.com/qiuqiangkong/audioset_tagging_cnn/"
                           "d2f4b8c18eab44737fcc0de1248ae21eb43f6aa4/metadata/class_labels_indices.csv",
                           "csv:display_name", synonyms=", "),
    "youtube8m": Vocabulary("youtube8m", "YouTube-8M (2018, 3862 entities)",
                            "https://raw.githubusercontent.com/danielgordon10/youtube8m-data/"
                            "c38617aad9dc485b1da8738cdb3c3e8b9964b601/vocabulary.csv", "csv:Name"),
    "vggsound": Vocabulary("vggsound", "VGGSound (309 classes)", _AVCA_VGGSOUND, "lines"),
}
# what each backbone's weights were trained with labels of (VGGish: a preliminary YouTube-8M; AudioSet is the
# public vocabulary of that data)
BACKBONE_VOCABULARIES = {
    "c3d": ("sports1m",),
    "torchvision_video": ("kinetics400",),
    "r2plus1d_18": ("kinetics400",), "r3d_18": ("kinetics400",), "mc3_18": ("kinetics400",),
    "s3d": ("kinetics400",), "mvit_v1_b": ("kinetics400",), "mvit_v2_s": ("kinetics400",),
    "swin3d_t": ("kinetics400",), "swin3d_s": ("kinetics400",), "swin3d_b": ("kinetics400",),
    "vggish": ("audioset", "youtube8m"),
    "selavi": ("vggsound",),
}
TORCHVISION = "torchvision"  # source name: Kinetics-400 from torchvision's weight metadata, offline


def vocabularies_for(backbone: str) -> tuple[str, ...]:
    if backbone in BACKBONE_VOCABULARIES:
        return BACKBONE_VOCABULARIES[backbone]
    if backbone in VOCABULARIES:
        return (backbone,)
    raise LeakageError(f"no pre-training vocabulary known for backbone {backbone!r}; known backbones: "
                       f"{sorted(BACKBONE_VOCABULARIES)}, vocabularies: {sorted(VOCABULARIES)}")


def _read_source(source: str | Path, timeout: float = 60) -> str:
    try:
        raw = fetching.read_bytes(source, "vocabulary file", timeout=timeout)
        # a url: verified against the lock file, locked on first use
        lockfile.check_data(str(source), raw, "vocabulary file")
        return raw.decode("utf-8")
    except (fetching.FetchError, lockfile.LockError) as e:
        raise LeakageError(str(e)) from None


def kinetics400_from_torchvision() -> list[str]:
    from torchvision.models.video import R2Plus1D_18_Weights

    return list(R2Plus1D_18_Weights.DEFAULT.meta["categories"])


def load_vocabulary(name: str, source: str | Path | None = None) -> list[str]:
    """The labels of vocabulary ``name`` (synonyms split) from ``source`` (local path or URL; default: the original
    source). ``source="torchvision"`` reads Kinetics-400 offline from torchvision's weight metadata."""
    if name not in VOCABULARIES:
        raise LeakageError(f"unknown vocabulary {name!r}; known: {sorted(VOCABULARIES)}")
    voc = VOCABULARIES[name]
    if source == TORCHVISION:
        if name != "kinetics400":
            raise LeakageError(f"torchvision metadata holds Kinetics-400 only, not {name}")
        return kinetics400_from_torchvision()
    text = _read_source(source or voc.url)
    if voc.kind == "lines":
        labels = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        column = voc.kind.split(":", 1)[1]
        reader = csv.DictReader(io.StringIO(text))
        if column not in (reader.fieldnames or []):
            raise LeakageError(f"{source or voc.url}: no column {column!r} for vocabulary {name}")
        labels = [r[column].strip() for r in reader if (r[column] or "").strip()]
    if voc.synonyms:
        labels = [s.strip() for label in labels for s in label.split(voc.synonyms) if s.strip()]
    if not labels:
        raise LeakageError(f"{source or voc.url}: vocabulary {name} is empty")
    return labels


# ------------------------------------------------------------------------------------------------ matching
STOP_WORDS = frozenset({"a", "an", "the", "of", "and", "or", "on", "in", "with", "to"})
_IRREGULAR = {"teeth": "tooth", "feet": "foot", "knives": "knife", "women": "woman", "men": "man",
              "children": "child", "geese": "goose", "mice": "mouse"}
_SUFFIXES = ("ing", "es", "en", "ed", "s", "e")


def words(name: str) -> list[str]:
    """Lower-case words of a class name: CamelCase split (``ApplyEyeMakeup``), punctuation and ``_`` as spaces."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return re.findall(r"[a-z0-9]+", s.lower())


def stem(word: str) -> str:
    """A small suffix stemmer: irregular plurals, then -ing/-es/-en/-ed/-s/-e stripped repeatedly (stem >= 3)."""
    w = _IRREGULAR.get(word, word)
    changed = True
    while changed:
        changed = False
        for suf in _SUFFIXES:
            if w.endswith(suf) and len(w) - len(suf) >= 3:
                w = w[: -len(suf)]
                changed = True
                break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":  # running -> runn -> run
        w = w[:-1]
    return w


def keys(name: str) -> dict[str, object]:
    """The forms two names are compared in: ``exact`` (words joined), ``joined_stem`` and ``stems`` (a set)."""
    ws = words(name)
    content = [w for w in ws if w not in STOP_WORDS] or ws
    return {"exact": "".join(ws), "joined_stem": stem("".join(ws)), "stems": frozenset(stem(w) for w in content)}


@dataclass(frozen=True)
class Match:
    cls: str
    vocabulary: str
    label: str  # the vocabulary label matched, or "" for an override
    rule: str  # exact | stem | override


def read_overrides(path: str | Path | None) -> dict[tuple[str, str], str]:
    """``{(class, vocabulary or "*"): "match" | "nomatch"}`` from the override CSV (``class,vocabulary,decision``)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise LeakageError(f"override table not found: {path}")
    out: dict[tuple[str, str], str] = {}
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
    if not rows or [c.strip() for c in rows[0]][:3] != ["class", "vocabulary", "decision"]:
        raise LeakageError(f"{path}: the header must be 'class,vocabulary,decision'")
    for n, r in enumerate(rows[1:], start=2):
        if len(r) < 3:
            raise LeakageError(f"{path}: row {n} needs class, vocabulary and decision")
        cls, voc, decision = (x.strip() for x in r[:3])
        if decision not in ("match", "nomatch"):
            raise LeakageError(f"{path}: row {n}: decision must be 'match' or 'nomatch', got {decision!r}")
        if voc != "*" and voc not in VOCABULARIES:
            raise LeakageError(f"{path}: row {n}: unknown vocabulary {voc!r} (known: {sorted(VOCABULARIES)} or *)")
        if out.get((cls, voc), decision) != decision:
            raise LeakageError(f"{path}: row {n}: {cls} / {voc} is both match and nomatch")
        out[(cls, voc)] = decision
    return out


def match_classes(classes: Iterable[str], vocabulary: str, labels: Sequence[str],
                  names: Mapping[str, str] | None = None,
                  overrides: Mapping[tuple[str, str], str] | None = None) -> dict[str, Match]:
    """The classes covered by ``labels``, each with its first match. A class is tried under its own name and, when
    ``names`` gives one, its readable name (the ``manual`` column); VGGSound-style names are also split on ", "."""
    overrides = {(c.casefold(), v): d for (c, v), d in (overrides or {}).items()}
    exact: dict[str, str] = {}
    joined: dict[str, str] = {}
    bags: dict[frozenset, str] = {}
    for label in labels:
        k = keys(label)
        exact.setdefault(k["exact"], label)
        joined.setdefault(k["joined_stem"], label)
        if k["stems"]:
            bags.setdefault(k["stems"], label)
    out: dict[str, Match] = {}
    for cls in classes:
        decision = overrides.get((cls.casefold(), vocabulary)) or overrides.get((cls.casefold(), "*"))
        if decision == "nomatch":
            continue
        if decision == "match":
            out[cls] = Match(cls, vocabulary, "", "override")
            continue
        forms = [cls] + ([names[cls]] if names and names.get(cls) else [])
        forms += [part for f in list(forms) for part in f.split(", ") if ", " in f]
        for form in forms:
            k = keys(form)
            if k["exact"] in exact:
                out[cls] = Match(cls, vocabulary, exact[k["exact"]], "exact")
                break
            hit = joined.get(k["joined_stem"]) or bags.get(k["stems"])
            if hit:
                out[cls] = Match(cls, vocabulary, hit, "stem")
                break
    return out


def backbone_matches(classes: Iterable[str], backbone: str, sources: Mapping[str, str | Path] | None = None,
                     names: Mapping[str, str] | None = None, overrides: Mapping[tuple[str, str], str] | None = None,
                     ) -> dict[str, dict[str, Match]]:
    """``{vocabulary: {class: Match}}`` for every vocabulary of ``backbone``."""
    classes = list(classes)
    sources = sources or {}
    return {v: match_classes(classes, v, load_vocabulary(v, sources.get(v)), names, overrides)
            for v in vocabularies_for(backbone)}


# ------------------------------------------------------------------------------------------------ building
def leakage_free_splits(videos: Sequence[tuple[str, str, str]], recipe: SplitRecipe,
                        matches: Mapping[str, Mapping[str, Match]]) -> Splits:
    """``build_splits`` with every class matched by a vocabulary kept out of the unseen sets, then checked."""
    forbidden = {c for m in matches.values() for c in m}
    splits = build_splits(videos, recipe, forbid_unseen=forbidden)
    check_leakage(splits, {v: set(m) for v, m in matches.items()})
    return splits


# ------------------------------------------------------------------------------------------------ checking
UNSEEN_STAGES = ("stage_1_val_unseen", "stage_2_test_unseen")
SEEN_STAGES = ("stage_1_train", "stage_2_train", "stage_1_val_seen", "stage_2_test_seen")
DISJOINT_STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen",
                   "stage_2_test_unseen")


@dataclass
class LeakageReport:
    shared_groups: dict[str, list[str]] = field(default_factory=dict)  # held-out stage -> groups also in training
    shared_clips: dict[str, int] = field(default_factory=dict)  # held-out stage -> its clips of those groups

    def summary(self) -> str:
        if not any(self.shared_groups.values()):
            return "no source recording is shared between training and seen-test clips"
        return "; ".join(f"{s}: {len(g)} source recording(s), {self.shared_clips[s]} clip(s) also in training"
                         for s, g in self.shared_groups.items() if g)


def check_leakage(splits: Splits, vocabularies: Mapping[str, Iterable[str]] | None = None,
                  groups: Mapping[str, str] | None = None, keep_groups_apart: bool = False) -> LeakageReport:
    """Refuse a leaky split with one clear message; report source-recording sharing.

    ``vocabularies``: ``{vocabulary: classes it covers}`` (e.g. from ``backbone_matches``). ``groups``: video id ->
    source recording; with ``keep_groups_apart`` a recording in both training and a seen-test stage is an error.
    """
    unseen = {s: set(splits.classes[s]) for s in UNSEEN_STAGES}
    seen = {s: set(splits.classes[s]) for s in SEEN_STAGES}
    for us, ucls in unseen.items():
        for ss, scls in seen.items():
            if us == "stage_1_val_unseen" and ss in ("stage_2_train", "stage_2_test_seen"):
                continue  # stage 2 trains on the validation-unseen classes by design
            both = sorted(ucls & scls)
            if both:
                raise LeakageError(f"leaky split: unseen class(es) {both[:5]} of {us} are also seen ({ss})")
    owner: dict[str, str] = {}
    for s in DISJOINT_STAGES:
        for vid, _ in splits.videos[s]:
            if vid in owner:
                raise LeakageError(f"leaky split: video {vid!r} is in two stages, {owner[vid]} and {s}")
            owner[vid] = s
    test_videos = {v for s in ("stage_2_test_seen", "stage_2_test_unseen") for v, _ in splits.videos[s]}
    both = sorted(test_videos & {v for v, _ in splits.videos["stage_2_train"]})
    if both:
        raise LeakageError(f"leaky split: video {both[0]!r} is in two stages, stage_2_train and a test stage "
                           f"({len(both)} such video(s))")
    for voc, covered in (vocabularies or {}).items():
        covered = set(covered)
        for us, ucls in unseen.items():
            bad = sorted(ucls & covered)
            if bad:
                raise LeakageError(f"leaky split: unseen class(es) {bad[:5]} of {us} are in the pre-training "
                                   f"vocabulary {voc} ({len(bad)} class(es))")
    report = LeakageReport()
    if groups is not None:
        def gs(stages):
            return {groups.get(v, v) for st in stages for v, _ in splits.videos[st]}

        # val_seen is held out from stage-1 training; test_seen from stage-2 training (train + val)
        for s, training in (("stage_1_val_seen", ("stage_1_train",)),
                            ("stage_2_test_seen", ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen",
                                                   "stage_2_train"))):
            shared = gs([s]) & gs(training)
            report.shared_groups[s] = sorted(shared)
            report.shared_clips[s] = sum(groups.get(v, v) in shared for v, _ in splits.videos[s])
        if keep_groups_apart and any(report.shared_groups.values()):
            raise LeakageError(f"leaky split: {report.summary()} (keep_groups_apart)")
    return report


def keep_groups_apart(splits: Splits, groups: Mapping[str, str]) -> tuple[Splits, LeakageReport]:
    """A copy of ``splits`` in which every source recording stays on the training side: val_seen clips of a
    recording that stage-1 training uses move to stage_1_train (stage-2 training is unchanged), test_seen clips of a
    recording that stage-2 training uses are dropped. Returns the new splits and the sharing found."""
    report = check_leakage(splits, groups=groups)
    videos = {s: list(v) for s, v in splits.videos.items()}
    moved = set(report.shared_groups.get("stage_1_val_seen", []))
    videos["stage_1_train"] += [(v, c) for v, c in videos["stage_1_val_seen"] if groups.get(v, v) in moved]
    videos["stage_1_val_seen"] = [(v, c) for v, c in videos["stage_1_val_seen"] if groups.get(v, v) not in moved]
    dropped = set(report.shared_groups.get("stage_2_test_seen", []))
    videos["stage_2_test_seen"] = [(v, c) for v, c in videos["stage_2_test_seen"] if groups.get(v, v) not in dropped]
    out = Splits(list(splits.all_classes), {s: list(splits.classes[s]) for s in STAGES}, videos,
                 source=splits.source)
    out.validate()  # a class left without held-out clips is an error, not a silent drop
    return out, report


def write_leakage_report(path: str | Path, backbone: str, matches: Mapping[str, Mapping], splits: Splits,
                         report: LeakageReport, kept_apart: bool) -> None:
    """The markdown report written next to a leakage-free split: what each vocabulary covers, the unseen classes,
    the source-recording sharing."""
    lines = [f"# Leakage report: backbone `{backbone}`", "",
             "Checked: no unseen class is also seen, no video is in two stages, no unseen class is in a "
             "pre-training vocabulary of the backbone (all passed).", ""]
    for voc, m in matches.items():
        lines += [f"## {VOCABULARIES[voc].title}: {len(m)} class(es) covered, kept seen", "",
                  "| class | label | rule |", "|---|---|---|"]
        lines += [f"| {c} | {x.label or '(override table)'} | {x.rule} |" for c, x in sorted(m.items())]
        lines.append("")
    for stage in UNSEEN_STAGES:
        lines += [f"{stage}: {', '.join(sorted(splits.classes[stage]))}", ""]
    lines += [f"Source recordings: {report.summary()}"
              + (" (keep_sources_apart: shared recordings kept on the training side)." if kept_apart else "."), ""]
    write_text_atomic(path, "\n".join(lines))


def write_leakage_free_splits(manifest: str | Path, class_names: str | Path | None, recipe: dict, backbone: str,
                              vocabularies: Mapping[str, str], overrides: str | Path | None, keep_sources_apart: bool,
                              out: str | Path, report_path: str | Path) -> dict:
    """The leakage-free split of a manifest's videos for ``backbone``, checked, written to ``out`` with its report;
    returns the vocabulary coverage and the sharing found. Raises :class:`SplitError` (or :class:`LeakageError`)
    when no such split exists."""
    from extractors.sources.manifest import read_class_names, read_manifest
    from extractors.splits import write_splits

    rows = read_manifest(manifest)
    groups = {r.video_id: r.group or r.video_id for r in rows}
    names = read_class_names(class_names) if class_names else {}
    recipe = SplitRecipe(**{**recipe, "seen_only": tuple(recipe.get("seen_only", ()))})
    matches = backbone_matches(sorted({r.label for r in rows}), backbone, vocabularies, names,
                               read_overrides(overrides) if overrides else None)
    covered = {v: set(m) for v, m in matches.items()}
    splits = leakage_free_splits([(r.video_id, r.label, r.group) for r in rows], recipe, matches)
    if keep_sources_apart:
        splits, _ = keep_groups_apart(splits, groups)
    report = check_leakage(splits, covered, groups, keep_groups_apart=keep_sources_apart)
    write_splits(out, splits)
    write_leakage_report(report_path, backbone, matches, splits, report, keep_sources_apart)
    return {"backbone": backbone, "covered": {v: len(m) for v, m in matches.items()}, "sharing": report.summary()}
