import shutil

import pytest

from extractors.splits import STAGES, SplitError, SplitRecipe, build_splits, read_splits, write_splits

# class and video counts per stage, reference-protocol §4
OFFICIAL = {
    ("UCF", "main_split"): [(30, 3174), (30, 353), (12, 1467), (42, 4994), (42, 555), (9, 1267)],
    ("UCF", "cls_split"): [(30, 3174), (30, 353), (12, 1467), (42, 4994), (42, 555), (6, 845)],
    ("ActivityNet", "main_split"): [(99, 9204), (99, 1023), (51, 4307), (150, 14534), (150, 1615), (50, 4199)],
    ("ActivityNet", "cls_split"): [(99, 9204), (99, 1023), (51, 4307), (150, 14534), (150, 1615), (48, 4052)],
    ("VGGSound", "main_split"): [(138, 70351), (138, 7817), (69, 3102), (207, 81270), (207, 9032), (69, 3450)],
    ("VGGSound", "cls_split"): [(138, 70351), (138, 7817), (69, 3102), (207, 81270), (207, 9032), (64, 3200)],
}


@pytest.mark.parametrize("dataset,variant", sorted(OFFICIAL))
def test_official_splits_read_with_reference_counts(shared_splits, dataset, variant):
    cs = shared_splits / "avgzsl_benchmark_datasets" / dataset / "class-split"
    s = read_splits(cs / variant, cs / "all_class.txt")
    assert [(len(s.classes[st]), len(s.videos[st])) for st in STAGES] == OFFICIAL[(dataset, variant)]
    # stage 2 trains on exactly stage_2_train's videos
    assert sorted(s.train_videos(2)) == sorted(s.videos["stage_2_train"])


def test_ucf_spelling_is_canonicalised(shared_splits):
    cs = shared_splits / "avgzsl_benchmark_datasets" / "UCF" / "class-split"
    s = read_splits(cs / "main_split", cs / "all_class.txt")
    assert "HandstandPushups" in s.classes["stage_1_train"]  # the txt says HandStandPushups
    assert s.class_id("HandstandPushups") == 36  # the csv's label_code


def test_roundtrip_official_format(shared_splits, tmp_path):
    cs = shared_splits / "avgzsl_benchmark_datasets" / "UCF" / "class-split"
    s = read_splits(cs / "cls_split", cs / "all_class.txt")
    write_splits(tmp_path, s)
    again = read_splits(tmp_path)
    assert again.classes == {k: sorted(v) for k, v in s.classes.items()}
    assert {k: sorted(v) for k, v in again.videos.items()} == {k: sorted(v) for k, v in s.videos.items()}
    header = (tmp_path / "stage_1_train.csv").read_text().splitlines()[0]
    assert header == "filename,label,label_code"


def test_overlapping_unseen_classes_are_refused(shared_splits, tmp_path):
    cs = shared_splits / "avgzsl_benchmark_datasets" / "UCF" / "class-split"
    shutil.copytree(cs / "main_split", tmp_path / "split")
    shutil.copy(cs / "all_class.txt", tmp_path / "split")
    txt = tmp_path / "split" / "stage_2_test_unseen.txt"
    txt.write_text(txt.read_text() + "Archery\n")  # a training class
    with pytest.raises(SplitError, match="unseen classes overlap seen ones.*Archery"):
        read_splits(tmp_path / "split")


def _videos(n_classes=9, per_class=6):
    return [(f"c{c}_{i}", f"c{c}", f"c{c}_g{i // 2}") for c in range(n_classes) for i in range(per_class)]


def test_built_splits_are_disjoint_group_aware_and_cover_factors():
    factors = {f"c{c}": {"visual": str(c // 3), "sound": str(c % 3)} for c in range(9)}
    s = build_splits(_videos(), SplitRecipe(n_val_unseen=2, n_test_unseen=2, val_seen_fraction=0.3,
                                            test_seen_fraction=0.3, seed=3), factors)
    train = set(s.classes["stage_1_train"])
    for c in s.classes["stage_1_val_unseen"] + s.classes["stage_2_test_unseen"]:
        for k, v in factors[c].items():
            assert any(factors[t][k] == v for t in train), (c, k)
    owner = {}
    for stage in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen",
                  "stage_2_test_unseen"):
        for vid, _ in s.videos[stage]:
            group = vid.rsplit("_", 1)[0] + "_g" + str(int(vid.rsplit("_", 1)[1]) // 2)
            assert owner.setdefault(group, stage) == stage, f"group {group} split across stages"
    assert sorted(s.videos["stage_2_train"]) == sorted(s.train_videos(2))
    assert s.classes["stage_1_val_seen"] == s.classes["stage_1_train"]


def test_built_splits_are_seeded():
    r = SplitRecipe(n_val_unseen=2, n_test_unseen=2, seed=7)
    assert build_splits(_videos(), r).videos == build_splits(_videos(), r).videos
    assert build_splits(_videos(), r).classes != build_splits(_videos(), SplitRecipe(2, 2, seed=8)).classes


def test_seen_only_classes_are_never_unseen():
    r = SplitRecipe(n_val_unseen=3, n_test_unseen=3, seed=0, seen_only=("c0", "c1", "c2"))
    for seed in range(10):
        s = build_splits(_videos(), SplitRecipe(**{**r.__dict__, "seed": seed}))
        assert {"c0", "c1", "c2"} <= set(s.classes["stage_1_train"])


def test_too_many_unseen_classes():
    with pytest.raises(SplitError, match="cannot draw"):
        build_splits(_videos(n_classes=4), SplitRecipe(n_val_unseen=2, n_test_unseen=2))
