"""Backbones from other packages (entry points) and the built-in plugin backbones, on tiny models made here."""

import json
import sys

import numpy as np
import pytest
import torch

from extractors.backbones import base
from extractors.backbones.base import BackboneError, build_backbone, build_feature_set
from extractors.media.decode import decode
from extractors.sources.demo import DemoSpec, write_clip

PLUGIN_MODULE = '''
import torch
from extractors.backbones.base import Backbone, InputFormat, ModalitySpec, audio_windows


class MeanLevel(Backbone):
    """Audio only: per window the mean and RMS of the samples, times ``scale``."""
    default_params = {"scale": 1.0, "window_seconds": 0.5, "hop_seconds": 0.25}

    def __init__(self, scale, window_seconds, hop_seconds):
        super().__init__(scale=scale, window_seconds=window_seconds, hop_seconds=hop_seconds)
        self.scale, self.window = scale, window_seconds
        self.modalities = ("audio",)
        self.specs = {"audio": ModalitySpec(window_seconds, hop_seconds, 2)}
        self.input_format = InputFormat(sample_rate=8000)

    def window_data(self, clip, modality, starts):
        return torch.from_numpy(audio_windows(clip.audio, clip.sample_rate, starts, self.window, clip.sample_start))

    def embed(self, modality, x):
        return self.scale * torch.stack([x.mean(1), x.pow(2).mean(1).sqrt()], 1)
'''


def install_plugin(folder, monkeypatch, module: str) -> None:
    """A real installed-distribution layout on sys.path: ``module``.py (:data:`PLUGIN_MODULE`) plus a *.dist-info
    whose entry_points.txt registers its backbone as ``mean_level``."""
    (folder / f"{module}.py").write_text(PLUGIN_MODULE)
    dist = module.replace("_", "-")
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[avzsl.backbones]\nmean_level = {module}:MeanLevel\n")
    monkeypatch.syspath_prepend(str(folder))


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "avzsl_test_plugin")
    yield "mean_level"
    base.BACKBONES.pop("mean_level", None)
    sys.modules.pop("avzsl_test_plugin", None)


def test_entry_point_backbone_is_found_lazily_and_checks_params(plugin_dist):
    assert "mean_level" not in base.BACKBONES  # not loaded before it is asked for
    assert "mean_level" in base.available_backbones()
    b = build_backbone("mean_level", {"scale": 2.0})
    assert type(b).__module__ == "avzsl_test_plugin" and "mean_level" in base.BACKBONES
    assert b.specs["audio"].window_seconds == 0.5 and b.specs["audio"].hop_seconds == 0.25
    with pytest.raises(BackboneError, match=r"unknown parameter\(s\) \['scal'\]; known: \['hop_seconds', 'scale'"):
        build_backbone("mean_level", {"scal": 2.0})


def test_unknown_backbone_lists_registry_and_plugins(plugin_dist):
    with pytest.raises(BackboneError, match="unknown backbone 'nope'.*mean_level.*avzsl.backbones"):
        build_backbone("nope")


def test_feature_set_combines_a_plugin_audio_with_a_builtin_video(plugin_dist):
    b = build_feature_set({"backbone": "handcrafted", "audio": {"backbone": "mean_level", "params": {}}})
    assert b.dim("audio") == 2 and b.dim("video") == 96
    assert b.input_format.sample_rate == 8000 and b.input_format.fps == 8.0
    with pytest.raises(BackboneError, match=r"feature_sets.x: backbone 'mean_level' has no video modality"):
        build_feature_set({"backbone": "mean_level"}, "feature_sets.x")
    with pytest.raises(BackboneError, match=r"feature_sets.x.video: must be a mapping with a backbone"):
        build_feature_set({"backbone": "handcrafted", "video": {"params": {}}}, "feature_sets.x")
    with pytest.raises(BackboneError, match=r"feature_sets.x.audio: backbone 'handcrafted': unknown parameter"):
        build_feature_set({"backbone": "mean_level", "audio": {"backbone": "handcrafted", "params": {"q": 1}},
                           "video": {"backbone": "handcrafted"}}, "feature_sets.x")


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("plug") / "c.mp4"
    write_clip(p, np.random.default_rng(3), 1, 2, DemoSpec(min_seconds=2.2, max_seconds=2.4))
    return p


def _clip_for(b, path):
    f = b.input_format
    return decode(path, fps=f.fps or 1.0, sample_rate=f.sample_rate or 16000, short_side=f.short_side,
                  channels=f.channels)


def test_torchvision_video_names_its_weights_per_model():
    with pytest.raises(BackboneError, match=r"download https://download.pytorch.org/models/mc3_18-[0-9a-f]+\.pth"):
        build_backbone("torchvision_video", {"model": "mc3_18"})
    with pytest.raises(BackboneError, match="unknown model 'r4d'"):
        build_backbone("torchvision_video", {"model": "r4d", "weights": "w.pth"})


