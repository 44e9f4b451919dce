"""Leakage-free splits: class names matched to pre-training vocabularies, and a checker that refuses leaky splits."""

import pytest
from conftest import REPO, SHARED

from extractors.leakage import (
    LeakageError,
    backbone_matches,
    check_leakage,
    keep_groups_apart,
    keys,
    leakage_free_splits,
    load_vocabulary,
    match_classes,
    read_overrides,
    stem,
    words,
)
from extractors.sources.official import download_list, official_splits
from extractors.splits import STAGES, SplitError, SplitRecipe, Splits

OVERRIDES = REPO / "config" / "leakage_overrides.csv"
VOCAB = SHARED / "data" / "pretraining_classes"


# ------------------------------------------------------------------------------------------------ matching rules
def test_words_and_stems():
    assert words("ApplyEyeMakeup") == ["apply", "eye", "makeup"]
    assert words("HandStandPushups") == ["hand", "stand", "pushups"]
    assert words("floor (gymnastics)") == ["floor", "gymnastics"]
    assert words("playing_cello") == ["playing", "cello"]
    assert words("YoYo") == ["yo", "yo"] and words("Rock-climbing, indoor") == ["rock", "climbing", "indoor"]
    assert stem("teeth") == stem("tooth") and stem("brushing") == stem("brush")
    assert stem("sharpening") == stem("sharpen") == "sharp" and stem("knives") == stem("knife")
    assert keys("FloorGymnastics")["exact"] == keys("floor (gymnastics)")["exact"]
    assert keys("BandMarching")["stems"] == keys("marching band")["stems"]
    assert keys("PushUps")["joined_stem"] == keys("push up")["joined_stem"]


def test_match_rules_and_overrides(tmp_path):
    vocab = ["archery", "shot put", "marching band", "brushing teeth", "floor (gymnastics)", "curling"]
    classes = ["Archery", "Shotput", "BandMarching", "BrushingTeeth", "FloorGymnastics", "MoppingFloor",
               "HammerThrow", "Removingcurlers"]
    m = match_classes(classes, "kinetics400", vocab)
    assert {c: x.rule for c, x in m.items()} == {"Archery": "exact", "Shotput": "exact", "BandMarching": "stem",
                                                 "BrushingTeeth": "exact", "FloorGymnastics": "exact"}
    assert m["BandMarching"].label == "marching band"
    table = tmp_path / "overrides.csv"
    table.write_text("# reviewed\nclass,vocabulary,decision\nHammerThrow,kinetics400,match\n"
                     "bandmarching,*,nomatch\n")
    m = match_classes(classes, "kinetics400", vocab, overrides=read_overrides(table))
    assert m["HammerThrow"].rule == "override" and "BandMarching" not in m
    # the readable name is tried too
    m = match_classes(["Cleaningsink"], "youtube8m", ["Cleaning sink"], names={"Cleaningsink": "Cleaning sink"})
    assert "Cleaningsink" in m


@pytest.mark.parametrize("text,message", [
    ("klass,vocabulary,decision\n", "header must be"),
    ("class,vocabulary,decision\nA,kinetics400,maybe\n", "decision must be"),
    ("class,vocabulary,decision\nA,imagenet,match\n", "unknown vocabulary"),
    ("class,vocabulary,decision\nA,sports1m,match\nA,sports1m,nomatch\n", "both match and nomatch"),
])
def test_bad_override_tables(tmp_path, text, message):
    (tmp_path / "o.csv").write_text(text)
    with pytest.raises(LeakageError, match=message):
        read_overrides(tmp_path / "o.csv")


def test_shipped_override_table_reads():
    table = read_overrides(OVERRIDES)
    assert len(table) == 22 and set(table.values()) == {"match"}


