"""The SeLaVi, C3D and VGGish backbones on checkpoints fabricated in the official key layouts (random tensors of
the right shapes): strict loading, refusal of checkpoints that would run code, preprocessing constants by hand,
dimensions, window counts and stored window times (generated clips and the real bigbuckbunny.mp4)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from media_fixtures import write_av

from bench.official_layouts import selavi_state, write_c3d, write_selavi, write_vggish
from extractors.backbones.base import BackboneError, build_backbone, build_feature_set, stream_windows
from extractors.backbones.c3d import MEAN, STD, normalise
from extractors.backbones.selavi import SPEC_MEAN, SPEC_STD, ReferenceGeometry, SeLaViEncoders, log_fbank
from extractors.backbones.vggish import log_mel, mel_matrix, postprocess
from extractors.checkpoints import CheckpointError, load_checkpoint, load_state_dict, load_strict
from extractors.extract import ExtractOptions, extract_shard
from extractors.feature_store import FeatureStore
from extractors.media.decode import MediaError, decode, decode_stream
from extractors.sources.manifest import ManifestRow, write_manifest

OPTS = dict(workers=0, progress=False, batch_windows=2, videos_per_load=1, device="cpu")  # compared with CPU runs


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Random weights in the official layouts (bench/official_layouts.py)."""
    d = tmp_path_factory.mktemp("ckpt")
    return {"selavi": write_selavi(d / "selavi_vgg_sound.pth", selavi_state()), "c3d": write_c3d(d / "c3d.pickle"),
            **write_vggish(d)}


def cls_set(ckpt, **vggish):
    return {"audio": {"backbone": "vggish", "params": {"weights": str(ckpt["vggish_fc"]), "pca": str(ckpt["pca"]),
                                                     **vggish}},
            "video": {"backbone": "c3d", "params": {"weights": str(ckpt["c3d"])}}}


# ------------------------------------------------------------------------------------------ loading
@pytest.mark.slow
def test_strict_loading_of_the_official_layouts(ckpt):
    raw = load_checkpoint(ckpt["selavi"])
    assert set(raw) == {"epoch", "dist", "model", "optimizer", "selflabels", "amp"}
    state = load_state_dict(ckpt["selavi"])  # "model", DDP prefix removed
    assert all(not k.startswith("module.") for k in state)
    nets = SeLaViEncoders()
    dropped = load_strict(nets, state, "selavi", {"video_network.base.": "video.", "audio_network.base.": "audio."},
                          drop=("mlp_v", "mlp_a"))
    assert len(dropped) == 60
    torch.testing.assert_close(nets.video.stem[0].weight, state["video_network.base.stem.0.weight"])
    assert nets.audio.conv1.weight.shape == (64, 1, 7, 7)
    assert state["video_network.base.stem.0.weight"].shape[0] == 45
    c3d = build_backbone("c3d", {"weights": str(ckpt["c3d"])})
    assert c3d.dim("video") == 4096 and c3d.modalities == ("video",)
    for naming in ("vggish_fc", "vggish_embeddings"):
        b = build_backbone("vggish", {"weights": str(ckpt[naming]), "pca": str(ckpt["pca"])})
        assert b.dim("audio") == 128 and b.modalities == ("audio",)
    a = build_backbone("vggish", {"weights": str(ckpt["vggish_fc"]), "embedding": "raw"})
    e = build_backbone("vggish", {"weights": str(ckpt["vggish_embeddings"]), "embedding": "raw"})
    x = torch.randn(2, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.embed("audio", x), e.embed("audio", x))


