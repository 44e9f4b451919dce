"""Every parameter is checked while the workflow plans: a misspelt key or value of any backbone, text encoder or
source stops ``snakemake -n`` with one line naming the key and what is allowed, before any download or job. Backbones
and text encoders declare their parameters where they are defined (``declared_params``, ``register(params=...)``);
the check reads a backbone's declaration from its source, so planning imports no torch. A source's parameters are
its block of the configuration schema (datasets.<name>.<source>)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from avzsl.app.workflow_config import check_config, describe_schema_error, schema_error_in
from training.config import ConfigError


def _default() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _check(cfg: dict) -> str:
    """The one line the configuration check stops with (what ``snakemake -n`` prints)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
        check_config(cfg, dry_run=True)
    except WorkflowError as e:
        return describe_schema_error(schema_error_in(e))
    except ConfigError as e:
        return str(e)
    raise AssertionError("the configuration passed")


def _with_backbone(backbone: str, params: dict) -> dict:
    cfg = _default()
    cfg["feature_sets"]["x"] = {"backbone": backbone, "params": params}
    cfg["datasets"]["demo"]["feature_sets"] = ["x"]
    return cfg


BACKBONES = [
    ("selavi", {"placement": "refrence"}, r"feature_sets\.x\.params\.placement: backbone 'selavi' has no parameter "
                                          r"'placement'; known: mode, weights$"),
    ("selavi", {"mode": "referenc"}, r"feature_sets\.x\.params\.mode: 'referenc' is not one of clean, reference"),
    ("c3d", {"mode": "referenc"}, r"\.params\.mode: 'referenc' is not one of clean, reference \(backbone 'c3d'\)"),
    ("c3d", {"channel_order": "bgrr"}, r"\.params\.channel_order: 'bgrr' is not one of bgr, rgb"),
    ("vggish", {"embedding": "quantised"}, r"\.params\.embedding: 'quantised' is not one of quantized, pca, raw"),
    ("vggish", {"pcaa_url": "https://example.org/pca.npz"}, r"\.params\.pcaa_url: backbone 'vggish' has no file "
                                                             r"parameter 'pcaa'; known: .*\bpca\b"),
    ("handcrafted", {"window_second": 1.0}, r"\.params\.window_second: backbone 'handcrafted' has no parameter "
                                            r"'window_second'; known: .*window_seconds"),
    ("handcrafted", {"window_seconds": -1}, r"\.params\.window_seconds: -1 is not a number > 0"),
    ("hf_audio", {"kind": "clapp"}, r"\.params\.kind: 'clapp' is not one of auto, ast, clap"),
    ("open_clip_image", {"frames_per_windows": 4}, r"\.frames_per_windows: .* known: .*frames_per_window"),
    ("torchvision_video", {"weights_nam": "DEFAULT"}, r"\.weights_nam: .* known: .*weights_name"),
    ("selavii", {}, r"feature_sets\.x\.backbone: unknown backbone 'selavii'; known: \[.*'selavi'"),
]


@pytest.mark.parametrize("backbone,params,message", BACKBONES, ids=[f"{b}-{next(iter(p), '')}" for b, p, _ in BACKBONES])
def test_a_misspelt_backbone_parameter_stops_the_plan(backbone, params, message):
    line = _check(_with_backbone(backbone, params))
    assert "\n" not in line and re.search(message, line), line


def test_a_plugin_backbone_is_checked_by_its_declared_names(tmp_path, monkeypatch):
    """An entry-point plugin (tests/test_backbone_plugins.py's example) is read from its file, not imported."""
    from test_backbone_plugins import install_plugin

    install_plugin(tmp_path, monkeypatch, "avzsl_plan_plugin")
    line = _check(_with_backbone("mean_level", {"scal": 2.0}))
    assert line.endswith("params.scal: backbone 'mean_level' has no parameter 'scal'; known: hop_seconds, scale, "
                         "window_seconds"), line
    assert "avzsl_plan_plugin" not in sys.modules
    cfg = _with_backbone("mean_level", {"scale": 2.0})
    check_config(_validated(cfg), dry_run=True)


def _validated(cfg: dict) -> dict:
    from snakemake.utils import validate

    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


TEXT = [
    ("minilm", {"batch_sise": 8}, r"text encoder 'minilm': unknown parameter 'batch_sise' .*accepted: \['batch_size'"),
    ("minilm", {"batch_size": 0}, r"text\.minilm\.batch_size: 0 is not an integer >= 1"),
    ("fasttext", {"reader": "gensm"}, r"text\.fasttext\.reader: 'gensm' is not one of gensim, fasttext"),
    ("word2vec", {"format": "binry"}, r"text\.word2vec\.format: 'binry' is not one of auto, binary, text, glove"),
    ("word_vectors", {"readr": "stream"}, r"unknown parameter 'readr' .*accepted: .*'reader'"),
    ("glove", {"limit": 0}, r"text\.glove\.limit: 0 is not an integer >= 1"),
    ("clip", {"templates": ["a video of"]}, r"text\.clip\.templates: \['a video of'\] is not a string or a list of "
                                            r"strings, each with '\{\}'"),
]