def test_torchvision_video_features_before_the_classifier(tmp_path, clip_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.video.mc3_18(num_classes=400)
    torch.save(net.state_dict(), tmp_path / "mc3.pth")
    b = build_backbone("torchvision_video", {"model": "mc3_18", "weights": str(tmp_path / "mc3.pth"), "fps": 8,
                                             "frames_per_window": 4, "resize": [36, 48], "crop": [32, 32]}).eval()
    assert b.specs["video"].window_seconds == 0.5 and b.dim("video") == 512 and len(b.categories) == 400
    clip = _clip_for(b, clip_path)
    w = b.preprocess(clip)
    assert w["video"].shape[1:] == (4, 32, 32, 3) and w["video"].dtype == torch.uint8
    assert len(w["video"]) == int((clip.duration - 0.5) / 0.5 + 1e-6) + 1 == 4
    np.testing.assert_allclose(np.diff(w.times["video"][:, 0]), 0.5)
    with torch.no_grad():
        f = b.embed("video", w["video"])
        # the same computation as torchvision's model without fc
        x = (w["video"].permute(0, 4, 1, 2, 3).float() / 255 - b.mean) / b.std
        net.fc = torch.nn.Identity()
        net.eval()
        torch.testing.assert_close(f, net(x))
    assert f.shape == (len(w["video"]), 512)


def test_torchvision_classifier_positions():
    from extractors.backbones.torchvision_video import strip_classifier

    for name, dim in [("s3d", 1024), ("swin3d_t", 768)]:
        net = torchvision_model(name)
        assert strip_classifier(net) == dim


def torchvision_model(name):
    import torchvision

    return torchvision.models.get_model(name, weights=None)


def test_hf_audio_ast_from_a_local_folder(tmp_path, clip_path):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_length=100, num_mel_bins=32)
    ASTModel(cfg).save_pretrained(tmp_path / "ast")
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(tmp_path / "ast")
    b = build_backbone("hf_audio", {"weights": str(tmp_path / "ast")}).eval()
    assert b.kind == "ast" and b.specs["audio"].window_seconds == 1.0 and b.dim("audio") == 32
    w = b.preprocess(_clip_for(b, clip_path))
    assert w["audio"].shape == (2, 100, 32)
    with torch.no_grad():
        f = b.embed("audio", w["audio"])
        ref = ASTModel.from_pretrained(tmp_path / "ast").eval()(input_values=w["audio"][1:]).pooler_output
    assert f.shape == (2, 32)
    torch.testing.assert_close(f[1:], ref)


def test_hf_audio_clap_audio_tower(tmp_path, clip_path):
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(0)
    cfg = ClapConfig(text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 32, "vocab_size": 100},
                     audio_config={"depths": [1, 1], "num_attention_heads": [1, 2], "hidden_size": 32,
                                   "patch_embeds_hidden_size": 16, "spec_size": 64, "window_size": 4,
                                   "num_mel_bins": 16, "patch_stride": [4, 4], "patch_size": 4},
                     projection_dim=8)
    ClapModel(cfg).save_pretrained(tmp_path / "clap")
    fx = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, max_length_s=1, hop_length=160,
                              fft_window_size=400)
    fx.save_pretrained(tmp_path / "clap")
    b = build_backbone("hf_audio", {"weights": str(tmp_path / "clap")}).eval()
    assert b.kind == "clap" and b.dim("audio") == 8 and b.input_format.sample_rate == 16000
    w = b.preprocess(_clip_for(b, clip_path))
    with torch.no_grad():
        f = b.embed("audio", w["audio"])
    assert f.shape == (len(w["audio"]), 8) and torch.isfinite(f).all()


def test_open_clip_image_frames_averaged(tmp_path, clip_path):
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed (pip install open_clip_torch)")
    cfg = {"embed_dim": 8,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-clip.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip").state_dict(), tmp_path / "tiny.pt")
    b = build_backbone("open_clip_image", {"model_config": str(tmp_path / "tiny-clip.json"),
                                           "weights": str(tmp_path / "tiny.pt"), "frames_per_window": 2}).eval()
    assert b.dim("video") == 8 and b.input_format.fps == 2.0
    w = b.preprocess(_clip_for(b, clip_path))
    assert w["video"].shape == (2, 2, 32, 32, 3)
    with torch.no_grad():
        f = b.embed("video", w["video"])
        ref = torch.nn.functional.normalize(b.visual((w["video"][0].permute(0, 3, 1, 2).float() / 255 - b.mean)
                                                     / b.std), dim=-1).mean(0)
    torch.testing.assert_close(f[0], ref)
