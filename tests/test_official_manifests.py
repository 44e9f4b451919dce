"""Official AV-GZSL splits: fetched and verified, equal to the shared copies, and turned into download lists."""

import io
import json
import urllib.error

import pytest

from extractors.sources import official
from extractors.sources.download import read_download_list, write_download_list
from extractors.sources.official import (
    DATASETS,
    OfficialSplitError,
    download_list,
    download_rows,
    fetch_official,
    manifest_rows,
    official_files,
    official_splits,
)
from extractors.splits import STAGES, read_splits

# classes / videos per stage, reference-protocol §4
COUNTS = {
    ("UCF", "main"): [(30, 3174), (30, 353), (12, 1467), (42, 4994), (42, 555), (9, 1267)],
    ("UCF", "cls"): [(30, 3174), (30, 353), (12, 1467), (42, 4994), (42, 555), (6, 845)],
    ("ActivityNet", "main"): [(99, 9204), (99, 1023), (51, 4307), (150, 14534), (150, 1615), (50, 4199)],
    ("ActivityNet", "cls"): [(99, 9204), (99, 1023), (51, 4307), (150, 14534), (150, 1615), (48, 4052)],
    ("VGGSound", "main"): [(138, 70351), (138, 7817), (69, 3102), (207, 81270), (207, 9032), (69, 3450)],
    ("VGGSound", "cls"): [(138, 70351), (138, 7817), (69, 3102), (207, 81270), (207, 9032), (64, 3200)],
}
VIDEOS_USED = {"UCF": 6816, "ActivityNet": 20348, "VGGSound": 93752}


@pytest.fixture(scope="module")
def fetched(shared_splits, tmp_path_factory):
    """The official files fetched (offline, from the shared copy) into a fresh folder and verified."""
    return fetch_official(tmp_path_factory.mktemp("official"), source=shared_splits)


def test_file_table_covers_every_official_file(shared_splits):
    listed = {f.path for f in official_files()}
    on_disk = {str(p.relative_to(shared_splits)) for p in (shared_splits / official.BENCHMARK).rglob("*")
               if p.is_file()}
    assert listed == on_disk
    assert len(listed) == 78  # 3 datasets x (all_class, class names, 2 splits x 6 stages x {txt, csv})


@pytest.mark.parametrize("dataset,variant", sorted(COUNTS))
def test_official_splits_equal_the_shared_copies(fetched, shared_splits, dataset, variant):
    mine = official_splits(fetched, dataset, variant)
    cs = shared_splits / official.BENCHMARK / dataset / "class-split"
    ref = read_splits(cs / official.VARIANTS[variant], cs / "all_class.txt")
    assert mine.all_classes == ref.all_classes
    for stage in STAGES:
        assert sorted(mine.classes[stage]) == sorted(ref.classes[stage]), stage
        assert sorted(mine.videos[stage]) == sorted(ref.videos[stage]), stage
    assert mine.digest() == ref.digest()
    assert [(len(mine.classes[s]), len(mine.videos[s])) for s in STAGES] == COUNTS[(dataset, variant)]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_download_list_of_the_official_splits(fetched, dataset, tmp_path):
    items, problems = download_list(fetched, dataset)
    assert len(items) == VIDEOS_USED[dataset]
    assert all(it.stages.get("main") for it in items)  # the cls split is a subset of the main one
    if dataset == "VGGSound":
        assert problems == []
        assert all(it.end - it.start == 10 and it.youtube_id for it in items)
    if dataset == "UCF":
        assert len({it.group for it in items}) < len(items)  # several clips per source recording
    if dataset == "UCF":
        with pytest.raises(OfficialSplitError, match="UCF101's come from its archive"):
            download_rows(items)
        return
    write_download_list(tmp_path / "list.csv", download_rows(items))
    assert read_download_list(tmp_path / "list.csv") == download_rows(items)


