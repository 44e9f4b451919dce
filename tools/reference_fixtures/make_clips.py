"""Write the small test clips the reference fixtures are made from, deterministically.

Each clip is synthetic: a drifting colour gradient, a fixed seeded texture that pans, and two moving shapes (so crops,
resizes and frame picks change the numbers), with audio made of different tones per channel plus a little noise (so a
down-mix changes the numbers). The clips cover the frame rates, sizes, codecs, channel layouts and container quirks
listed in ``CLIPS``; ``clips.json`` next to them records what was asked for and what PyAV reads back.

Run with any Python that has PyAV and numpy (the project's venv):

    python tools/reference_fixtures/make_clips.py --out tests/fixtures/reference/clips
"""

from __future__ import annotations

import argparse
import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# name: container, video codec, fps, width, height, seconds, audio codec (None: no audio track), audio rate, layout,
# and a note on what the clip exercises. ``truncate_to_frames`` cuts the written file where that video packet starts,
# so the header still announces every frame written but only the frames before the cut decode.
CLIPS = [
    dict(name="c01_avi_mpeg4_25fps_320x240_stereo44k", fmt="avi", vcodec="mpeg4", fps="25", size=(320, 240),
         seconds=3.0, acodec="pcm_s16le", rate=44100, layout="stereo",
         note="UCF101-like: mpeg4 in AVI at 25 fps, 16-bit PCM stereo"),
    dict(name="c02_avi_mpeg4_2997fps_320x240_mono22k", fmt="avi", vcodec="mpeg4", fps="30000/1001",
         size=(320, 240), seconds=3.5, acodec="pcm_s16le", rate=22050, layout="mono",
         note="NTSC rate 30000/1001, mono 22.05 kHz"),
    dict(name="c03_mp4_h264_30fps_426x240_aac48k_stereo", fmt="mp4", vcodec="libx264", fps="30", size=(426, 240),
         seconds=3.4, acodec="aac", rate=48000, layout="stereo",
         note="YouTube-like H.264 + AAC in MP4, 16:9 at 240 lines"),
    dict(name="c04_mp4_h264_24fps_240x426_portrait_flac51_22k", fmt="mp4", vcodec="libx264", fps="24",
         size=(240, 426), seconds=3.2, acodec="flac", rate=22050, layout="5.1",
         note="portrait, 24 fps, 5.1 audio (lossless FLAC, decodes bit-exactly)"),
    dict(name="c05_avi_mpeg4_25fps_349x197_odd_mono48k", fmt="avi", vcodec="mpeg4", fps="25", size=(349, 197),
         seconds=3.0, acodec="pcm_s16le", rate=48000, layout="mono",
         note="odd width and height"),
    dict(name="c06_mp4_h264_30fps_160x120_long12s_flac_mono22k", fmt="mp4", vcodec="libx264", fps="30",
         size=(160, 120), seconds=12.0, acodec="flac", rate=22050, layout="mono",
         note="12 s: SeLaVi gets 11 windows, so the n//10 term of its window placement is 1"),
    dict(name="c07_avi_mpeg4_25fps_320x240_short1.6s_stereo22k", fmt="avi", vcodec="mpeg4", fps="25",
         size=(320, 240), seconds=1.6, acodec="pcm_s16le", rate=22050, layout="stereo",
         note="under 2 s"),
    dict(name="c08_avi_mpeg4_30fps_320x240_truncated_mono44k", fmt="avi", vcodec="mpeg4", fps="30",
         size=(320, 240), seconds=4.0, acodec="pcm_s16le", rate=44100, layout="mono", truncate_to_frames=44,
         note="file cut after about 44 of 120 frames: the AVI header still says 120"),
    dict(name="c09_mp4_h264_25fps_320x240_noaudio", fmt="mp4", vcodec="libx264", fps="25", size=(320, 240),
         seconds=3.0, acodec=None, rate=None, layout=None, note="no audio track"),
    dict(name="c10_mkv_h264_30fps_320x240_mono22k", fmt="matroska", vcodec="libx264", fps="30", size=(320, 240),
         seconds=3.0, acodec="pcm_s16le", rate=22050, layout="mono",
         note="Matroska: the header has no frame count (PyAV stream.frames == 0)"),
]
EXT = {"avi": ".avi", "mp4": ".mp4", "matroska": ".mkv", "mov": ".mov"}
CHANNELS = {"mono": 1, "stereo": 2, "5.1": 6}


