"""Extraction throughput per backbone against pure decoding of the same clips.

Renders demo clips (real H.264 + AAC, several resolutions and frame rates), then for every backbone: decodes the
clips at the backbone's input format with nothing else (video-seconds per second of pure decoding), and runs the
real extraction (``extract_shard``: decode workers, windows pooled across videos into fixed batches, the network,
the store). The ratio extraction / decoding says how close the network keeps up with the decoder (the target on a
GPU: at least 0.8). The networks get random weights in their official checkpoint layouts (the speed does not
depend on the values), loaded through the real loaders.

    python -m bench.extract_throughput --device cpu
    python -m bench.extract_throughput --device cuda --precision bf16 --workers 8 --clips 32 --batch-windows 128
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.official_layouts import selavi_state, write_c3d, write_selavi, write_vggish
from extractors.backbones.base import build_feature_set
from extractors.extract import ExtractOptions, extract_shard
from extractors.feature_store import FeatureStore
from extractors.media.decode import decode_stream
from extractors.sources.demo import DemoSpec, generate
from extractors.sources.manifest import read_manifest, resolve_media


def random_checkpoints(folder: Path) -> dict[str, str]:
    """Random weights in each official layout (SeLaVi's DDP dict, C3D's legacy file, VGGish + its PCA)."""
    paths = {"selavi": write_selavi(folder / "selavi_vgg_sound.pth", selavi_state()),
             "c3d": write_c3d(folder / "c3d.pickle"), "vggish": write_vggish(folder)["vggish_embeddings"],
             "pca": folder / "vggish_pca_params.npz", "r2plus1d_18": folder / "r2plus1d_18.pth",
             "ast": folder / "ast", "vit_b_32": folder / "vit_b_32.pt"}
    import torchvision

    torch.save(torchvision.models.video.r2plus1d_18(weights=None).state_dict(), paths["r2plus1d_18"])
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    ASTModel(ASTConfig()).save_pretrained(paths["ast"])  # AudioSet AST's size: 12 layers, 768 wide, 10.24-s input
    ASTFeatureExtractor().save_pretrained(paths["ast"])
    try:
        import open_clip

        torch.save(open_clip.create_model("ViT-B-32").state_dict(), paths["vit_b_32"])
    except ImportError:
        pass
    return {name: str(p) for name, p in paths.items()}


def feature_sets(w: dict[str, str]) -> dict[str, dict]:
    return {
        "handcrafted": {"backbone": "handcrafted", "params": {}},
        "selavi (main)": {"backbone": "selavi", "params": {"weights": w["selavi"]}},
        "selavi (main; reference)": {"backbone": "selavi", "params": {"weights": w["selavi"], "mode": "reference"}},
        "c3d + vggish (cls)": {"audio": {"backbone": "vggish", "params": {"weights": w["vggish"], "pca": w["pca"]}},
                               "video": {"backbone": "c3d", "params": {"weights": w["c3d"]}}},
        "c3d + vggish (cls; reference)": {
            "audio": {"backbone": "vggish", "params": {"weights": w["vggish"], "pca": w["pca"], "mode": "reference"}},
            "video": {"backbone": "c3d", "params": {"weights": w["c3d"], "mode": "reference",
                                                    "colour_negative": True}}},
        "torchvision r2plus1d_18 + handcrafted audio": {
            "backbone": "handcrafted", "params": {},
            "video": {"backbone": "torchvision_video", "params": {"model": "r2plus1d_18", "weights": w["r2plus1d_18"]}}},
        "hf_audio AST + handcrafted video": {
            "backbone": "handcrafted", "params": {}, "audio": {"backbone": "hf_audio", "params": {"weights": w["ast"]}}},
        "open_clip ViT-B-32 frames + handcrafted audio": {
            "backbone": "handcrafted", "params": {},
            "video": {"backbone": "open_clip_image", "params": {"model": "ViT-B-32", "weights": w["vit_b_32"]}}},
    }


def decode_seconds(manifest: Path, fmt) -> tuple[float, float]:
    """(video-seconds decoded, wall seconds) decoding every clip at the input format, nothing else."""
    total, t0 = 0.0, time.perf_counter()
    for row in read_manifest(manifest):
        for piece in decode_stream(resolve_media(manifest, row), **fmt.decode_options(), chunk_seconds=60.0):
            if piece.final:
                total += piece.duration
    return total, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0, help="clip length (each clip lasts 0.8-1.0 of this)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--workers", type=int, default=1, help="decode workers")
    ap.add_argument("--batch-windows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="comma-separated feature-set names (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "w").mkdir()
        sets = feature_sets(random_checkpoints(tmp / "w"))
        per_class = max(1, args.clips // 2)
        manifest = generate(tmp / "clips", DemoSpec(n_visuals=2, n_sounds=1, clips_per_class=per_class,
                                                    min_seconds=0.8 * args.seconds, max_seconds=args.seconds,
                                                    broken_files=False), workers=args.threads, progress=False)
        print(f"# {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device "
              f"{args.device}, {args.precision}, {args.workers} decode worker(s), batch {args.batch_windows} windows; "
              f"{2 * per_class} clips")
        print("| backbone | video-seconds | pure decode (video-s / s) | extraction (video-s / s) | extraction / decode "
              "| windows (audio + video) | extraction (windows / s) |")
        print("|---|---|---|---|---|---|---|")
        for i, (name, spec) in enumerate(sets.items()):
            if args.only and name not in args.only.split(","):
                continue
            if "open_clip" in name and not Path(spec["video"]["params"]["weights"]).exists():
                print(f"| {name} | open_clip_torch is not installed |  |  |  |")
                continue
            fmt = build_feature_set(spec).input_format
            seconds, decode_wall = decode_seconds(manifest, fmt)
            opts = ExtractOptions(workers=args.workers, batch_windows=args.batch_windows, device=args.device,
                                  precision=args.precision, progress=False)
            t0 = time.perf_counter()
            stats = extract_shard(manifest, 0, 1, spec, None, tmp / f"f{i}.h5", opts)
            extract_wall = time.perf_counter() - t0
            assert not stats["failed"], stats
            dec, ext = seconds / decode_wall, seconds / extract_wall
            store = FeatureStore(tmp / f"f{i}.h5")
            windows = sum(int(store.lengths(m).sum()) for m in ("audio", "video"))
            print(f"| {name} | {seconds:.1f} | {dec:.1f} | {ext:.2f} | {ext / dec:.3f} | {windows} "
                  f"| {windows / extract_wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