@pytest.mark.slow
def test_a_renamed_or_reshaped_key_is_listed(ckpt, tmp_path):
    state = {f"module.{k}": v for k, v in load_state_dict(ckpt["selavi"]).items()}
    good = "module.video_network.base.layer1.0.conv1.0.0.weight"
    state[good.replace("weight", "weigth")] = state.pop(good)
    write_selavi(tmp_path / "bad.pth", state)
    with pytest.raises(BackboneError) as e:
        build_backbone("selavi", {"weights": str(tmp_path / "bad.pth")})
    msg = str(e.value)
    assert "bad.pth" in msg and "missing (1): ['video_network.base.layer1.0.conv1.0.0.weight']" in msg
    assert "unexpected (1): ['video_network.base.layer1.0.conv1.0.0.weigth']" in msg
    c3d = load_state_dict(ckpt["c3d"])
    c3d["fc7.weight"] = c3d["fc7.weight"][:100]
    del c3d["conv1.bias"]
    torch.save(c3d, tmp_path / "c3d.pickle", _use_new_zipfile_serialization=False)
    with pytest.raises(BackboneError, match=r"missing \(1\): \['conv1.bias'\].*wrong shape \(1\): \['fc7.weight: "
                                            r"\(100, 4096\) in the file, \(4096, 4096\) expected'\]"):
        build_backbone("c3d", {"weights": str(tmp_path / "c3d.pickle")})
    vgg = load_state_dict(ckpt["vggish_fc"])
    vgg["classifier.weight"] = torch.zeros(3)
    torch.save(vgg, tmp_path / "v.pth")
    with pytest.raises(BackboneError, match=r"unexpected \(1\): \['classifier.weight'\]"):
        build_backbone("vggish", {"weights": str(tmp_path / "v.pth"), "embedding": "raw"})


class _Payload:
    """Unpickling this opens (creates) ``marker`` for writing: a stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_and_not_run(ckpt, tmp_path):
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control))).close()
    assert control.exists()  # the payload is live
    marker = tmp_path / "marker"
    raw = tmp_path / "c3d.pickle"  # a raw pickle, as an old-style checkpoint would be
    raw.write_bytes(pickle.dumps({"conv1.weight": _Payload(marker)}, protocol=2))
    zipped = tmp_path / "selavi.pth"
    torch.save({"model": {"module.x": torch.zeros(1)}, "extra": _Payload(marker)}, zipped)
    for path, name in ((raw, "c3d"), (zipped, "selavi")):
        with pytest.raises(CheckpointError, match=f"refusing to load {path}: .*asks for [a-z_.]*open.*could run "
                                                  "code; nothing in it was executed"):
            load_checkpoint(path)
        with pytest.raises(BackboneError, match="refusing to load"):
            build_backbone(name, {"weights": str(path)})
    assert not marker.exists()


def test_the_pca_and_the_reference_modes_are_checked(ckpt):
    """Weights without which a backbone cannot build are checked for every backbone (tests/test_backbone_contract.py);
    these are VGGish's second file and the settings a reference mode fixes."""
    with pytest.raises(BackboneError, match=r"vggish_pca_params.npz.*set the parameter 'pca'"):
        build_backbone("vggish", {"weights": str(ckpt["vggish_fc"])})
    with pytest.raises(BackboneError, match=r"params\.mode: 'random' is not one of clean, reference"):
        build_backbone("selavi", {"weights": str(ckpt["selavi"]), "mode": "random"})
    with pytest.raises(BackboneError, match="mode 'reference' fixes fps to 25.0"):
        build_backbone("c3d", {"weights": str(ckpt["c3d"]), "mode": "reference", "fps": 30})
    with pytest.raises(BackboneError, match="mode 'reference' fixes rounding"):
        build_backbone("vggish", {"weights": str(ckpt["vggish_fc"]), "pca": str(ckpt["pca"]), "mode": "reference",
                                  "rounding": "round"})


# ------------------------------------------------------------------------------------------ preprocessing by hand
def test_selavi_audio_spectrogram_constants():
    from extractors.backbones.selavi import fbank_matrix

    fb = fbank_matrix(257, 1024, 44100)
    assert fb.shape == (257, 513)
    silent = log_fbank(np.zeros(44100), 44100, fb)
    assert silent.shape == (99, 257)  # 20 ms frames every 10 ms over 1 s
    np.testing.assert_allclose(silent, np.log(np.finfo(float).eps))
    assert SPEC_MEAN == 1.93 and SPEC_STD == 17.89
    t = np.arange(44100) / 44100
    tone = log_fbank(8000 * np.sin(2 * np.pi * 3000 * t), 44100, fb)
    peak = tone.mean(0).argmax()
    centre = np.argmax(fb[peak]) * 44100 / 1024
    assert abs(centre - 3000) < 100
    # an impulse after pre-emphasis 0.97 is [1, -0.97]: power spectrum |1 - 0.97 e^-iw|^2 / nfft
    x = np.zeros(44100)
    x[0] = 1.0
    power = (1 + 0.97 ** 2 - 2 * 0.97 * np.cos(2 * np.pi * np.arange(513) / 1024)) / 1024
    np.testing.assert_allclose(np.exp(log_fbank(x, 44100, fb)[0]), np.maximum(fb @ power, np.finfo(float).eps),
                               rtol=1e-9)