def texture(seed: int, h: int, w: int) -> np.ndarray:
    """A fixed random texture, blurred a little so a codec keeps most of it."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 256, size=(h // 6 + 2, w // 6 + 2, 3)).astype(np.float32)
    t = np.repeat(np.repeat(t, 6, axis=0), 6, axis=1)
    return t


def video_frame(i: int, fps: float, w: int, h: int, tex: np.ndarray) -> np.ndarray:
    t = i / fps
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 100 * np.sin(2 * np.pi * (xx / w + 0.3 * t))
    g = 127 + 100 * np.sin(2 * np.pi * (yy / h - 0.2 * t) + 1.0)
    b = 127 + 100 * np.cos(2 * np.pi * ((xx + yy) / (w + h) + 0.5 * t))
    img = np.stack([r, g, b], axis=-1)
    dx, dy = int(7 * t * 10) % 4, int(5 * t * 10) % 4  # the texture pans by up to 3 pixels
    img = 0.7 * img + 0.3 * tex[dy:dy + h, dx:dx + w]
    # a red disc moving left to right, a cyan box moving top to bottom
    cx, cy, rad = (0.1 + 0.8 * ((t * 0.35) % 1.0)) * w, 0.4 * h, 0.15 * min(w, h)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < rad ** 2] = (230, 30, 40)
    bx, by, s = 0.65 * w, (0.1 + 0.7 * ((t * 0.25) % 1.0)) * h, 0.2 * min(w, h)
    img[(xx >= bx) & (xx < bx + s) & (yy >= by) & (yy < by + s)] = (20, 220, 210)
    return np.clip(img, 0, 255).astype(np.uint8)


def audio_samples(n: int, rate: int, channels: int, seed: int) -> np.ndarray:
    """int16 (n, channels): a different tone pair and level per channel, a shared chirp, and quiet noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    chirp = 0.15 * np.sin(2 * np.pi * (200 * t + 300 * t ** 2)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    out = np.empty((n, channels))
    for c in range(channels):
        f1, f2 = 330.0 * (c + 1), 1250.0 + 410.0 * c
        level = 0.45 / (1 + 0.4 * c)
        out[:, c] = level * (np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * f2 * t + c)) + chirp * (-1) ** c
    out = out * 12000 + rng.normal(0, 3, size=out.shape)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def write_clip(spec: dict, path: Path) -> None:
    w, h = spec["size"]
    fps = Fraction(spec["fps"])
    n_frames = int(round(spec["seconds"] * fps))
    seed = int(hashlib.sha256(spec["name"].encode()).hexdigest()[:8], 16)
    with av.open(str(path), "w", format=spec["fmt"]) as out:
        vs = out.add_stream(spec["vcodec"], rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if spec["vcodec"] == "libx264":
            vs.options = {"crf": "30", "preset": "medium", "threads": "1"}
        else:
            vs.bit_rate = 200_000
            vs.codec_context.gop_size = 12
            vs.options = {"threads": "1"}
        if spec["acodec"]:
            ch = CHANNELS[spec["layout"]]
            aus = out.add_stream(spec["acodec"], rate=spec["rate"], layout=spec["layout"])
            if spec["acodec"] == "aac":
                aus.bit_rate = 96_000
        tex = texture(seed, h, w)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(video_frame(i, float(fps), w, h, tex), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / fps
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if spec["acodec"]:
            n = int(round(spec["seconds"] * spec["rate"]))
            samples = audio_samples(n, spec["rate"], ch, seed + 1)
            fmt = "fltp" if spec["acodec"] == "aac" else "s16"
            block = 1024
            for s0 in range(0, n, block):
                chunk = samples[s0:s0 + block]
                if fmt == "s16":
                    af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout=spec["layout"])
                else:
                    af = av.AudioFrame.from_ndarray((chunk.T / 32768.0).astype(np.float32).copy(), format="fltp",
                                                    layout=spec["layout"])
                af.sample_rate, af.pts, af.time_base = spec["rate"], s0, Fraction(1, spec["rate"])
                for p in aus.encode(af):
                    out.mux(p)
            for p in aus.encode():
                out.mux(p)
    if spec.get("truncate_to_frames"):
        with av.open(str(path)) as c:
            positions = [p.pos for p in c.demux(video=0) if p.pos is not None and p.size]
        cut = positions[spec["truncate_to_frames"]]  # at a chunk boundary: the frames before it decode cleanly
        path.write_bytes(path.read_bytes()[:cut])


def probe(path: Path) -> dict:
    """What PyAV reads from the header and what actually decodes."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"container": c.format.name, "video_codec": v.codec_context.name, "width": v.width,
                "height": v.height, "average_rate": str(v.average_rate), "header_frames": v.frames,
                "stream_duration": v.duration, "time_base": str(v.time_base),
                "audio": None}
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio"] = {"codec": a.codec_context.name, "rate": a.rate, "channels": a.channels,
                             "layout": a.layout.name}
    with av.open(str(path)) as c:
        info["decoded_frames"] = sum(1 for _ in c.decode(video=0))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the clips (tests/fixtures/reference/clips)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for spec in CLIPS:
        path = args.out / (spec["name"] + EXT[spec["fmt"]])
        write_clip(spec, path)
        manifest[path.name] = {"requested": {k: v for k, v in spec.items() if k != "name"}, "probed": probe(path),
                               "bytes": path.stat().st_size,
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        print(path.name, manifest[path.name]["bytes"], manifest[path.name]["probed"])
    (args.out / "clips.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