@pytest.mark.parametrize("encoder,params,message", TEXT, ids=[e for e, _, _ in TEXT])
def test_a_misspelt_text_encoder_parameter_stops_the_plan(encoder, params, message):
    cfg = _default()
    cfg["text"] = {"encoder": encoder, "params": {"path": "unused.bin", **params} if encoder != "minilm" else params}
    line = _check(cfg)
    assert "\n" not in line and re.search(message, line), line


SOURCES = [
    ("demo", {"demo": {"n_visual": 3}}, r"unknown key n_visual in datasets\.d\.demo; known: .*n_visuals"),
    ("local", {"local": {"roots": "videos"}}, r"unknown key roots in datasets\.d\.local; known: descriptions, root$"),
    ("download", {"download": {"sections": "pyva"}},
     r"datasets\.d\.download\.sections: 'pyva' is not one of \['auto', 'pyav', 'yt-dlp'\]"),
    ("ucf_archive", {"ucf_archive": {"retrys": 3}}, r"unknown key retrys in datasets\.d\.ucf_archive; known: .*retries"),
    ("released_avca", {"released_avca": {"layout": "tcaff"}},
     r"datasets\.d\.released_avca\.layout: 'tcaff' is not one of \['avca', 'tcaf'\]"),
]


@pytest.mark.parametrize("source,block,message", SOURCES, ids=[s for s, _, _ in SOURCES])
def test_a_misspelt_source_parameter_stops_the_plan(source, block, message):
    cfg = _default()
    cfg["datasets"]["d"] = {"source": source, **block}
    line = _check(cfg)
    assert "\n" not in line and re.search(message, line), line


def test_every_builtin_backbone_declaration_reads_as_the_class_declares_it():
    from extractors.backbone_params import declared_params
    from extractors.backbones import BACKBONES

    builtin = {n: c for n, c in BACKBONES.items() if c.__module__.startswith("extractors.backbones.")}
    assert len(builtin) >= 7  # other test modules register backbones of their own
    for name, cls in builtin.items():
        assert cls.declared_params, f"backbone {name} declares no parameters"
        assert declared_params(name) == cls.declared_params, name


def test_checking_every_backbone_imports_no_torch():
    feature_sets = {name: {"backbone": name, "params": {}} for name in
                    ("selavi", "c3d", "vggish", "handcrafted", "hf_audio", "open_clip_image", "torchvision_video")}
    script = f"""
import json, sys
from snakemake.utils import validate
import yaml
from avzsl.app.workflow_config import check_config
cfg = yaml.safe_load(open({str(REPO / "config" / "config.yaml")!r}))
cfg["feature_sets"] = json.loads({json.dumps(json.dumps(feature_sets))})
cfg["datasets"]["demo"]["feature_sets"] = sorted(cfg["feature_sets"])
validate(cfg, {str(REPO / "workflow" / "schemas" / "config.schema.yaml")!r})
check_config(cfg, dry_run=True)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("override,message", [
    ({"feature_sets": {"handcrafted": {"backbone": "selavi", "params": {"placement": "refrence"}}}},
     "config: feature_sets.handcrafted.params.placement: backbone 'selavi' has no parameter 'placement'; known: "
     "mode, weights"),
    ({"text": {"encoder": "fasttext", "params": {"path": "x.bin", "reader": "gensm"}}},
     "config: text.fasttext.reader: 'gensm' is not one of gensim, fasttext (text encoder 'fasttext')"),
    ({"datasets": {"demo": {"source": "demo", "demo": {"n_visual": 3}}}},
     "config: unknown key n_visual in datasets.demo.demo; known: audio_gap, audio_snr_db, broken_files, "
     "clips_per_class, difficulty, max_seconds, min_seconds, n_sounds, n_visuals, seed, visual_gap"),
], ids=["backbone", "text encoder", "source"])
@pytest.mark.slow
def test_snakemake_dry_run_stops_with_the_line(tmp_path, override, message):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(override))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet", "rules", "--cores", "1",
           "--configfile", str(REPO / "config" / "config.yaml"), str(tmp_path / "bad.yaml")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert message in (proc.stdout + proc.stderr).splitlines(), proc.stdout[-2000:]
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()
