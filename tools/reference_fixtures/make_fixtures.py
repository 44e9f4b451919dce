"""Run the ORIGINAL public extraction code on the test clips and store what it computed, as reference fixtures.

Nothing of the original code is copied here: it is imported (or, for AVCA's module-level C3D/VGGish scripts, read and
executed) at run time from the work trees named on the command line, with the few substitutions that let it run on a
CPU-only machine today (each listed in the manifest with the evidence that it changes no number). The weights are
seeded random ones written in the official checkpoint layouts by ``bench/official_layouts.py``.

Run it with the reference environment's Python (see README.md next to this file):

    ../refenv/bin/python tools/reference_fixtures/make_fixtures.py \
        --avca ../refsrc/AVCA --c3d-repo ../refsrc/c3d-pytorch \
        --clips tests/fixtures/reference/clips --out tests/fixtures/reference
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import hashlib
import importlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

PINNED = {
    "ExplainableML/AVCA-GZSL": "2711aeb5",
    "facebookresearch/selavi": "33d2b2d7 (AVCA's selavi_feature_extraction/ is its per-second copy)",
    "DavideA/c3d-pytorch": "1111ccf0 (C3D_model.py, stand-in for AVCA's missing c3d/c3d.py)",
    "tcvrick/audioset-vggish-tensorflow-to-pytorch": "a9c6319a (AVCA ships its own copy, which is what runs)",
}
P = 4096  # probe positions per window
AUTHOR_FFMPEG = "an absolute path to the authors' own ffmpeg"  # any absolute cmd= in load_audio
SELAVI_SEED, CLS_SEED, PROBE_SEED = 0, 7, 0

IMPORTED: dict[str, str] = {}  # original file -> sha256


def sha(data) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    elif isinstance(data, torch.Tensor):
        data = data.detach().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def record_source(path: Path, root: Path) -> None:
    IMPORTED[f"{root.name}/{path.relative_to(root)}"] = sha(path.read_bytes())


def state_digest(state: dict) -> str:
    """sha256 over the sorted keys: each key's name, then its tensor's bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            h.update(v.detach().contiguous().cpu().numpy().tobytes())
        else:
            h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def probe_index(n: int, p: int = P) -> np.ndarray:
    return np.sort(np.random.default_rng(PROBE_SEED).choice(n, min(p, n), replace=False)).astype(np.int64)


def stats(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {}
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max()),
            "frac_zero": float((x == 0).mean())}


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield old
    finally:
        setattr(obj, name, old)