def test_selavi_window_data(ckpt, tmp_path):
    b = build_backbone("selavi", {"weights": str(ckpt["selavi"])})
    clip = decode(write_av(tmp_path / "a.mp4", seconds=1.5, size=(80, 60), sample_rate=44100), fps=30,
                  sample_rate=44100, short_side=112)
    w = b.preprocess(clip)
    assert w["video"].shape == (1, 30, 112, 112, 3) and w["video"].dtype == torch.uint8
    assert w["audio"].shape == (1, 1, 257, 99)
    silent = type(clip)(frames=clip.frames, fps=30, audio=np.zeros_like(clip.audio), sample_rate=44100,
                        duration=clip.duration)
    spec = b.preprocess(silent, ["audio"])["audio"]
    torch.testing.assert_close(spec, torch.full_like(spec, (math.log(np.finfo(float).eps) - 1.93) / 17.89))
    ref = build_backbone("selavi", {"weights": str(ckpt["selavi"]), "mode": "reference"})
    fmt = ref.input_format
    assert (fmt.frames, fmt.sample_format, fmt.short_side) == ("native", "s16", None)
    full = decode(write_av(tmp_path / "b.mp4", seconds=2.5, size=(80, 60), sample_rate=44100),
                  **fmt.decode_options())
    assert full.frame_pts is not None and full.header.frames == len(full.frames)
    v = ref.preprocess(full, ["video"])["video"]
    assert v.shape == (1, 30, 112, 112, 3) and v.dtype == torch.float32  # n = int(2.5) - 1 = 1 window
    with pytest.raises(MediaError, match="places no window in a video under 2 s"):
        ref.preprocess(decode(tmp_path / "a.mp4", **fmt.decode_options()))


def test_selavi_reference_placement():
    def starts(frames, fps):
        return ReferenceGeometry(frames, fps, duration=frames * 512).start_frames().tolist()

    assert starts(250, 25.0) == [int(22.5 * i) for i in range(9)]  # VGGSound: 9 windows 0.9 s apart
    assert starts(210, 30.0) == [18 * i for i in range(6)]  # UCF, 7 s: bunched at the start
    assert starts(625, 25.0) == [20 * i for i in range(24)]  # 24 windows: n // 10 + 1 = 3
    # 29.97 fps: the start is truncated to a frame
    fps = 30000 / 1001
    assert starts(300, fps) == [int((300 - fps) * (100 * i) / 1000) for i in range(9)]
    with pytest.raises(MediaError, match="under 2 s"):
        starts(49, 25.0)
    # a 25 fps window: the 25 frames in range plus one after, 30 picked by linspace(0, 24, 30): repeats
    geo = ReferenceGeometry(250, 25.0, duration=250 * 512)
    clip = type("C", (), {"frame_pts": np.arange(250) * 512, "n_frames": 250})()
    idx = geo.frame_indices(22, clip)
    assert idx.tolist()[:8] == [22, 22, 23, 24, 25, 26, 26, 27] and idx[-1] == 22 + 24
    assert geo.pts_range(22) == (22 * 512, 46 * 512)


def test_selavi_reference_placement_streams_like_the_whole_clip(ckpt, tmp_path):
    b = build_backbone("selavi", {"weights": str(ckpt["selavi"]), "mode": "reference"})
    assert not b.streamable
    path = write_av(tmp_path / "r.mp4", seconds=3.6, fps=10, sample_rate=44100)
    kw = b.input_format.decode_options()
    whole = b.preprocess(decode(path, **kw))
    pieces = list(stream_windows(b, decode_stream(path, chunk_seconds=1.0, **kw)))
    assert len(pieces) > 2 and all(not p.windows for p in pieces[:-1])
    last = pieces[-1].windows
    # 36 frames at 10 fps: n = 2, window 1 at int((36 - 10) * 100 / 1000) = frame 2
    np.testing.assert_allclose(whole.times["video"][:, 0], [0, 0.2])
    for m in ("audio", "video"):
        np.testing.assert_allclose(last.times[m], whole.times[m])
        torch.testing.assert_close(last[m], whole[m])