def test_vocabulary_sources(tmp_path):
    tv = load_vocabulary("kinetics400", "torchvision")  # offline, torchvision's weight metadata
    assert len(tv) == 400 and "playing flute" in tv
    (tmp_path / "as.csv").write_text('index,mid,display_name\n0,/m/1,"Fixed-wing aircraft, airplane"\n1,/m/2,Thunder\n')
    assert load_vocabulary("audioset", tmp_path / "as.csv") == ["Fixed-wing aircraft", "airplane", "Thunder"]
    (tmp_path / "y8.csv").write_text("Index,Name\n0,Game\n1,\n2,Typing\n")
    assert load_vocabulary("youtube8m", f"file://{tmp_path / 'y8.csv'}") == ["Game", "Typing"]
    with pytest.raises(LeakageError, match="not found"):
        load_vocabulary("sports1m", tmp_path / "absent.txt")
    with pytest.raises(LeakageError, match="no pre-training vocabulary known"):
        backbone_matches(["A"], "resnet50")


# ------------------------------------------------------------------------------------------------ the checker
def _splits(**changes) -> Splits:
    """A small valid split: a, b seen; c validation-unseen; d test-unseen; one clip per (class, stage)."""
    classes = {"stage_1_train": ["a", "b"], "stage_1_val_seen": ["a", "b"], "stage_1_val_unseen": ["c"],
               "stage_2_train": ["a", "b", "c"], "stage_2_test_seen": ["a", "b", "c"], "stage_2_test_unseen": ["d"]}
    videos = {"stage_1_train": [("a1", "a"), ("a2", "a"), ("b1", "b")],
              "stage_1_val_seen": [("a3", "a"), ("b2", "b")], "stage_1_val_unseen": [("c1", "c")],
              "stage_2_test_seen": [("a4", "a"), ("b3", "b"), ("c2", "c")], "stage_2_test_unseen": [("d1", "d")]}
    videos["stage_2_train"] = videos["stage_1_train"] + videos["stage_1_val_seen"] + videos["stage_1_val_unseen"]
    for k, v in changes.items():
        (classes if k.startswith("classes_") else videos)[k.split("_", 1)[1]] = v
    return Splits(["a", "b", "c", "d"], classes, videos)


def test_a_clean_split_passes():
    report = check_leakage(_splits(), {"kinetics400": {"a", "b"}}, groups={v: v for v in "a1 a2 a3 a4".split()})
    assert report.summary().startswith("no source recording")


@pytest.mark.parametrize("leaky,vocab,message", [
    (dict(classes_stage_2_test_unseen=["d", "a"]), None,
     r"^leaky split: unseen class\(es\) \['a'\] of stage_2_test_unseen are also seen \(stage_1_train\)$"),
    (dict(videos_stage_2_test_unseen=[("d1", "d"), ("a2", "d")]), None,
     r"^leaky split: video 'a2' is in two stages, stage_1_train and stage_2_test_unseen$"),
    (dict(), {"sports1m": {"a", "d"}},
     r"^leaky split: unseen class\(es\) \['d'\] of stage_2_test_unseen are in the pre-training vocabulary "
     r"sports1m \(1 class\(es\)\)$"),
])
def test_leaky_splits_are_refused_with_one_clear_message(leaky, vocab, message):
    with pytest.raises(LeakageError, match=message):
        check_leakage(_splits(**leaky), vocab)


def test_source_recordings_shared_by_training_and_seen_test():
    groups = {"a1": "A", "a3": "A", "a4": "A", "b1": "B", "b2": "B2", "b3": "B3"}
    report = check_leakage(_splits(), groups=groups)
    assert report.shared_groups == {"stage_1_val_seen": ["A"], "stage_2_test_seen": ["A"]}
    assert report.shared_clips == {"stage_1_val_seen": 1, "stage_2_test_seen": 1}
    assert "1 source recording(s)" in report.summary()
    with pytest.raises(LeakageError, match="keep_groups_apart"):
        check_leakage(_splits(), groups=groups, keep_groups_apart=True)
    # one side only: a3 moves into training, a4 leaves the test set; a still has a5 to be tested on
    s = _splits(videos_stage_2_test_seen=[("a4", "a"), ("a5", "a"), ("b3", "b"), ("c2", "c")],
                videos_stage_1_val_seen=[("a3", "a"), ("a6", "a"), ("b2", "b")])
    apart, _ = keep_groups_apart(s, groups)
    assert ("a3", "a") in apart.videos["stage_1_train"] and ("a4", "a") not in apart.videos["stage_2_test_seen"]
    assert not any(check_leakage(apart, groups=groups).shared_groups.values())
    assert sorted(apart.train_videos(2)) == sorted(s.train_videos(2))