class Printed:
    """Collects what the original code prints (its error reports are its only record of a failure)."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, *a, **k):
        text = " ".join(str(x) for x in a)
        if getattr(self, "trace", False) and a and isinstance(a[0], Exception):
            import traceback
            traceback.print_exception(a[0])
        self.lines.append(text)
        if k.get("file") is None and not text.startswith("didnt load"):
            builtins.print(text[:300], file=sys.stderr)


# ----------------------------------------------------------------------------------------------------- weights
def make_weights(repo_root: Path, folder: Path) -> dict:
    sys.path.insert(0, str(repo_root))
    from bench import official_layouts as ol

    record = {}
    sel = ol.selavi_state(SELAVI_SEED)
    ol.write_selavi(folder / "selavi_vgg_sound.pth", sel)
    record["selavi"] = {"file": "selavi_vgg_sound.pth", "writer": "bench.official_layouts.selavi_state(seed) + "
                        "write_selavi(path, state)", "seed": SELAVI_SEED, "model_state_sha256": state_digest(sel)}
    out = ol.write_realistic_cls_weights(folder, CLS_SEED)
    c3d = torch.load(out["c3d"], map_location="cpu")
    writer = "bench.official_layouts.write_realistic_cls_weights(folder, seed)"
    record["c3d"] = {"file": "c3d.pickle", "writer": writer, "seed": CLS_SEED, "state_sha256": state_digest(c3d)}
    vgg = torch.load(out["vggish_fc"], map_location="cpu")
    pca = dict(np.load(out["pca"]))
    record["vggish"] = {"file": "pytorch_vggish.pth + vggish_pca_params.npz", "writer": writer, "seed": CLS_SEED,
                        "state_sha256": state_digest(vgg), "pca_sha256": state_digest(pca)}
    return record


# ----------------------------------------------------------------------------------------------------- SeLaVi
class FellBack(Exception):
    """AVideoDataset.__getitem__ gave up on the clip and asked for a random other index."""


def selavi_setup(avca: Path, ffmpeg_bin: str):
    root = avca / "selavi_feature_extraction"
    sys.path.insert(0, str(root))
    import torchvision

    # Stand-in 1: the private helper SeLaVi's model.py calls no longer takes (arch, block, layers, pretrained,
    # progress); with pretrained=False it only ever built ResNet(block, layers).
    def _resnet(arch, block, layers, pretrained, progress, **kwargs):
        assert not pretrained
        return torchvision.models.resnet.ResNet(block, layers, **kwargs)

    torchvision.models.resnet._resnet = _resnet
    # Stand-in 2: load_audio runs ffmpeg from the author's conda env; run a real ffmpeg instead.
    import ffmpeg._run as frun

    orig_compile = frun.compile

    def compile_(stream_spec, cmd="ffmpeg", overwrite_output=False):
        return orig_compile(stream_spec, ffmpeg_bin if os.path.isabs(cmd) else cmd, overwrite_output)

    frun.compile = compile_
    # Stand-in 3: tensors' .cuda() (get_cluster_assignments_gpu moves every batch) is the identity on a CPU.
    torch.Tensor.cuda = lambda self, *a, **k: self
    mods = {}
    for name in ("datasets.AVideoDataset", "datasets.decoder", "datasets.audio_utils", "datasets.video_transforms",
                 "model", "utils", "get_clusters"):
        mods[name] = importlib.import_module(name)
        record_source(Path(mods[name].__file__), avca)
    record_source(root / "src" / "logger.py", avca)
    return mods


def selavi_clip(mods: dict, clip: Path, weights: Path, work: Path) -> dict:
    import av

    AV, dec, aud, gc = (mods["datasets.AVideoDataset"], mods["datasets.decoder"], mods["datasets.audio_utils"],
                        mods["get_clusters"])
    out: dict = {}
    with av.open(str(clip)) as c:
        v = c.streams.video[0]
        out["header_frames"] = np.int64(v.frames)
        out["header_fps"] = np.float64(float(v.average_rate))
        out["header_duration"] = np.int64(-1 if v.duration is None else v.duration)
        out["header_time_base"] = np.float64(float(v.time_base))
    # A dataset of this one clip, laid out as get_clusters expects: <root>/<mode>/<class>/<file>, with the list
    # file and the valid-index pickle (normally made by filter_videos with ffprobe) in path_to_data_dir.
    data_root = work / "selavi_root"
    shutil.rmtree(data_root, ignore_errors=True)
    (data_root / "train" / "SomeClass").mkdir(parents=True)
    os.symlink(clip.resolve(), data_root / "train" / "SomeClass" / clip.name)
    lists = work / "selavi_lists"
    shutil.rmtree(lists, ignore_errors=True)
    lists.mkdir()
    (lists / "ucf_train.txt").write_text(f"{data_root / 'train' / 'SomeClass' / clip.name}\n")
    import pickle

    with open(lists / "ucf_valid.pkl", "wb") as f:
        pickle.dump([0], f)
    printed = Printed()
    cap: dict = {"sse": [], "streams": [], "picked": [], "spec": [], "fwd": []}

    def get_start_end_idx(video_size, clip_size, clip_idx, num_clips):
        r = orig_gsei(video_size, clip_size, clip_idx, num_clips)
        cap["sse"].append((video_size, clip_size, clip_idx, num_clips, r))
        return r

    def pyav_decode_stream(container, start_pts, end_pts, stream, stream_name, buffer_size=0):
        r = orig_pds(container, start_pts, end_pts, stream, stream_name, buffer_size)
        cap["streams"].append((start_pts, end_pts, [f.pts for f in r[0]]))
        return r

    def temporal_sampling(frames, start_idx, end_idx, num_samples):
        r = orig_ts(frames, start_idx, end_idx, num_samples)
        idx = torch.clamp(torch.linspace(start_idx, end_idx, num_samples), 0, frames.shape[0] - 1).long()
        cap["picked"].append((idx.numpy().copy(), r.numpy().copy()))
        return r

    def get_spec(wav, fr_sec, *a, **k):
        cap["spec"].append((np.asarray(wav).copy(), fr_sec, k.get("sample_rate", a[1] if len(a) > 1 else None)))
        return orig_spec(wav, fr_sec, *a, **k)

    depth = {"n": 0}
    orig_getitem = AV.AVideoDataset.__getitem__

    def getitem(self, index):
        depth["n"] += 1
        if depth["n"] > 1:
            raise FellBack(f"__getitem__ fell back to a random other index ({index})")
        try:
            return orig_getitem(self, index)
        finally:
            depth["n"] -= 1

    orig_gsei, orig_pds, orig_ts, orig_spec = (dec.get_start_end_idx, dec.pyav_decode_stream, dec.temporal_sampling,
                                               aud.get_spec)
    # datasets.* modules also print their failures: route their print to the collector
    with contextlib.ExitStack() as st:
        st.enter_context(patched(dec, "get_start_end_idx", get_start_end_idx))
        st.enter_context(patched(dec, "pyav_decode_stream", pyav_decode_stream))
        st.enter_context(patched(dec, "temporal_sampling", temporal_sampling))
        st.enter_context(patched(aud, "get_spec", get_spec))
        st.enter_context(patched(AV.AVideoDataset, "__getitem__", getitem))
        for m in (AV, dec, aud, gc):
            m.print = printed
        dataset = AV.AVideoDataset(
            ds_name="ucf", root_dir=str(data_root), mode="train", num_frames=30, sample_rate=1, train_crop_size=112,
            path_to_data_dir=str(lists), num_data_samples=13521, target_fps=30, decode_audio=True, num_sec=1,
            aud_sample_rate=44100, aud_spec_type=2, use_volume_jittering=False, use_temporal_jittering=False,
            z_normalize=True, center_crop=True, temp_jitter=False, run=-1)
        model = mods["model"].load_model(vid_base_arch="r2plus1d_18", aud_base_arch="resnet9", pretrained=False,
                                         norm_feat=False, use_mlp=False, headcount=2, num_classes=101)
        ckpt = torch.load(weights, map_location="cpu")  # the published call has no map_location
        mods["utils"].print = printed
        mods["utils"].load_model_parameters(model, ckpt["model"])
        model = torch.nn.DataParallel(model)  # no GPU: DataParallel calls the module directly
        model.module.register_forward_hook(
            lambda m, inp, o: cap["fwd"].append((inp[0].numpy().copy(), inp[1].numpy().copy(),
                                                 o[0].numpy().copy(), o[1].numpy().copy())))
        args = argparse.Namespace(world_size=1, rank=0, batch_size=1, workers=0, distributed=False, headcount=2,
                                  output_dir=str(work / "selavi_out"), exp_desc="clip")
        status = "ok"
        try:
            with torch.no_grad():
                gc.get_cluster_assignments_gpu(args, dataset, model, device="cpu")
        except FellBack as e:
            said = [x for x in printed.lines if not x.startswith("didnt load")]
            n_clips = int(int(out["header_frames"]) / float(out["header_fps"])) - 1
            status = (f"{e}; its window count int(frames / fps) - 1 was {n_clips}; the original printed: "
                      + " | ".join(x for x in said[-6:] if not x.startswith(("Constructing", "Total number"))))
        finally:
            dataset.manager.shutdown()
        for m in (AV, dec, aud, gc, mods["utils"]):
            del m.print
    out["status"] = np.str_(status)
    skipped = [x for x in printed.lines if x.startswith("didnt load")]
    n = len(cap["fwd"]) if status == "ok" else 0
    out["n_windows"] = np.int64(n)
    if n == 0:
        out.update(start_frames=np.zeros(0, np.int64), frame_pts=np.zeros((0, 30), np.int64),
                   frames_sha256=np.zeros(0, "U64"), audio_start_samples=np.zeros(0, np.int64),
                   video_input_probe=np.zeros((0, P), np.float32), audio_input_probe=np.zeros((0, P), np.float32),
                   video_features=np.zeros((0, 512), np.float32), audio_features=np.zeros((0, 512), np.float32),
                   wav_sha256=np.str_(""), wav_len=np.int64(-1))
        if cap["spec"]:
            out["wav_sha256"], out["wav_len"] = np.str_(sha(cap["spec"][0][0])), np.int64(len(cap["spec"][0][0]))
        return out, {"ckpt_keys_not_loaded": len(skipped)}
    # pyav_decode calls get_start_end_idx (placement in the header's frames), then decode() calls it again over the
    # decoded frames (the linspace span): two calls per window.
    placement = cap["sse"][0::2]
    starts = np.array([int(x[4][0]) for x in placement], np.int64)
    frame_pts, hashes, a_starts = [], [], []
    for (idx, frames), (_, _, pts) in zip(cap["picked"], cap["streams"]):
        frame_pts.append([pts[i] for i in idx])
        hashes.append(sha(np.ascontiguousarray(frames.astype(np.uint8))))
    wav0 = cap["spec"][0][0]
    for wav, fr_sec, sr in cap["spec"]:
        assert np.array_equal(wav, wav0)
        fr = int(np.round(fr_sec * sr))  # get_spec's rule, re-applied to report the sample it started at
        if fr + sr > len(wav):
            fr = len(wav) - sr
        a_starts.append(fr)
    vin = np.stack([f[0][0] for f in cap["fwd"]])
    pidx = probe_index(int(np.prod(vin.shape[1:])))
    ain = np.stack([f[1][0] for f in cap["fwd"]])
    aidx = probe_index(int(np.prod(ain.shape[1:])))  # the full spectrograms would be 100 kB a window
    out.update(
        start_frames=starts, frame_pts=np.array(frame_pts, np.int64), frames_sha256=np.array(hashes, "U64"),
        audio_start_samples=np.array(a_starts, np.int64), wav_sha256=np.str_(sha(wav0)),
        wav_len=np.int64(len(wav0)), video_input_probe=vin.reshape(n, -1)[:, pidx].astype(np.float32),
        probe_index_video_input=pidx, audio_input_probe=ain.reshape(n, -1)[:, aidx].astype(np.float32),
        probe_index_audio_input=aidx,
        video_features=np.stack([f[2] for f in cap["fwd"]]).astype(np.float32),
        audio_features=np.stack([f[3] for f in cap["fwd"]]).astype(np.float32))
    with open(work / "selavi_out" / "clip.pkl", "rb") as f:
        ps = pickle.load(f)
    info = {"video_input_shape": list(vin.shape[1:]), "audio_input_shape": list(ain.shape[1:]),
            "placement_calls": [[float(x) if not isinstance(x, tuple) else [float(y) for y in x] for x in c]
                                for c in placement],
            "decode_windows_pts": [[int(s), int(e), len(p)] for s, e, p in cap["streams"]],
            "pickle_mean_matches": bool(np.allclose(ps[0][0].numpy(), out["video_features"].mean(0), atol=1e-6)
                                        and np.allclose(ps[2][0].numpy(), out["audio_features"].mean(0), atol=1e-6)),
            "ckpt_keys_not_loaded": len(skipped)}
    return out, info


def wav_crosscheck(clip: Path, ffmpeg_bins: dict[str, str]) -> dict:
    """The mono 44.1 kHz s16 wav load_audio gets, from each ffmpeg binary and from PyAV's resampler."""
    import av

    res = {}
    for name, b in ffmpeg_bins.items():
        p = subprocess.run([b, "-i", str(clip), "-f", "s16le", "-acodec", "pcm_s16le", "-ac", "1", "-ar", "44100",
                            "-"], capture_output=True)
        res[name] = sha(p.stdout) if p.returncode == 0 else f"failed rc={p.returncode}"
    try:
        with av.open(str(clip)) as c:
            r = av.AudioResampler(format="s16", layout="mono", rate=44100)
            chunks = [f2.to_ndarray().reshape(-1) for f in c.decode(audio=0) for f2 in r.resample(f)]
            chunks += [f2.to_ndarray().reshape(-1) for f2 in r.resample(None)]
        res["pyav_resampler"] = sha(np.concatenate(chunks).astype(np.int16))
    except Exception as e:  # noqa: BLE001
        res["pyav_resampler"] = f"failed: {type(e).__name__}"
    return res