def test_c3d_bgr_mean_std_padding_and_negative(ckpt, tmp_path):
    red = torch.zeros(1, 1, 3, dtype=torch.uint8)
    red[..., 0] = 255
    expect = torch.tensor([(0 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (1 - MEAN[2]) / STD[2]])
    torch.testing.assert_close(normalise(red)[0, 0], expect)
    torch.testing.assert_close(normalise(red, bgr=False)[0, 0],
                               torch.tensor([(1 - MEAN[0]) / STD[0], -MEAN[1] / STD[1], -MEAN[2] / STD[2]]))
    b = build_backbone("c3d", {"weights": str(ckpt["c3d"])})
    clip = decode(write_av(tmp_path / "c.mp4", seconds=1.0, fps=25, size=(96, 72)), fps=25, sample_rate=16000,
                  short_side=128)
    assert len(clip.frames) == 25
    w = b.preprocess(clip)
    x = w["video"]
    assert x.shape == (2, 16, 112, 112, 3) and x.dtype == torch.float32
    np.testing.assert_allclose(w.times["video"], [[0, 0.64], [0.64, 1.0]])
    assert (x[1, 9:] == 0).all() and (x[1, :9] != 0).any()  # frames 16..24 real, the rest zeros
    neg = build_backbone("c3d", {"weights": str(ckpt["c3d"]), "colour_negative": True, "decode_short_side": None})
    assert neg.input_format.short_side is None and b.input_format.short_side == 128
    frames = clip.frames.copy()
    frames[:] = np.array([0, 1, 255], np.uint8)
    flat = type(clip)(frames=frames, fps=25, audio=clip.audio, sample_rate=16000, duration=1.0)
    got = neg.preprocess(flat)["video"][0, 0, 50, 50]
    # RGB (0, 1, 255) -> negative (0, 255, 1) -> BGR (1, 255, 0)
    torch.testing.assert_close(got, (torch.tensor([1, 255, 0]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD))


def test_vggish_log_mel_and_quantisation():
    mel = mel_matrix()
    assert mel.shape == (257, 64) and (mel[0] == 0).all() and (mel.sum(0) > 0).all()
    silent = log_mel(np.zeros((1, 15600)), mel)
    assert silent.shape == (1, 96, 64)
    np.testing.assert_allclose(silent, np.log(0.01))
    eye, zero = torch.eye(128, dtype=torch.float64), torch.zeros(128, dtype=torch.float64)
    emb = torch.zeros(1, 128)
    emb[0, :6] = torch.tensor([-3.0, -2.0, 0.0, 1.99, 2.0, 5.0])
    q = postprocess(emb, eye, zero)
    assert q[0, :6].tolist() == [0, 0, 127, 254, 255, 255]  # (x + 2) * 255 / 4, truncated
    means = torch.full((128,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(postprocess(emb, eye, means, quantize=False)[0, :3], torch.tensor([-3.5, -2.5, -0.5]))


def test_vggish_quantisation_rounding_and_a_numpy_pca_pth(ckpt, tmp_path):
    eye, zero = torch.eye(128, dtype=torch.float64), torch.zeros(128, dtype=torch.float64)
    emb = torch.zeros(1, 128)
    emb[0, 0] = 0.0  # (0 + 2) * 63.75 = 127.5
    assert postprocess(emb, eye, zero)[0, 0] == 127 and postprocess(emb, eye, zero, rounding="round")[0, 0] == 128
    with np.load(ckpt["pca"]) as z:  # torchvggish ships its PCA as a .pth of numpy arrays
        torch.save({"pca_eigen_vectors": z["pca_eigen_vectors"], "pca_means": z["pca_means"]}, tmp_path / "p.pth")
    b = build_backbone("vggish", {"weights": str(ckpt["vggish_fc"]), "pca": str(tmp_path / "p.pth"),
                                  "rounding": "round"})
    with np.load(ckpt["pca"]) as z:
        np.testing.assert_array_equal(b.pca_vecs.numpy(), z["pca_eigen_vectors"])


# ------------------------------------------------------------------------------------------ the reference code
def test_selavi_spectrogram_equals_python_speech_features():
    psf = pytest.importorskip("python_speech_features", reason="python_speech_features is not installed")
    from extractors.backbones.selavi import fbank_matrix

    fb = fbank_matrix(257, 1024, 44100)
    rng = np.random.default_rng(0)
    for n in (44100, 30000, 500):
        wav = (rng.normal(size=n) * 3000).astype(np.int16)
        ref = psf.logfbank(wav, 44100, winlen=0.02, winstep=0.01, nfilt=257, nfft=1024)
        np.testing.assert_allclose(log_fbank(wav.astype(np.float64), 44100, fb), ref, rtol=1e-12, atol=1e-12)


def _torchvggish_module(name):
    """A module of the torchvggish package without running its __init__ (which needs resampy and soundfile)."""
    import importlib.util

    spec = importlib.util.find_spec("torchvggish")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchvggish is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    mod_spec = importlib.util.spec_from_file_location(f"_tvg_{name}", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_vggish_equals_torchvggish(ckpt):
    mel_features = _torchvggish_module("mel_features")
    tvg = _torchvggish_module("torchvggish")
    rng = np.random.default_rng(1)
    wav = rng.normal(size=16000 * 2) * 0.1
    ref = mel_features.log_mel_spectrogram(wav, audio_sample_rate=16000, log_offset=0.01, window_length_secs=0.025,
                                           hop_length_secs=0.010, num_mel_bins=64, lower_edge_hertz=125,
                                           upper_edge_hertz=7500)
    ref = mel_features.frame(ref, window_length=96, hop_length=96)  # (examples, 96, 64)
    ours = np.stack([log_mel(wav[k * 15360:k * 15360 + 15600][None], mel_matrix())[0] for k in range(len(ref))])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    net = tvg.VGG(tvg.make_layers(), postprocess=False).eval()
    net.load_state_dict(load_state_dict(ckpt["vggish_embeddings"]))
    b = build_backbone("vggish", {"weights": str(ckpt["vggish_fc"]), "embedding": "raw"}).eval()
    x = torch.from_numpy(ours).float()
    with torch.no_grad():
        torch.testing.assert_close(b.embed("audio", x), net(x[:, None]))


# ------------------------------------------------------------------------------------------ features through extraction
def _manifest(folder, files):
    write_manifest(folder / "m.csv", [ManifestRow(p.stem, str(p), "c") for p in files])
    return folder / "m.csv"


@pytest.mark.slow
def test_cls_feature_set_dims_and_window_times(ckpt, tmp_path):
    files = [write_av(tmp_path / f"v{i}.mp4", seconds=s, fps=25, size=(80, 60), sample_rate=r, seed=i)
             for i, (s, r) in enumerate([(1.3, 44100), (2.0, 16000)])]
    out = tmp_path / "cls.h5"
    extract_shard(_manifest(tmp_path, files), 0, 1, cls_set(ckpt), None, out,
                  ExtractOptions(chunk_seconds=0.7, **OPTS))
    store = FeatureStore(out)
    assert store.dims == {"audio": 128, "video": 4096} and store.attrs["extractor"] == "vggish+c3d"
    for f in files:
        duration = decode(f, fps=25, sample_rate=16000).duration
        steps = store.video_steps(f.stem)
        seq, times = steps["audio"]
        n = int(math.floor((duration - 0.96) / 0.96 + 1e-6)) + 1
        assert seq.shape == (n, 128) and seq.min() >= 0 and seq.max() <= 255 and (seq == np.floor(seq)).all()
        np.testing.assert_allclose(times, np.stack([np.arange(n) * 0.96, np.arange(n) * 0.96 + 0.96], 1))
        seq, times = steps["video"]
        n = math.ceil(duration * 25 / 16 - 1e-6)
        assert seq.shape == (n, 4096) and (seq >= 0).all() and np.isfinite(seq).all()
        np.testing.assert_allclose(times[:, 0], np.arange(n) * 0.64)
        np.testing.assert_allclose(times[:, 1], np.minimum(np.arange(1, n + 1) * 0.64, duration))
    # the same windows embedded directly give the stored features
    b = build_feature_set(cls_set(ckpt)).eval()
    clip = decode(files[0], fps=25, sample_rate=16000, short_side=128, channels="mean")
    w = b.preprocess(clip)
    with torch.no_grad():
        np.testing.assert_allclose(b.embed("audio", w["audio"]).numpy(), store.video_steps("v0")["audio"][0])
        np.testing.assert_allclose(b.embed("video", w["video"]).numpy(), store.video_steps("v0")["video"][0],
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_selavi_dims_window_times_and_the_torchvision_network(ckpt, tmp_path):
    import torchvision

    f = write_av(tmp_path / "s.mp4", seconds=2.2, fps=30, size=(80, 60), sample_rate=44100)
    out = tmp_path / "selavi.h5"
    extract_shard(_manifest(tmp_path, [f]), 0, 1, "selavi", {"weights": str(ckpt["selavi"])}, out,
                  ExtractOptions(chunk_seconds=1.0, **OPTS))
    store = FeatureStore(out)
    assert store.dims == {"audio": 512, "video": 512}
    steps = store.video_steps("s")
    for m in ("audio", "video"):
        seq, times = steps[m]
        assert seq.shape == (2, 512) and np.isfinite(seq).all()
        np.testing.assert_allclose(times, [[0, 1], [1, 2]])
    b = build_backbone("selavi", {"weights": str(ckpt["selavi"])}).eval()
    clip = decode(f, fps=30, sample_rate=44100, short_side=112)
    x = b.preprocess(clip, ["video"])["video"][:1]
    net = torchvision.models.video.r2plus1d_18(weights=None)
    state = load_state_dict(ckpt["selavi"])
    net.fc = torch.nn.Identity()
    net.load_state_dict({k[len("video_network.base."):]: v for k, v in state.items()
                         if k.startswith("video_network.base.")})
    with torch.no_grad():
        ref = net.eval()((x.permute(0, 4, 1, 2, 3).float() / 255 - 0.45) / 0.225)
    np.testing.assert_allclose(steps["video"][0][:1], ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["selavi", "cls"])
def test_real_clip_bigbuckbunny(ckpt, bbb, tmp_path, which):
    write_manifest(tmp_path / "m.csv", [ManifestRow("bbb", str(bbb), "animation")])
    fs = cls_set(ckpt) if which == "cls" else {"backbone": "selavi", "params": {"weights": str(ckpt["selavi"])}}
    extract_shard(tmp_path / "m.csv", 0, 1, fs, None, tmp_path / "f.h5",
                  ExtractOptions(chunk_seconds=1.0, max_seconds=2.5, **OPTS))
    steps = FeatureStore(tmp_path / "f.h5").video_steps("bbb")
    expect = ({"audio": (2, 512), "video": (2, 512)} if which == "selavi"
              else {"audio": (2, 128), "video": (4, 4096)})  # ceil(2.5 * 25 / 16) C3D clips
    for m in ("audio", "video"):
        seq, times = steps[m]
        assert seq.shape == expect[m] and np.isfinite(seq).all()
        print(f"bigbuckbunny {which} {m}: {seq.shape}, last window {times[-1].tolist()}")


@pytest.mark.slow
def test_selavi_reference_placement_through_extraction(ckpt, tmp_path):
    f = write_av(tmp_path / "r.mp4", seconds=3.6, fps=10, size=(64, 48), sample_rate=44100)
    out = tmp_path / "ref.h5"
    extract_shard(_manifest(tmp_path, [f]), 0, 1, "selavi",
                  {"weights": str(ckpt["selavi"]), "mode": "reference"}, out,
                  ExtractOptions(chunk_seconds=1.0, **OPTS))
    steps = FeatureStore(out).video_steps("r")
    for m in ("audio", "video"):
        seq, times = steps[m]
        assert seq.shape == (2, 512)
        np.testing.assert_allclose(times, [[0, 1], [0.2, 1.2]])  # n = int(36 / 10) - 1 = 2, frames 0 and 2