# ------------------------------------------------------------------------------------------------ on UCF
@pytest.fixture(scope="module")
def ucf(shared_splits):
    items, _ = download_list(shared_splits, "UCF", variants=("main",))
    return {"videos": [(it.video_id, it.label, it.group) for it in items],
            "groups": {it.video_id: it.group for it in items},
            "main": official_splits(shared_splits, "UCF", "main")}


def test_ucf_sports1m_figure(ucf):
    """AVCA puts the 30 UCF classes it calls 'in Sports-1M' in stage-1 training; the string rules find 8 of them,
    the shipped override table the other 22."""
    if not (VOCAB / "sports1m_labels.txt").is_file():
        pytest.skip("pre-training vocabularies not in the shared folder")
    labels = load_vocabulary("sports1m", VOCAB / "sports1m_labels.txt")
    s1 = set(ucf["main"].classes["stage_1_train"])
    m = match_classes(ucf["main"].all_classes, "sports1m", labels)
    assert sum(x.rule == "exact" for x in m.values()) == 17  # OVERLAP_NOTES rule A
    assert len(m) == 18 and len(s1 & set(m)) == 8
    m = match_classes(ucf["main"].all_classes, "sports1m", labels, overrides=read_overrides(OVERRIDES))
    assert s1 <= set(m)


@pytest.mark.parametrize("backbone", ["c3d", "r2plus1d_18"])
def test_new_ucf_split_keeps_pretraining_classes_seen(ucf, backbone):
    sources = {"sports1m": VOCAB / "sports1m_labels.txt", "kinetics400": "torchvision"}
    if backbone == "c3d" and not (VOCAB / "sports1m_labels.txt").is_file():
        pytest.skip("Sports-1M labels not in the shared folder")
    overrides = read_overrides(OVERRIDES)
    matches = backbone_matches({c for _, c, _ in ucf["videos"]}, backbone, sources, overrides=overrides)
    forbidden = {c for m in matches.values() for c in m}
    assert len(forbidden) == (30 if backbone == "c3d" else 14)  # of the 51 classes UCF-GZSL uses
    splits = leakage_free_splits(ucf["videos"], SplitRecipe(n_val_unseen=6, n_test_unseen=6, seed=1), matches)
    unseen = set(splits.classes["stage_1_val_unseen"]) | set(splits.classes["stage_2_test_unseen"])
    assert len(unseen) == 12 and not unseen & forbidden
    assert not any(overrides.get((c, v)) == "match" for c in unseen for v in matches)
    report = check_leakage(splits, {v: set(m) for v, m in matches.items()}, ucf["groups"], keep_groups_apart=True)
    assert not any(report.shared_groups.values())
    assert sum(len(splits.videos[s]) for s in STAGES if s != "stage_2_train") == len(ucf["videos"])


def test_official_ucf_split_shares_source_recordings(ucf):
    """Every official seen-test clip of UCF comes from a recording (vXX_gYY) also used in training."""
    report = check_leakage(ucf["main"], groups=ucf["groups"])
    assert report.shared_clips == {"stage_1_val_seen": 353, "stage_2_test_seen": 555}
    assert {s: len(g) for s, g in report.shared_groups.items()} == {"stage_1_val_seen": 300, "stage_2_test_seen": 460}
    with pytest.raises(SplitError, match="stage_1_val_seen has no videos"):
        keep_groups_apart(ucf["main"], ucf["groups"])
