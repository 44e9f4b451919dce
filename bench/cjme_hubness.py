"""Why CJME's HM can sit near chance on the demo: hubness of its L2 distances, measured on trained runs.

For each CJME run directory it reloads the stage-2 model, embeds the test videos (the thresholded gate picks the
audio or the video embedding, as in the method) and the test classes' texts, and prints:
- the published evaluation (L2, the β carried from stage 1), which must equal the run's ``test.json``;
- L2 and cosine distances, both at β = 0, so that no β is chosen on the test split;
- the hub: the share of test videos whose nearest class (β = 0) is the most frequent one, and that class's text
  embedding norm against the range of all class norms.

Cosine here is a diagnostic of where the error comes from, not an option of the method: CJME (and the AVCA code it is
compared under) ranks classes by L2 distance between unnormalised embeddings.

    python -m bench.cjme_hubness results/runs/demo/handcrafted/cjme/seed*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from training import engine
from training import run_dir as rd
from training.config import RunConfig
from training.metrics import evaluate

SCORES = ("S", "U", "HM", "ZSL")


def gated_test_embeddings(run: Path) -> tuple[dict, torch.Tensor, object]:
    """The stage-2 model's test-video embeddings (gated), class-text embeddings, and the test split."""
    cfg = engine.complete_config(RunConfig.from_dict(rd.read_header(rd.stage_path(run, 2))["run"]))
    if cfg.model != "cjme":
        raise SystemExit(f"{run}: a {cfg.model!r} run, not CJME")
    model, data = engine.load_trained_model(cfg, rd.model_path(run), torch.device("cpu"))
    model.eval()
    split = data.test
    with torch.no_grad():
        text = model.embed_classes(data.text[torch.as_tensor(split.class_ids)])["text"]
        videos = model.embed_videos(data.eval_batch(split.idx))
    gated = torch.where(videos["use_video"][:, None], videos["video"], videos["audio"])
    return {"audio": videos["audio"], "video": videos["video"], "gated": gated}, text, split


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T


def scores(dist: torch.Tensor, split, beta: float) -> dict:
    r = evaluate(dist, split.class_ids, split.labels, split.seen, split.unseen, beta).percent()
    return {k: r[k] for k in SCORES}


def hub(dist: torch.Tensor, text: torch.Tensor) -> tuple[float, float]:
    """Share of videos (percent) taken by the most often nearest class, and that class's text norm."""
    counts = torch.bincount(dist.argmin(1), minlength=dist.shape[1])
    top = int(counts.argmax())
    return 100.0 * float(counts[top]) / dist.shape[0], float(text[top].norm())


def report(run: Path) -> dict:
    emb, text, split = gated_test_embeddings(run)
    test = rd.TestResult.read(rd.test_path(run))
    l2 = torch.cdist(emb["gated"], text)
    cos = cosine_distance(emb["gated"], text)
    published = scores(l2, split, test.beta)
    if any(abs(published[k] - getattr(test, k)) > 1e-6 for k in SCORES):
        raise SystemExit(f"{run}: recomputed {published} differs from test.json {test.to_dict()}")
    norms = text.norm(dim=1)
    return {"run": str(run), "beta": test.beta, "published": published, "l2_beta0": scores(l2, split, 0.0),
            "cosine_beta0": scores(cos, split, 0.0), "hub_l2": hub(l2, text), "hub_cosine": hub(cos, text),
            "norms": {"audio": float(emb["audio"].norm(dim=1).mean()), "video": float(emb["video"].norm(dim=1).mean()),
                      "text_min": float(norms.min()), "text_max": float(norms.max())},
            "n_classes": len(split.class_ids)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="CJME run directories (results/runs/<ds>/<fs>/cjme/seed<k>)")
    args = ap.parse_args(argv)
    rows = [report(r) for r in args.runs]
    print("| run | test β | published S / U / HM / ZSL | L2, β=0: HM / ZSL | cosine, β=0: HM / ZSL "
          "| hub share L2 → cosine (%) | hub text norm (all: min–max) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        p, l2, c = r["published"], r["l2_beta0"], r["cosine_beta0"]
        print(f"| {Path(r['run']).name} | {r['beta']:.2f} | {p['S']:.1f} / {p['U']:.1f} / {p['HM']:.1f} / {p['ZSL']:.1f} "
              f"| {l2['HM']:.1f} / {l2['ZSL']:.1f} | {c['HM']:.1f} / {c['ZSL']:.1f} | {r['hub_l2'][0]:.0f} → {r['hub_cosine'][0]:.0f} "
              f"| {r['hub_l2'][1]:.2f} ({r['norms']['text_min']:.2f}–{r['norms']['text_max']:.2f}) |")
    for key in ("published", "l2_beta0", "cosine_beta0"):
        hm = torch.tensor([r[key]["HM"] for r in rows])
        zsl = torch.tensor([r[key]["ZSL"] for r in rows])
        print(f"{key}: HM {hm.mean():.1f} ± {hm.std() if len(rows) > 1 else 0:.1f} [min {hm.min():.1f}], "
              f"ZSL {zsl.mean():.1f} ± {zsl.std() if len(rows) > 1 else 0:.1f}")
    n = rows[0]["n_classes"]
    norms = {k: round(v, 2) for k, v in rows[0]["norms"].items()}
    print(f"chance: {100.0 / n:.1f} S and U (1 of {n} classes); embedding norms of the first run: {norms}")


if __name__ == "__main__":
    main()
