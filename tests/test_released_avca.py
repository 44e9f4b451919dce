"""The released AVCA feature tree: import, name-based text alignment, the legacy order, hostile pickles."""

import csv
import pickle

import numpy as np
import pytest
from avca_tree import fabricate_tree

from extractors.feature_store import FeatureStore
from extractors.safe_pickle import UnsafePickleError, load_npy, load_pickle
from extractors.sources import released_avca as R
from extractors.splits import read_splits
from extractors.text_store import TextEmbeddings

TEXT = {"UCF": ("ucf", "ucf_w2v_class_names.csv"), "ActivityNet": ("activity", "activitynet_w2v_class_names.csv"),
        "VGGSound": ("vggsound", "vggsound_w2v_class_names.csv")}
MISASSIGNED = {"UCF": 79, "ActivityNet": 8, "VGGSound": 205}


@pytest.mark.parametrize("dataset", ["UCF", "ActivityNet", "VGGSound"])
def test_text_alignment_by_name_and_legacy_reference_order(shared_splits, dataset):
    key, csv_name = TEXT[dataset]
    cs = shared_splits / "avgzsl_benchmark_datasets" / dataset / "class-split"
    classes = read_splits(cs / "main_split", cs / "all_class.txt").all_classes
    with open(cs / csv_name) as f:
        manual = {r["original"]: r["manual"] for r in csv.DictReader(f)}
    table = load_npy(shared_splits / "w2v_features" / f"word_embeddings_{key}_normed.npy")
    correct = R.class_text_assignment(classes, manual, list(table), legacy_reference_order=False)
    legacy = R.class_text_assignment(classes, manual, list(table), legacy_reference_order=True)
    assert all(correct[c] == manual[c] for c in classes)
    assert sum(legacy[c] != correct[c] for c in classes) == MISASSIGNED[dataset]
    # the documented per-class keys of the reference code, and the matrices derived from them
    with open(shared_splits / "derived" / "w2v" / f"{key}_w2v_alignment.csv") as f:
        documented = {r["original_name"]: r["embedding_key_used_by_AVCA_TCaF_code"] for r in csv.DictReader(f)}
    assert legacy == documented
    npz = np.load(shared_splits / "derived" / "w2v" / f"{key}_w2v300_by_class_id.npz")
    assert list(npz["class_names"]) == classes
    np.testing.assert_allclose(np.stack([table[correct[c]] for c in classes]), npz["emb_correct"], atol=1e-6)
    np.testing.assert_allclose(np.stack([table[legacy[c]] for c in classes]), npz["emb_as_used_by_reference_code"],
                               atol=1e-6)


@pytest.fixture(scope="module")
def ucf_tree(shared_splits, tmp_path_factory):
    return fabricate_tree(shared_splits, tmp_path_factory.mktemp("tree"), "UCF", feature_sets=("main", "cls"),
                          dims={"main": (32, 32), "cls": (16, 64)})


def test_import_features_splits_and_text(ucf_tree, tmp_path):
    stats = R.import_features(ucf_tree, "UCF", "main", tmp_path / "f.h5")
    store = FeatureStore(tmp_path / "f.h5")
    assert stats["videos"] == len(store) == 6816 and store.dims == {"audio": 32, "video": 32}
    assert not store.has_sequences
    cls_stats = R.import_features(ucf_tree, "UCF", "cls", tmp_path / "c.h5")
    assert cls_stats["videos"] == 6394  # cls_split: 6 test-unseen classes, reference-protocol §4
    splits = R.import_splits(ucf_tree, "UCF", "main", tmp_path / "splits")
    assert len(splits.classes["stage_2_test_unseen"]) == 9
    listed = {v for s in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen",
                          "stage_2_test_unseen") for v, _ in splits.videos[s]}
    assert listed == set(store.ids)
    # a video's label in the store is the class of its h5 file, in the canonical spelling
    row = store.rows(["v_HandStandPushups_g01_c01"])[0]
    assert store.labels[row] == "HandstandPushups"
    for legacy, expected in ((False, 0), (True, 79)):
        out = R.import_text(ucf_tree, "UCF", "main", tmp_path / f"t{legacy}.h5", legacy_reference_order=legacy)
        assert out["misassigned"] == expected
    emb = TextEmbeddings(tmp_path / "tFalse.h5")
    table = load_npy(ucf_tree / "UCF" / "features" / "main_features" / "text" / "word_embeddings_ucf_normed.npy")
    np.testing.assert_allclose(emb.vector("CleanAndJerk"), table["Weight Lifting"])
    np.testing.assert_allclose(TextEmbeddings(tmp_path / "tTrue.h5").vector("PlayingFlute"), table["Playing Guitar"])


def test_missing_feature_root_is_a_clear_error(tmp_path):
    with pytest.raises(R.ReleasedTreeError, match="feature root not found"):
        R.import_features(tmp_path / "nope", "UCF", "main", tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


def test_hostile_pickles_are_refused_and_data_pickles_load(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"features": [Exploit()]}))
    with pytest.raises(UnsafePickleError, match="could run code"):
        load_pickle(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    evil_npy = tmp_path / "evil.npy"
    np.save(evil_npy, np.array({"a": Exploit()}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        load_npy(evil_npy)
    assert not (tmp_path / "pwned").exists()
    good = {"features": [np.ones((3, 4), np.float32)], "video_names": [b"v1"], "fps": [25]}
    for protocol in (2, 4, 5):
        (tmp_path / "ok.pkl").write_bytes(pickle.dumps(good, protocol=protocol))
        back = load_pickle(tmp_path / "ok.pkl")
        assert back["video_names"] == [b"v1"] and back["fps"] == [25]
        np.testing.assert_array_equal(back["features"][0], good["features"][0])


def test_tcaf_pickle_tree_imports_per_step_sequences(shared_splits, tmp_path):
    from avca_tree import fabricate_tcaf_tree

    tree = fabricate_tcaf_tree(shared_splits, tmp_path / "tcaf", "UCF", dims={"main": (8, 6)})
    stats = R.import_features(tree, "UCF", "main", tmp_path / "f.h5", layout="tcaf")
    store = FeatureStore(tmp_path / "f.h5")
    assert stats["videos"] == 6816 and store.has_sequences and store.dims == {"audio": 8, "video": 6}
    lengths = store.lengths("audio")
    assert lengths.min() >= 3 and lengths.max() <= 12
    # the stored sequence of a video is exactly its pickled array, in the official row order of its class file
    data = load_pickle(tree / "UCF" / "features" / "main_features_non_averaged" / "video" / "stage_1_train"
                       / "Archery.pkl")
    row = store.rows([data["video_names"][2].decode()])[0]
    flat, off = store.sequences("video", np.array([row]))
    np.testing.assert_array_equal(flat, data["features"][2])
    out = R.import_text(tree, "UCF", "main", tmp_path / "t.h5", layout="tcaf")
    assert out["classes"] == 101


def test_a_hostile_pickle_in_a_tcaf_tree_is_refused(shared_splits, tmp_path):
    from avca_tree import fabricate_tcaf_tree

    tree = fabricate_tcaf_tree(shared_splits, tmp_path / "tcaf", "UCF", dims={"main": (4, 4)})

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    target = tree / "UCF" / "features" / "main_features_non_averaged" / "audio" / "stage_1_train" / "Archery.pkl"
    target.write_bytes(pickle.dumps({"features": [Exploit()], "video_names": [b"v"], "fps": [25]}))
    with pytest.raises(UnsafePickleError, match="could run code"):
        R.import_features(tree, "UCF", "main", tmp_path / "f.h5", layout="tcaf")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "f.h5").exists()