# ----------------------------------------------------------------------------------------------------- C3D/VGGish
def c3d_stand_in(c3d_repo: Path) -> types.ModuleType:
    """``c3d.c3d.C3D`` is not in the AVCA repository. DavideA/c3d-pytorch's C3D has the same layers and the same
    state-dict keys but returns softmax(fc8); AVCA's returns fc7 after ReLU. The stand-in runs DavideA's forward
    unchanged and returns what its second dropout (identity in eval mode) received: relu(fc7(.))."""
    spec = importlib.util.spec_from_file_location("davidea_c3d_model", c3d_repo / "C3D_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    record_source(c3d_repo / "C3D_model.py", c3d_repo)

    class C3D(mod.C3D):
        def forward(self, x):
            seen = []
            h = self.dropout.register_forward_hook(lambda m, i, o: seen.append(o))
            try:
                super().forward(x)
            finally:
                h.remove()
            return seen[1]

    pkg, sub = types.ModuleType("c3d"), types.ModuleType("c3d.c3d")
    sub.C3D = C3D
    pkg.c3d = sub
    sys.modules["c3d"], sys.modules["c3d.c3d"] = pkg, sub
    return sub


def save(path: Path, arrays: dict, work: Path) -> None:
    """The fixture file; messages the original printed name the temporary folder as <tmp>."""
    if "status" in arrays:
        arrays = {**arrays, "status": np.str_(str(arrays["status"]).replace(str(work), "<tmp>"))}
    np.savez_compressed(path, **arrays)


def substitutions(variant: str, root: Path, wdir: Path, weights: Path, text: str) -> list[tuple[str, str, str]]:
    """(published text, replacement, why) for each substitution made in the script before it runs. The scripts'
    absolute paths (the authors' machines) are found in the script text by their role, not written here."""
    c3d_w, vgg_w, pca = weights / "c3d.pickle", weights / "pytorch_vggish.pth", weights / "vggish_pca_params.npz"
    subs = [
        ("device = 'cuda:0'", "device = 'cpu'", "no GPU"),
        ("model=C3D().cuda()", "model=C3D()", "no GPU"),
        ("dummy=((torch.unsqueeze(dummy,0)).float()).cuda()", "dummy=((torch.unsqueeze(dummy,0)).float())", "no GPU"),
    ]
    for path in re.findall(r"torch\.load\('(/[^']+)'\)", text):
        new = vgg_w if path.endswith("pytorch_vggish.pth") else c3d_w
        subs.append((f"torch.load('{path}')", f"torch.load('{new}', map_location='cpu')", "fabricated weights; no GPU"))
    for path in re.findall(r"'(/[^']+vggish_pca_params\.npz)'", text):
        subs.append((f"'{path}'", f"'{pca}'", "fabricated PCA"))
    for i, path in enumerate(re.findall(r'Path\("(/[^"]+)"\)', text)):
        subs.append((f'Path("{path}")', f'Path("{root}")' if i == 0 else f'Path("{root}_empty")',
                     "clip folder" if i == 0 else "another (empty) clip folder"))
    for quote, path in re.findall(r"""(["'])(/mnt/[^"']+)\1""", text):
        subs.append((f"{quote}{path}{quote}", f"{quote}{wdir}/{Path(path).name}{quote}", "temp file"))
    return list(dict.fromkeys(subs))


def cls_script(variant: str, avca: Path) -> Path:
    name = "get_features_ucf.py" if variant == "ucf" else "get_features_activitynet.py"
    return avca / "cls_feature_extraction" / name


class CaptureProxy:
    """cv2.VideoCapture that records every frame the script reads."""

    frames: list = []
    header_count: list = []
    original = None  # cv2.VideoCapture, set before the patch

    def __init__(self, path):
        import cv2

        self._cap = CaptureProxy.original(path)
        CaptureProxy.header_count.append(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def read(self):
        ret, img = self._cap.read()
        if ret:
            CaptureProxy.frames.append(img.copy())
        return ret, img

    def __getattr__(self, k):
        return getattr(self._cap, k)


def run_cls_script(variant: str, avca: Path, src_clip: Path, work: Path, weights: Path, ffmpeg_bin: str,
                   vggish_cls) -> dict:
    """Convert the clip to 25 fps losslessly, then execute AVCA's get_features_{ucf,activitynet}.py on it."""
    import cv2
    import resampy
    import torchvision
    from audioset_vggish_tensorflow_to_pytorch.audioset import vggish_postprocess

    script = cls_script(variant, avca)
    record_source(script, avca)
    wdir = work / f"cls_{variant}"
    shutil.rmtree(wdir, ignore_errors=True)
    root = wdir / "videos"
    (root / "SomeClass").mkdir(parents=True)
    (wdir / "videos_empty").mkdir()
    if variant == "ucf":
        dst, fmt = root / "SomeClass" / (src_clip.stem + ".avi"), []
    else:
        dst, fmt = root / "SomeClass" / (src_clip.stem + ".mp4"), ["-f", "mov"]  # ffv1 needs the QuickTime muxer
    # The audio is copied, except FLAC (AVI mangles mono FLAC, QuickTime refuses it), and except compressed audio
    # of a non-AVI source going into the UCF script's AVI: AVI loses the MP4 edit list (AAC priming samples come
    # back) and its muxer counts one video frame more than it writes, an artefact of this conversion that the
    # benchmarks never had (UCF101 is AVI already; VGGSound and ActivityNet stay MP4). Those are decoded to the PCM
    # they encode, which changes no video frame.
    import av

    with av.open(str(src_clip)) as c:
        acodec = c.streams.audio[0].codec_context.name if c.streams.audio else None
    to_pcm = acodec == "flac" or (variant == "ucf" and src_clip.suffix != ".avi" and acodec not in (None, "pcm_s16le"))
    with av.open(str(src_clip)) as c:
        at_25 = bool(c.streams.video) and c.streams.video[0].average_rate == 25
    # A 25 fps source needs no conversion (the fps filter is the identity on it): its video is copied, not
    # re-encoded, so that the script decodes the source's own bitstream. This matters on frames of odd size, where
    # OpenCV's bicubic RGB conversion also reads the decoder's buffer padding beyond the picture (which differs
    # between, say, the mpeg4 and ffv1 decoders), so the reference's pixels depend on the intermediate codec.
    video = ["-c:v", "copy"] if at_25 else ["-vf", "fps=25", "-c:v", "ffv1"]
    cmd = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-i", str(src_clip), *video,
           "-c:a", "pcm_s16le" if to_pcm else "copy", *fmt, str(dst)]
    conv = subprocess.run(cmd, capture_output=True, text=True)
    text = script.read_text()
    for old, new, _ in substitutions(variant, root, wdir, weights, text):
        assert old in text, old
        text = text.replace(old, new)
    cap: dict = {"resized": [], "c3d_in": [], "c3d_out": [], "vgg_in": [], "vgg_out": [], "post_in": [],
                 "resampled": []}
    CaptureProxy.frames, CaptureProxy.header_count, CaptureProxy.original = [], [], cv2.VideoCapture
    orig_resize_fwd = torchvision.transforms.Resize.forward
    orig_post = vggish_postprocess.Postprocessor.postprocess
    orig_resample = resampy.resample

    def resize_fwd(self, img):
        r = orig_resize_fwd(self, img)
        cap["resized"].append(np.asarray(r).copy())
        return r

    def post(self, e):
        cap["post_in"].append(np.array(e))
        return orig_post(self, e)

    def resample(*a, **k):
        r = orig_resample(*a, **k)
        cap["resampled"].append(np.array(r))
        return r

    c3d_cls = sys.modules["c3d.c3d"].C3D
    def hook(m, i, o):
        if isinstance(m, c3d_cls):
            cap["c3d_in"].append(i[0].detach().numpy().copy())
            cap["c3d_out"].append(o.detach().numpy().copy())
        elif isinstance(m, vggish_cls):
            cap["vgg_in"].append(i[0].detach().numpy().copy())
            cap["vgg_out"].append(o.detach().numpy().copy())

    h1 = torch.nn.modules.module.register_module_forward_hook(hook)
    printed = Printed()
    printed.trace = True
    ns = {"__name__": "__main__", "print": printed}
    old_argv, old_cwd = sys.argv, os.getcwd()
    t0 = time.time()
    try:
        sys.argv = [str(script), "--index", "0"]
        os.chdir(script.parent)  # the script appends ".." to sys.path to find audioset_vggish_tensorflow_to_pytorch
        with patched(cv2, "VideoCapture", CaptureProxy), \
                patched(torchvision.transforms.Resize, "forward", resize_fwd), \
                patched(vggish_postprocess.Postprocessor, "postprocess", post), patched(resampy, "resample", resample):
            exec(compile(text, str(script), "exec"), ns)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        h1.remove()
    res = ns["output_list_no_average"]
    out = {"variant": variant, "conversion": {"cmd": " ".join(cmd[:1] + ["-i", "<clip>"] + cmd[6:-1] + ["<out>"]),
                                              "rc": conv.returncode, "stderr": conv.stderr[-300:]},
           "printed": printed.lines[-4:], "seconds": round(time.time() - t0, 1), "result": res, "cap": cap,
           "frames": CaptureProxy.frames, "header_count": CaptureProxy.header_count, "wav": None}
    wav_path = wdir / ("ucf_dummy.wav" if variant == "ucf" else "activity_dummy0.wav")
    if wav_path.exists() and res:
        import soundfile as sf

        out["wav"] = sf.read(str(wav_path), dtype="int16")
    return out


def c3d_arrays(runs: dict) -> tuple[dict, dict]:
    arr: dict = {}
    info: dict = {}
    ref = runs["ucf"]
    frames = np.stack(ref["frames"]) if ref["frames"] else np.zeros((0, 0, 0, 3), np.uint8)
    arr["n_frames"] = np.int64(len(ref["frames"]))
    arr["header_frame_count"] = np.float64(ref["header_count"][0] if ref["header_count"] else -1)
    arr["frames_sha256"] = np.str_(sha(frames))
    status = []
    for v, key in (("negative", "ucf"), ("plain", "activitynet")):
        r = runs[key]
        ok = bool(r["result"])
        status.append(f"{key}: " + ("ok" if ok else "no result; the script printed: " + " | ".join(r["printed"])))
        if not ok:
            arr[f"resized_sha256_{v}"] = np.zeros(0, "U64")
            arr[f"input_probe_{v}"] = np.zeros((0, P), np.float32)
            arr[f"features_{v}"] = np.zeros((0, 4096), np.float32)
            continue
        nf = len(r["frames"])
        rs = r["cap"]["resized"]  # in the UCF script a header count above the frames read adds unread zero frames
        arr[f"resized_sha256_{v}"] = np.array([sha(np.stack(rs[i:i + 16])) for i in range(0, len(rs), 16)], "U64")
        x = np.stack([c[0] for c in r["cap"]["c3d_in"]])
        pidx = probe_index(int(np.prod(x.shape[1:])))
        arr["probe_index_input"] = pidx
        arr[f"input_probe_{v}"] = x.reshape(len(x), -1)[:, pidx].astype(np.float32)
        feats = np.stack(r["cap"]["c3d_out"]).reshape(len(x), -1).astype(np.float32)
        assert np.array_equal(feats, np.asarray(r["result"][0][0]).reshape(len(x), -1))
        arr[f"features_{v}"] = feats
        info[v] = {"input_shape": list(x.shape[1:]), "features": stats(feats), "frames_read": nf,
                   "frames_resized": len(rs), "cv2_header_count": r["header_count"][0],
                   "frames_equal_ucf": bool(len(r["frames"]) == nf and all(
                       np.array_equal(a, b) for a, b in zip(r["frames"], ref["frames"])))}
    arr["status"] = np.str_("; ".join(status))
    return arr, info


def vggish_arrays(run: dict, other: dict) -> tuple[dict, dict]:
    arr: dict = {}
    if not run["result"]:
        arr["status"] = np.str_("no result; the script printed: " + " | ".join(run["printed"]))
        return arr, {}
    wav, rate = run["wav"]
    arr["status"] = np.str_("ok")
    arr["wav_sha256"] = np.str_(sha(np.ascontiguousarray(wav)))
    arr["wav_shape"] = np.array(wav.shape, np.int64)
    arr["wav_rate"] = np.int64(rate)
    if run["cap"]["resampled"]:
        rsd = run["cap"]["resampled"][0]
    else:  # 16 kHz already: nothing was resampled; the mono float signal is what was framed
        rsd = (wav / 32768.0).mean(axis=1) if wav.ndim > 1 else wav / 32768.0
    arr["resampled_len"] = np.int64(len(rsd))
    pidx = probe_index(len(rsd))
    arr["probe_index_resampled"] = pidx
    arr["resampled_probe"] = rsd[pidx].astype(np.float64)
    x = run["cap"]["vgg_in"][0]
    arr["log_mel"] = x[:, 0].astype(np.float32)
    arr["embedding"] = run["cap"]["vgg_out"][0].astype(np.float32)
    arr["quantized"] = np.asarray(run["result"][0][2]).astype(np.uint8)
    info = {"n_examples": int(len(x)), "embedding": stats(arr["embedding"]),
            "quantized": stats(arr["quantized"]),
            "other_run_same_quantized": bool(other["result"] and np.array_equal(
                np.asarray(other["result"][0][2]), arr["quantized"])),
            "other_run_same_embedding": bool(other["result"] and np.array_equal(
                other["cap"]["vgg_out"][0], run["cap"]["vgg_out"][0]))}
    return arr, info


# ----------------------------------------------------------------------------------------------------- main
def versions(ffmpeg_bins: dict) -> dict:
    import av
    import cv2
    import PIL
    import pydub
    import python_speech_features
    import resampy
    import soundfile
    import torchvision

    v = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
         "numpy": np.__version__, "av": av.__version__, "av_ffmpeg": ".".join(map(str, av.library_versions[
             "libavcodec"])) + " (libavcodec)", "opencv": cv2.__version__, "pillow": PIL.__version__,
         "resampy": resampy.__version__, "soundfile": soundfile.__version__,
         "libsndfile": soundfile.__libsndfile_version__}
    for name, mod in (("pydub", pydub), ("python_speech_features", python_speech_features)):
        try:
            from importlib.metadata import version

            v[name] = version(name)
        except Exception:  # noqa: BLE001
            v[name] = getattr(mod, "__version__", "?")
    from importlib.metadata import version

    for name in ("ffmpeg-python", "imageio-ffmpeg", "joblib", "pandas", "opencv-python-headless"):
        v[name] = version(name)
    for name, b in ffmpeg_bins.items():
        v[f"ffmpeg[{name}]"] = subprocess.run([b, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--avca", type=Path, required=True,
                    help="where you extracted AVCA-GZSL @2711aeb5 (selavi_feature_extraction/, cls_feature_extraction/,"
                         " audioset_vggish_tensorflow_to_pytorch/)")
    ap.add_argument("--c3d-repo", type=Path, required=True, help="where you extracted DavideA/c3d-pytorch @1111ccf0")
    ap.add_argument("--clips", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ffmpeg", default=shutil.which("ffmpeg"), help="ffmpeg CLI (with ffprobe next to it, for pydub)")
    ap.add_argument("--selavi-ffmpeg", help="the ffmpeg SeLaVi's load_audio runs (default: imageio-ffmpeg's, the FFmpeg "
                    "generation PyAV bundles: FFmpeg's resampler output changed between 5.x and 8/9)")
    ap.add_argument("--only", default="selavi,cls", help="comma list of selavi, cls")
    ap.add_argument("--clip", action="append", help="only these clip file names")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repo_root = Path(__file__).resolve().parents[2]
    t_start = time.time()
    import imageio_ffmpeg

    ffmpeg_bins = {"cli": args.ffmpeg, "imageio_ffmpeg": imageio_ffmpeg.get_ffmpeg_exe()}
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".avi", ".mp4", ".mkv", ".mov"))
    if args.clip:
        clips = [p for p in clips if p.name in args.clip]
    work = Path(tempfile.mkdtemp(prefix="reffix_"))
    weights = work / "weights"
    weights.mkdir()
    wrec = make_weights(repo_root, weights)
    only = set(args.only.split(","))
    mf_path = args.out / "manifest.json"
    manifest = json.loads(mf_path.read_text()) if mf_path.exists() else {}
    manifest.setdefault("clips", {})
    # make_clips.py's record of the clips; a folder of other clips has none
    info_file = args.clips / "clips.json"
    clip_info = json.loads(info_file.read_text()) if info_file.exists() else {}

    if "selavi" in only:
        mods = selavi_setup(args.avca, args.selavi_ffmpeg or imageio_ffmpeg.get_ffmpeg_exe())
        (args.out / "selavi").mkdir(parents=True, exist_ok=True)
        valid = mods["datasets.AVideoDataset"].valid_video
        for clip in clips:
            t0 = time.time()
            arr, info = selavi_clip(mods, clip, weights / "selavi_vgg_sound.pth", work)
            save(args.out / "selavi" / (clip.stem + ".npz"), arr, work)
            info["seconds"] = round(time.time() - t0, 1)
            with contextlib.redirect_stdout(io.StringIO()):
                info["filter_videos_accepts"] = bool(valid(0, str(clip)))
            info["wav_crosscheck"] = wav_crosscheck(clip, ffmpeg_bins)
            info["video_features"] = stats(arr["video_features"])
            info["audio_features"] = stats(arr["audio_features"])
            if int(arr["header_frames"]) <= 0:
                # no frame count in the header: the original gives nothing. Its output on the same streams remuxed
                # (copied, not re-encoded) into QuickTime, whose header has the count, is what the project's
                # documented fallback (the decoded frame count) must equal
                # (copied, not re-encoded) into QuickTime, whose header has the count; its track time scale is the
                # nominal frame rate, so that Matroska's millisecond timestamps become whole frames again
                import av

                with av.open(str(clip)) as c:
                    rate = c.streams.video[0].average_rate
                timescale = rate.numerator if rate.denominator == 1 else rate.numerator // 1001 * 1000
                remuxed = work / (clip.stem + ".remuxed.mov")
                subprocess.run([args.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy",
                                "-video_track_timescale", str(timescale), "-f", "mov", str(remuxed)], check=True)
                rarr, rinfo = selavi_clip(mods, remuxed, weights / "selavi_vgg_sound.pth", work)
                save(args.out / "selavi" / (clip.stem + ".remuxed.npz"), rarr, work)
                info["remuxed"] = {"how": f"ffmpeg -c copy -video_track_timescale {timescale} -f mov", "n_windows": int(rarr["n_windows"]),
                                   "header_frames": int(rarr["header_frames"]), "status": str(rarr["status"])}
            manifest["clips"].setdefault(clip.name, {})["selavi"] = info
            print(f"selavi {clip.name}: n={int(arr['n_windows'])} {arr['status'][:100]} {info['seconds']}s",
                  file=sys.stderr)

    if "cls" in only:
        sys.path.insert(0, str(args.avca))
        for f in ("vggish.py", "audioset/vggish_input.py", "audioset/vggish_postprocess.py", "audioset/mel_features.py",
                  "audioset/vggish_params.py"):
            record_source(args.avca / "audioset_vggish_tensorflow_to_pytorch" / f, args.avca)
        from audioset_vggish_tensorflow_to_pytorch.vggish import VGGish

        c3d_stand_in(args.c3d_repo)
        (args.out / "c3d").mkdir(parents=True, exist_ok=True)
        (args.out / "vggish").mkdir(parents=True, exist_ok=True)
        manifest["cls_substitutions"] = {
            v: [{"published": re.sub(r"/(home|mnt)/[^'\"]*", "<the authors' path>", o),
                 "replaced_by": n.replace(str(work), "<tmp>"), "why": w}
                for o, n, w in substitutions(v, work / "videos", work, weights, cls_script(v, args.avca).read_text())]
            for v in ("ucf", "activitynet")}
        for clip in clips:
            runs = {v: run_cls_script(v, args.avca, clip, work, weights, args.ffmpeg, VGGish)
                    for v in ("ucf", "activitynet")}
            carr, cinfo = c3d_arrays(runs)
            save(args.out / "c3d" / (clip.stem + ".npz"), carr, work)
            # VGGish from the script that reads the source's own container: UCF's AVI, else ActivityNet's MP4
            primary = "ucf" if clip.suffix == ".avi" else "activitynet"
            other = "activitynet" if primary == "ucf" else "ucf"
            varr, vinfo = vggish_arrays(runs[primary], runs[other])
            vinfo["script"] = f"get_features_{primary}.py"
            save(args.out / "vggish" / (clip.stem + ".npz"), varr, work)
            entry = manifest["clips"].setdefault(clip.name, {})
            entry["c3d"] = {**cinfo, "status": str(carr["status"]),
                            "conversion": {k: runs[k]["conversion"] for k in runs},
                            "seconds": {k: runs[k]["seconds"] for k in runs}}
            entry["vggish"] = {**vinfo, "status": str(varr["status"])}
            print(f"cls {clip.name}: c3d T={len(carr['features_negative'])} vggish "
                  f"T={len(varr.get('embedding', []))} {entry['c3d']['seconds']}", file=sys.stderr)

    for name, info in clip_info.items():
        manifest["clips"].setdefault(name, {})["properties"] = info
    manifest.update({
        "pinned_commits": PINNED,
        "original_files_sha256": {**manifest.get("original_files_sha256", {}), **IMPORTED},
        "versions": versions(ffmpeg_bins),
        "weights": wrec,
        "probe": {"P": P, "rule": "np.sort(np.random.default_rng(0).choice(n_elements, P, replace=False)) over the "
                  "flattened per-window tensor", "seed": PROBE_SEED},
        "stand_ins": STAND_INS,
        "generated_with": "tools/reference_fixtures/make_fixtures.py (see tools/reference_fixtures/README.md)",
    })
    manifest.setdefault("run_seconds", {})[args.only] = round(time.time() - t_start, 1)
    text = json.dumps(manifest, indent=1, sort_keys=True, default=str).replace(str(work), "<tmp>")
    mf_path.write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