# ------------------------------------------------------------------------------------------------ fetching
def _fake_http(files: dict[str, bytes], fail_first: int = 0):
    calls = []

    class Resp(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def opener(url, timeout=None):
        calls.append(url)
        if len(calls) <= fail_first:
            raise urllib.error.URLError("connection reset")
        path = url.split(f"/{official.AVCA_COMMIT}/", 1)[1]
        return Resp(files[path])

    return opener, calls


def test_fetch_from_github_retries_and_verifies(shared_splits, tmp_path, monkeypatch):
    monkeypatch.setattr("avzsl.fetching.time.sleep", lambda s: None)
    files = {f.path: (shared_splits / f.path).read_bytes() for f in official_files(["UCF"])}
    opener, calls = _fake_http(files, fail_first=2)
    root = fetch_official(tmp_path, datasets=["UCF"], opener=opener)
    assert all(u.startswith(f"https://raw.githubusercontent.com/ExplainableML/AVCA-GZSL/{official.AVCA_COMMIT}/")
               for u in calls)
    assert len(calls) == len(files) + 2
    assert len(official_splits(root, "UCF", "cls").classes["stage_2_test_unseen"]) == 6
    # a second fetch finds the verified files and downloads nothing
    opener2, calls2 = _fake_http(files)
    fetch_official(tmp_path, datasets=["UCF"], opener=opener2)
    assert calls2 == []


def test_fetch_refuses_a_file_with_the_wrong_digest(shared_splits, tmp_path, monkeypatch):
    monkeypatch.setattr("avzsl.fetching.time.sleep", lambda s: None)
    files = {f.path: (shared_splits / f.path).read_bytes() for f in official_files(["UCF"])}
    bad = "avgzsl_benchmark_datasets/UCF/class-split/all_class.txt"
    files[bad] = files[bad] + b"Extra\n"
    opener, _ = _fake_http(files)
    with pytest.raises(OfficialSplitError, match="sha256 .* differs from the pinned"):
        fetch_official(tmp_path, datasets=["UCF"], opener=opener)
    assert not (tmp_path / bad).exists()


def test_fetch_gives_up_after_the_retries(tmp_path, monkeypatch):
    monkeypatch.setattr("avzsl.fetching.time.sleep", lambda s: None)
    opener, calls = _fake_http({}, fail_first=100)
    with pytest.raises(OfficialSplitError, match=r"cannot download .* \(after 3 attempt"):
        fetch_official(tmp_path, datasets=["UCF"], retries=2, opener=opener)
    assert len(calls) == 3


def test_local_source_missing_file(tmp_path):
    with pytest.raises(OfficialSplitError, match="missing from the local source"):
        fetch_official(tmp_path / "out", source=tmp_path, datasets=["VGGSound"])


# ------------------------------------------------------------------------------------------------ fabricated files
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fabricate(root, dataset, classes, rows_by_stage, header, row):
    """A class-split folder in the official layout: the two classes of ``classes`` are seen, the third val-unseen,
    the fourth test-unseen (main split; the cls split drops nothing)."""
    cs = root / official.BENCHMARK / dataset / "class-split"
    _write(cs / "all_class.txt", "".join(c + "\n" for c in classes))
    a, b, vu, tu = classes
    stage_classes = {"stage_1_train": [a, b], "stage_1_val_seen": [a, b], "stage_1_val_unseen": [vu],
                     "stage_2_train": [a, b, vu], "stage_2_test_seen": [a, b, vu], "stage_2_test_unseen": [tu]}
    for split in ("main_split", "cls_split"):
        for stage in STAGES:
            _write(cs / split / f"{stage}.txt", "".join(c + "\n" for c in stage_classes[stage]))
            vids = [v for s in ((stage,) if stage != "stage_2_train" else
                                ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"))
                    for v in rows_by_stage[s]]
            _write(cs / split / f"{stage}.csv", header + "\n" + "".join(row(v, c, classes.index(c)) + "\n"
                                                                       for v, c in vids))
    return root


def test_vggsound_manifest_from_fabricated_files(tmp_path):
    classes = ["dog barking", "rain", "train horn", "wind chime"]
    rows = {"stage_1_train": [("a_b-c_000010", "dog barking"), ("xyz_000000", "rain")],
            "stage_1_val_seen": [("a_b-c_000030", "dog barking"), ("xy2_000005", "rain")],
            "stage_1_val_unseen": [("tt_000100", "train horn")],
            "stage_2_test_seen": [("q_000001", "dog barking"), ("r_000002", "rain"), ("s_000003", "train horn")],
            "stage_2_test_unseen": [("w_001234", "wind chime")]}

    def row(v, c, code):
        yid, start = v.rsplit("_", 1)
        return f"{yid},{int(start)},{c},train,{v},{code},x"

    root = _fabricate(tmp_path, "VGGSound", classes, rows,
                      "youtube_id,start_seconds,label,split,filename,label_code,category", row)
    items, problems = download_list(root, "VGGSound")
    by = {it.video_id: it for it in items}
    assert problems == [] and len(items) == 9
    assert (by["a_b-c_000010"].youtube_id, by["a_b-c_000010"].start, by["a_b-c_000010"].end) == ("a_b-c", 10, 20)
    assert (by["w_001234"].start, by["w_001234"].end) == (1234, 1244)
    assert by["a_b-c_000030"].group == by["a_b-c_000010"].group == "a_b-c"
    assert by["tt_000100"].stages["main"] == ["stage_1_val_unseen", "stage_2_train"]
    rows_m = manifest_rows(items)
    assert {r.video_id for r in rows_m} == set(by) and all(r.path.endswith(".mp4") for r in rows_m)


def test_activitynet_manifest_resolves_segments(tmp_path):
    classes = ["Archery", "Canoeing", "Knitting", "Tango"]
    rows = {"stage_1_train": [("AAA_0", "Archery"), ("BBB_1", "Canoeing")],
            "stage_1_val_seen": [("AAA_1", "Archery"), ("CCC_0", "Canoeing")],
            "stage_1_val_unseen": [("DDD_0", "Knitting")],
            "stage_2_test_seen": [("EE_E_0", "Archery"), ("FFF_0", "Canoeing"), ("DDD_1", "Knitting")],
            "stage_2_test_unseen": [("GGG_0", "Tango"), ("HHH_5", "Tango")]}
    root = _fabricate(tmp_path, "ActivityNet", classes, rows, "filename,label_code,label",
                      lambda v, c, code: f"{v},{code},{c}")

    def seg(s, e, label):
        return {"segment": [s, e], "label": label}

    db = {"database": {
        "AAA": {"annotations": [seg(1.5, 7.25, "Archery"), seg(20, 30, "Archery")]},
        "BBB": {"annotations": [seg(0, 1, "Canoeing"), seg(3, 9.5, "Canoeing")]},
        "CCC": {"annotations": [seg(2, 4, "Canoeing")]},
        "DDD": {"annotations": [seg(0, 5, "Knitting"), seg(6, 12, "Knitting")]},
        "EE_E": {"annotations": [seg(1, 2, "Archery")]},
        "FFF": {"annotations": [seg(1, 2, "Brushing teeth")]},  # label disagrees with the split
        "GGG": {"annotations": [seg(10, 70, "Tango")]},
        # HHH absent
    }}
    ann = tmp_path / "activity_net.v1-3.min.json"
    ann.write_text(json.dumps(db))
    items, problems = download_list(root, "ActivityNet", ann)
    by = {it.video_id: it for it in items}
    assert (by["BBB_1"].youtube_id, by["BBB_1"].start, by["BBB_1"].end) == ("BBB", 3, 9.5)
    assert (by["AAA_1"].start, by["AAA_1"].end) == (20, 30)
    assert by["EE_E_0"].youtube_id == "EE_E" and by["EE_E_0"].start == 1
    assert by["AAA_0"].group == by["AAA_1"].group == "AAA"
    assert by["FFF_0"].start is None and by["HHH_5"].start is None
    assert len(problems) == 2
    assert any("FFF_0" in p and "Brushing teeth" in p for p in problems)
    assert any("HHH" in p and "not in the annotations" in p for p in problems)
    write_download_list(tmp_path / "list.csv", download_rows(items))
    back = {r.video_id: r for r in read_download_list(tmp_path / "list.csv", )}
    assert (back["BBB_1"].youtube_id, back["BBB_1"].start, back["BBB_1"].end, back["BBB_1"].group) == ("BBB", 3, 9.5,
                                                                                                       "BBB")


def test_ucf_manifest_groups_clips_of_one_recording(tmp_path):
    classes = ["ApplyEyeMakeup", "Archery", "BandMarching", "HandstandPushups"]
    rows = {"stage_1_train": [("v_ApplyEyeMakeup_g01_c01", "ApplyEyeMakeup"), ("v_Archery_g02_c01", "Archery")],
            "stage_1_val_seen": [("v_ApplyEyeMakeup_g01_c02", "ApplyEyeMakeup"), ("v_Archery_g03_c01", "Archery")],
            "stage_1_val_unseen": [("v_BandMarching_g05_c01", "BandMarching")],
            "stage_2_test_seen": [("v_ApplyEyeMakeup_g09_c01", "ApplyEyeMakeup"), ("v_Archery_g04_c01", "Archery"),
                                  ("v_BandMarching_g06_c01", "BandMarching")],
            "stage_2_test_unseen": [("v_HandStandPushups_g01_c03", "HandstandPushups")]}
    root = _fabricate(tmp_path, "UCF", classes, rows, "filename,label,label_code",
                      lambda v, c, code: f"{v},{c},{code}")
    items, problems = download_list(root, "UCF")
    by = {it.video_id: it for it in items}
    assert problems == []
    assert by["v_ApplyEyeMakeup_g01_c02"].group == by["v_ApplyEyeMakeup_g01_c01"].group == "v_ApplyEyeMakeup_g01"
    hs = by["v_HandStandPushups_g01_c03"]
    assert hs.label == "HandstandPushups"  # all_class spelling; the file keeps the UCF101 spelling
    assert hs.media == "UCF-101/HandStandPushups/v_HandStandPushups_g01_c03.avi"
    assert hs.youtube_id == "" and hs.start is None


def test_malformed_ids_are_refused():
    with pytest.raises(OfficialSplitError, match="not 'v_<Class>_gXX_cYY'"):
        official.parse_ucf_id("ApplyEyeMakeup_01")
    with pytest.raises(OfficialSplitError, match="start seconds"):
        official.parse_vggsound_id("noseconds")


@pytest.mark.slow
def test_activitynet_annotations_are_pinned_by_commit_and_content(tmp_path):
    import functools
    import http.server
    import subprocess
    import threading
    import urllib.request

    from extractors.sources.official import (
        ACTIVITYNET_ANNOTATIONS_URL,
        OfficialSplitError,
        git_blob_id,
        load_activitynet_annotations,
    )

    assert "/master/" not in ACTIVITYNET_ANNOTATIONS_URL
    body = json.dumps({"database": {"AAA": {"annotations": [{"segment": [1, 2], "label": "Archery"}]}}}).encode()
    (tmp_path / "activity_net.v1-3.min.json").write_bytes(body)
    (tmp_path / "broken.json").write_bytes(b"{not json")
    blob = subprocess.run(["git", "hash-object", str(tmp_path / "activity_net.v1-3.min.json")], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert git_blob_id(body) == blob

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    local = f"http://127.0.0.1:{srv.server_address[1]}/activity_net.v1-3.min.json"

    def to_local(url, timeout=None):  # the pinned GitHub address, answered by the local server
        return urllib.request.urlopen(local if url == ACTIVITYNET_ANNOTATIONS_URL else url, timeout=timeout)

    try:
        with pytest.raises(OfficialSplitError, match=f"not the pinned ActivityNet annotation file.*git blob {blob}"):
            load_activitynet_annotations(ACTIVITYNET_ANNOTATIONS_URL, opener=to_local, retries=1)
        assert load_activitynet_annotations(local, git_blob=blob)["AAA"]["annotations"][0]["label"] == "Archery"
        assert "AAA" in load_activitynet_annotations(local)  # another source: no pinned content to check against
        with pytest.raises(OfficialSplitError, match="git blob"):
            load_activitynet_annotations(local, git_blob="0" * 40)
        with pytest.raises(OfficialSplitError, match="not an ActivityNet annotation file"):
            load_activitynet_annotations(local.replace("activity_net.v1-3.min.json", "broken.json"))
    finally:
        srv.shutdown()
        srv.server_close()
