"""The offline demo dataset: synthetic audio-visual clips whose class names describe what is seen and heard.

Every class is a combination of one visual pattern ("a red ball bouncing") and one sound ("a low hum"), so a
class never seen in training can still be recognised from its name: its visual pattern and its sound both
occur in other training classes. Clips are real H.264 + AAC files written with PyAV, with per-clip nuisance
(background, size, speed, position, noise, distractors) and a mix of frame rates, resolutions, sample rates
and channel layouts, so decoding, resampling and down-mixing are exercised for real.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avzsl.common import atomic_path
from extractors.sources.manifest import ManifestRow, read_class_factors, write_class_names, write_manifest

# (name in the class text, CamelCase id, RGB colour)
VISUALS = [
    ("a red ball bouncing", "RedBallBouncing", (220, 40, 40)),
    ("a blue square sliding sideways", "BlueSquareSliding", (40, 80, 225)),
    ("green stripes scrolling", "GreenStripesScrolling", (40, 185, 60)),
    ("a yellow light flashing", "YellowLightFlashing", (240, 215, 40)),
    ("a white ring expanding", "WhiteRingExpanding", (245, 245, 245)),
    ("purple confetti falling", "PurpleConfettiFalling", (160, 50, 210)),
]
SOUNDS = [
    ("a low hum", "LowHum"),
    ("a high whistle", "HighWhistle"),
    ("rapid beeping", "RapidBeeping"),
    ("crackling static", "CracklingStatic"),
    ("a rising siren", "RisingSiren"),
    ("deep drum beats", "DeepDrumBeats"),
]
# (width, height, fps, audio sample rate, audio channels): decoders must cope with all of them
FORMATS = [(96, 96, 12, 16000, 1), (128, 96, 15, 22050, 2), (112, 80, 10, 44100, 2), (80, 112, 24, 16000, 1)]


@dataclass(frozen=True)
class DemoSpec:
    n_visuals: int = 6
    n_sounds: int = 6
    clips_per_class: int = 20
    min_seconds: float = 2.5
    max_seconds: float = 4.5
    seed: int = 0
    difficulty: float = 1.6  # scales noise and the chance of a distracting second object or sound
    # the share of one-second segments in which a modality carries no class signal (the object is out of view, the
    # sound stops): the audio stream is the weaker one, as in the benchmarks' videos
    visual_gap: float = 0.35
    audio_gap: float = 0.55
    audio_snr_db: float = 10.0  # class sound against background noise, before difficulty
    broken_files: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> DemoSpec:
        return cls(**d)


def classes(spec: DemoSpec) -> list[dict]:
    out = []
    for vi in range(spec.n_visuals):
        for si in range(spec.n_sounds):
            vtext, vid, _ = VISUALS[vi]
            stext, sid = SOUNDS[si]
            out.append({"original": f"{vid}_{sid}", "manual": f"{vtext} with {stext}",
                        "visual": vtext, "sound": stext, "vi": vi, "si": si})
    return out


def generate(out_dir: str | Path, spec: DemoSpec, workers: int = 0, progress: bool = True,
             manifest: str | Path | None = None, class_names: str | Path | None = None) -> Path:
    """Write the clips under ``out_dir/videos``, and the manifest and class-name table (default ``manifest.csv`` and
    ``class_names.csv`` in ``out_dir``); return the manifest path.

    ``workers`` processes render clips in parallel (0: one per CPU); every clip has its own seeded generator,
    so the output does not depend on the number of workers."""
    if not (1 <= spec.n_visuals <= len(VISUALS) and 1 <= spec.n_sounds <= len(SOUNDS)):
        raise ValueError(f"demo: n_visuals <= {len(VISUALS)} and n_sounds <= {len(SOUNDS)}")
    out_dir = Path(out_dir)
    video_dir = out_dir / "videos"
    if video_dir.exists():
        shutil.rmtree(video_dir)
    video_dir.mkdir(parents=True)
    jobs = [(video_dir, c, k, spec) for c in classes(spec) for k in range(spec.clips_per_class)]
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        rows = list(tqdm(pool.map(_make_clip, jobs, chunksize=8), total=len(jobs), desc="demo clips",
                         unit="clip", disable=not progress, mininterval=2))
    if spec.broken_files:
        rows.extend(_broken_files(video_dir, spec))
    write_class_names(class_names or out_dir / "class_names.csv", classes(spec), extra_columns=("visual", "sound"))
    manifest = Path(manifest or out_dir / "manifest.csv")
    write_manifest(manifest, [replace(r, path=os.path.relpath(video_dir / Path(r.path).name, manifest.parent))
                              for r in rows])
    return manifest


def _make_clip(job) -> ManifestRow:
    video_dir, c, k, spec = job
    vid = f"{c['original']}_{k:03d}"
    write_clip(video_dir / f"{vid}.mp4", np.random.default_rng([spec.seed, c["vi"], c["si"], k]), c["vi"], c["si"], spec)
    return ManifestRow(vid, f"videos/{vid}.mp4", c["original"], group=vid)


def write_clip(path: Path, rng: np.random.Generator, vi: int, si: int, spec: DemoSpec,
               with_audio: bool = True) -> None:
    import av

    width, height, fps, sr, channels = FORMATS[int(rng.integers(len(FORMATS)))]
    seconds = float(rng.uniform(spec.min_seconds, spec.max_seconds))
    n_frames = int(round(seconds * fps))
    frames = render_video(rng, vi, width, height, fps, n_frames, spec.difficulty, spec.visual_gap)
    wav = synth_audio(rng, si, sr, seconds, spec.difficulty, spec.audio_gap, spec.audio_snr_db) if with_audio else None
    with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w", format="mp4") as out:
        # byte-identical output run to run: x264's macroblock-tree lookahead reads uninitialised memory at widths
        # that are not multiples of 64, and frame threads reorder work, so both are off
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20", "threads": "1",
                                                          "x264-params": "no-mbtree=1"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        as_ = None
        if wav is not None:
            as_ = out.add_stream("aac", rate=sr, layout="stereo" if channels == 2 else "mono")
        for img in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if as_ is not None:
            planes = np.stack([wav, np.roll(wav, 7) * 0.9]) if channels == 2 else wav[None]
            planes = planes.astype(np.float32)
            frame_size = as_.codec_context.frame_size or 1024
            for start in range(0, planes.shape[1], frame_size):
                chunk = np.ascontiguousarray(planes[:, start:start + frame_size])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=as_.layout.name)
                af.sample_rate = sr
                af.pts = start
                for packet in as_.encode(af):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)


def render_video(rng: np.random.Generator, vi: int, w: int, h: int, fps: int, n: int,
                 difficulty: float = 1.0, gap: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(25, 105)
    tilt = rng.uniform(-25, 25, size=2)
    bg_tint = rng.uniform(-12, 12, size=3)
    background = base + tilt[0] * (xx / w - 0.5) + tilt[1] * (yy / h - 0.5)
    background = np.clip(background[..., None] + bg_tint, 0, 255)
    colour = np.clip(np.array(VISUALS[vi][2], np.float32) + rng.uniform(-18, 18, 3), 0, 255)
    draw = _PATTERNS[vi](rng, w, h)
    # a smaller object in another class's colour wanders through some clips
    distractor = rng.random() < min(1.0, 0.45 * difficulty)
    other = int(rng.choice([k for k in range(len(VISUALS)) if k != vi]))
    d_colour = np.array(VISUALS[other][2], np.float32)
    d_size = rng.uniform(0.04, 0.08) * min(w, h)
    d_pos, d_vel = rng.uniform([0, 0], [w, h]), rng.uniform(-15, 15, 2)
    # and in some, another class's moving pattern, faint, in a third colour
    ghost = rng.random() < min(1.0, 0.3 * difficulty)
    g_draw = _PATTERNS[int(rng.choice([k for k in range(len(VISUALS)) if k != vi]))](rng, w, h)
    g_colour = np.array(VISUALS[int(rng.choice([k for k in range(len(VISUALS)) if k != vi]))][2], np.float32)
    g_alpha = rng.uniform(0.25, 0.45)
    shown = segment_gate(rng, n / fps, gap)
    noise = 4 + 6 * difficulty
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        t = i / fps
        img = background.copy()
        if distractor:
            dx, dy = (d_pos + d_vel * t) % [w, h]
            m = (np.abs(xx - dx) < d_size) & (np.abs(yy - dy) < d_size)
            img[m] = d_colour
        if ghost:
            a = g_alpha * g_draw(t, xx, yy)
            img = img * (1 - a[..., None]) + g_colour * a[..., None]
        alpha = draw(t, xx, yy) * shown[min(int(t), len(shown) - 1)]
        img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
        img += rng.normal(0, noise, img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def segment_gate(rng: np.random.Generator, seconds: float, gap: float) -> np.ndarray:
    """1 for each one-second segment (the last one partial) that shows or sounds the class, 0 for a gap; a clip
    keeps at least one segment with the class in it."""
    n = max(1, int(np.ceil(seconds)))
    on = (rng.random(n) >= gap).astype(np.float32)
    if not on.any():
        on[int(rng.integers(n))] = 1.0
    return on


def _disc(xx, yy, cx, cy, r):
    return np.clip(r + 0.5 - np.hypot(xx - cx, yy - cy), 0, 1)


def _ball_bouncing(rng, w, h):
    r = rng.uniform(0.09, 0.14) * min(w, h)
    cx, f, ph = rng.uniform(0.3, 0.7) * w, rng.uniform(0.8, 1.5), rng.uniform(0, np.pi)
    floor, amp = h - r - 2, rng.uniform(0.45, 0.7) * h
    return lambda t, xx, yy: _disc(xx, yy, cx, floor - amp * abs(np.sin(np.pi * f * t + ph)), r)


def _square_sliding(rng, w, h):
    s = rng.uniform(0.1, 0.16) * min(w, h)
    cy, f, ph, amp = rng.uniform(0.3, 0.7) * h, rng.uniform(0.4, 0.9), rng.uniform(0, 2 * np.pi), 0.32 * w

    def draw(t, xx, yy):
        cx = w / 2 + amp * np.sin(2 * np.pi * f * t + ph)
        return ((np.abs(xx - cx) < s) & (np.abs(yy - cy) < s)).astype(np.float32)
    return draw


def _stripes_scrolling(rng, w, h):
    period, speed = rng.uniform(10, 18), rng.choice([-1, 1]) * rng.uniform(15, 35)
    top = rng.uniform(0.05, 0.35) * h
    bottom = top + rng.uniform(0.4, 0.6) * h

    def draw(t, xx, yy):
        on = ((xx - speed * t) % period) < period / 2
        return (on & (yy >= top) & (yy < bottom)).astype(np.float32)
    return draw


def _light_flashing(rng, w, h):
    r = rng.uniform(0.12, 0.2) * min(w, h)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    f, duty = rng.uniform(1.5, 3.5), rng.uniform(0.4, 0.6)
    return lambda t, xx, yy: _disc(xx, yy, cx, cy, r) * float((t * f) % 1.0 < duty)


def _ring_expanding(rng, w, h):
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    period, rmax, thick = rng.uniform(0.8, 1.4), rng.uniform(0.3, 0.45) * min(w, h), rng.uniform(2, 3.5)

    def draw(t, xx, yy):
        r = rmax * ((t / period) % 1.0)
        return np.clip(thick / 2 + 0.5 - np.abs(np.hypot(xx - cx, yy - cy) - r), 0, 1)
    return draw


def _confetti_falling(rng, w, h):
    n = int(rng.integers(18, 32))
    x0, y0 = rng.uniform(0, w, n), rng.uniform(0, h, n)
    vy, size = rng.uniform(20, 45, n), rng.uniform(1.2, 2.4, n)

    def draw(t, xx, yy):
        alpha = np.zeros_like(xx)
        ys = (y0 + vy * t) % h
        for x, y, s in zip(x0, ys, size):
            alpha = np.maximum(alpha, ((np.abs(xx - x) < s) & (np.abs(yy - y) < s)).astype(np.float32))
        return alpha
    return draw


_PATTERNS: list[Callable] = [_ball_bouncing, _square_sliding, _stripes_scrolling, _light_flashing,
                             _ring_expanding, _confetti_falling]


def synth_audio(rng: np.random.Generator, si: int, sr: int, seconds: float, difficulty: float = 1.0,
                gap: float = 0.0, snr_db: float = 16.0) -> np.ndarray:
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    sound = _SOUNDS[si](rng, t, sr)
    sound /= np.sqrt(np.mean(sound**2)) + 1e-9
    level = 1.0  # the class sound's RMS while it is on
    # the class sound stops in some seconds; 20-ms ramps keep the cuts from clicking
    on = np.repeat(segment_gate(rng, seconds, gap), sr)[:n]
    sound = sound * np.convolve(on, np.ones(sr // 50) / (sr // 50), mode="same")
    if rng.random() < min(1.0, 0.5 * difficulty):  # another class's sound in the background, not much quieter
        other = int(rng.choice([k for k in range(len(SOUNDS)) if k != si]))
        extra = _SOUNDS[other](rng, t, sr)
        sound = sound + extra / (np.sqrt(np.mean(extra**2)) + 1e-9) * rng.uniform(0.3, 0.7) * level
    snr = snr_db + rng.uniform(-3, 3) - 6 * difficulty
    noise = _pink_noise(rng, n)
    noise *= 10 ** (-snr / 20) * level / (np.sqrt(np.mean(noise**2)) + 1e-9)
    wav = sound + noise
    return (wav / (np.max(np.abs(wav)) + 1e-9) * rng.uniform(0.4, 0.85)).astype(np.float32)


def _hum(rng, t, sr):
    f0 = rng.uniform(80, 140)
    am = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t)
    return am * sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 5))


def _whistle(rng, t, sr):
    f = rng.uniform(2000, 3500) * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    return np.sin(2 * np.pi * np.cumsum(f) / sr)


def _beeping(rng, t, sr):
    rate, f = rng.uniform(6, 10), rng.uniform(850, 1200)
    gate = ((t * rate) % 1.0) < 0.5
    return np.sin(2 * np.pi * f * t) * gate


def _static(rng, t, sr):
    n = len(t)
    crackle = np.zeros(n)
    clicks = rng.integers(0, n, size=int(len(t) / sr * rng.uniform(30, 80)))
    crackle[clicks] = rng.normal(0, 1, len(clicks)) * 6
    bursts = (np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6)) > 0.3)
    return rng.normal(0, 1, n) * (0.4 + 0.6 * bursts) + crackle


def _siren(rng, t, sr):
    f1, f2, period = rng.uniform(400, 600), rng.uniform(1400, 1800), rng.uniform(0.8, 1.5)
    f = f1 + (f2 - f1) * ((t / period) % 1.0)
    return np.sin(2 * np.pi * np.cumsum(f) / sr)


def _drums(rng, t, sr):
    interval = rng.uniform(0.35, 0.6)
    phase = (t + rng.uniform(0, interval)) % interval
    f = rng.uniform(55, 90) * (1 + 0.6 * np.exp(-phase * 30))
    body = np.sin(2 * np.pi * f * phase) * np.exp(-phase * rng.uniform(8, 14))
    click = rng.normal(0, 1, len(t)) * np.exp(-phase * 200) * 0.3
    return body + click


_SOUNDS: list[Callable] = [_hum, _whistle, _beeping, _static, _siren, _drums]


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    m = 1 << int(np.ceil(np.log2(max(n, 2))))  # power-of-two FFT, then crop
    spec = np.fft.rfft(rng.normal(0, 1, m))
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    return np.fft.irfft(spec, m)[:n]


def _broken_files(video_dir: Path, spec: DemoSpec) -> list[ManifestRow]:
    """Two deliberately unusable files, so every demo run shows how bad media is recorded and skipped."""
    rng = np.random.default_rng([spec.seed, 999])
    label = classes(spec)[0]["original"]
    good = video_dir / "_template.mp4"
    write_clip(good, rng, 0, 0, spec)
    truncated = video_dir / "broken_truncated.mp4"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 5])
    good.unlink()
    silent = video_dir / "broken_no_audio.mp4"
    write_clip(silent, rng, 0, 0, spec, with_audio=False)
    return [ManifestRow("broken_truncated", f"videos/{truncated.name}", label, group="broken_truncated"),
            ManifestRow("broken_no_audio", f"videos/{silent.name}", label, group="broken_no_audio")]


def read_factors(class_names_csv: str | Path) -> dict[str, dict[str, str]]:
    """Factor columns (here ``visual`` and ``sound``) of each class, keyed by the original class name."""
    return read_class_factors(class_names_csv)