STAND_INS = [
    {"stops_it": "SeLaVi load_audio runs ffmpeg at " + AUTHOR_FFMPEG,
     "replacement": "ffmpeg-python's compile() gets the --selavi-ffmpeg binary instead (same arguments; default "
                    "imageio-ffmpeg's FFmpeg 9, the generation PyAV bundles)",
     "evidence": "same program and arguments, but the samples depend on the FFmpeg version where the clip is "
                 "resampled (22.05/48 kHz): FFmpeg 5.1 and 9.0 differ by up to 2 in about a quarter of the samples, "
                 "9.0 and PyAV 18 (FFmpeg 8) agree; at 44.1 kHz all agree. The authors' 2021 FFmpeg is unknown. "
                 "Per clip, manifest clips.*.selavi.wav_crosscheck holds the sha256 of the "
                 "mono 44.1 kHz s16 output of the Debian ffmpeg, of imageio-ffmpeg's ffmpeg and of PyAV's resampler"},
    {"stops_it": "SeLaVi model.py calls torchvision.models.resnet._resnet(arch, block, layers, pretrained, progress),"
                 " whose signature current torchvision changed",
     "replacement": "_resnet(...) = torchvision ResNet(block, layers) (pretrained=False asserted)",
     "evidence": "with pretrained=False the old helper only constructed ResNet(block, layers, **kwargs); every "
                 "parameter is then overwritten by the checkpoint (no key left unloaded: ckpt_keys_not_loaded counts"
                 " only the unused MLP heads)"},
    {"stops_it": ".cuda() / device='cuda' / torch.load without map_location (no GPU)",
     "replacement": "Tensor.cuda = identity; get_cluster_assignments_gpu(device='cpu'); torch.load(map_location='cpu');"
                    " in the cls scripts: 'cuda:0' -> 'cpu' and the two .cuda() calls removed",
     "evidence": "device placement changes no arithmetic definition; CPU float32 kernels are what the fixtures record"},
    {"stops_it": "AVCA's cls scripts import c3d.c3d.C3D, a file that is not in the repository",
     "replacement": "DavideA/c3d-pytorch C3D_model.py C3D (identical layer names and shapes, loads c3d.pickle "
                    "strictly) whose forward runs unchanged and returns relu(fc7(.)) (the input of its second "
                    "dropout, identity in eval mode) instead of softmax(fc8)",
     "evidence": "the features AVCA stores are 4096-d fc7 after ReLU (README/paper); fc8 and softmax are skipped only"},
    {"stops_it": "AVCA's cls scripts are module-level code with hard-coded input/output paths",
     "replacement": "the script text is executed with only the substitutions listed in cls_substitutions",
     "evidence": "each substitution replaces a path, a device, or adds map_location='cpu'"},
    {"stops_it": "get_clusters.py: DataParallel/DistributedDataParallel on GPUs, dataset lists made by filter_videos"
                 " (joblib, 30 jobs, ffprobe)",
     "replacement": "torch.nn.DataParallel on CPU (calls the module directly); the list file and ucf_valid.pkl "
                    "written for a one-clip dataset; filter_videos' valid_video run separately and recorded",
     "evidence": "the per-window loop of get_cluster_assignments_gpu runs unchanged; its pickle's mean equals the "
                 "mean of the per-window features (pickle_mean_matches)"},
    {"stops_it": "AVideoDataset.__getitem__ retries a random other index on any failure (infinite on one clip)",
     "replacement": "a guard raises on re-entry; the fixture records n_windows = 0 and the printed reason",
     "evidence": "only the failure path is intercepted"},
    {"stops_it": "the inputs of the C3D/VGGish scripts are the clips converted to 25 fps (not published)",
     "replacement": "ffmpeg -vf fps=25 -c:v ffv1 -c:a copy: .avi for the UCF script, a QuickTime (-f mov) file named"
                    " .mp4 for the ActivityNet script (the mp4 muxer does not take ffv1 or PCM); FLAC audio is "
                    "written as pcm_s16le instead of copied (AVI breaks mono FLAC, QuickTime refuses FLAC)",
     "evidence": "ffv1 and FLAC->PCM are lossless, so frames equal the fps-filter output and samples the FLAC "
                 "ones; cv2 and pydub open the file by content"},
]


if __name__ == "__main__":
    main()
