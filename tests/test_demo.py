import hashlib

from extractors.sources.demo import DemoSpec, classes, generate
from extractors.sources.manifest import read_class_names, read_manifest


def test_demo_is_reproducible_byte_for_byte(tmp_path):
    spec = DemoSpec(n_visuals=2, n_sounds=2, clips_per_class=2, min_seconds=1, max_seconds=1.5, broken_files=False)
    digests = []
    for run, workers in (("a", 1), ("b", 2)):
        m = generate(tmp_path / run, spec, workers=workers, progress=False)
        digests.append({r.video_id: hashlib.md5((m.parent / r.path).read_bytes()).hexdigest()
                        for r in read_manifest(m)})
    assert digests[0] == digests[1]


def test_default_demo_size_and_compositional_names(tmp_path):
    spec = DemoSpec()
    cls = classes(spec)
    assert len(cls) >= 24 and len(cls) * spec.clips_per_class >= 400
    for c in cls:
        assert c["manual"] == f"{c['visual']} with {c['sound']}"
    assert len({c["visual"] for c in cls}) * len({c["sound"] for c in cls}) == len(cls)


def test_manifest_and_class_names(tmp_path):
    m = generate(tmp_path, DemoSpec(n_visuals=2, n_sounds=1, clips_per_class=2, min_seconds=1, max_seconds=1.2),
                 workers=1, progress=False)
    rows = read_manifest(m)
    names = read_class_names(tmp_path / "class_names.csv")
    assert len(rows) == 2 * 2 + 2  # plus the two deliberately broken files
    assert {r.label for r in rows} == set(names)
    assert names["RedBallBouncing_LowHum"] == "a red ball bouncing with a low hum"
