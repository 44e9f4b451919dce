"""Issue 28's instruments: validation curves of the evidence runs, on either synthetic benchmark; CSGM's figures over
training (share at the floor γ, the step factor each QDMA part receives); the learning-rate control variant."""

import json

import pytest
import torch
from test_model_daan import NO_DROPOUT, SMALL, _with_negatives

from training.models import InputDims, build_model
from training.models.csgm import Modulation, csgm_statistics

TINY = ["--scale", "0.03"]


def test_csgm_statistics_count_the_samples_at_the_floor_and_the_step_factor():
    eta = torch.tensor([0.45, 0.45, 0.6, 0.9])
    mod = Modulation({"a_tcn": eta}, {"a_tcn": eta.mean()}, {"a_tcn": torch.tensor(1.0)}, {"a_tcn": torch.tensor(1.0)})
    stats = csgm_statistics(mod, {"a_tcn": "a"}, gamma=0.45)
    assert stats["eta_floor.a_tcn"] == pytest.approx(0.5)
    assert stats["step_scale.a_tcn"] == pytest.approx(0.6)
    assert stats["eta_mean.a_tcn"] == pytest.approx(0.6)


def _first_step_change(scale: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("daan_qdma", InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT, "qdma_lr_scale": scale})
    batch, _ = _with_negatives()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train_step(batch, model.configure_optimizers(1e-3, 0.0))
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def test_qdma_lr_scale_scales_the_step_of_exactly_the_parts_csgm_modulates():
    """Under Adam the first step of every parameter is lr · sign-like; scaling QDMA's parts' learning rate by c
    scales their change by c and leaves every other parameter's change as it was."""
    torch.manual_seed(0)
    model = build_model("daan_qdma", InputDims(12, 12, 10), {**SMALL, **NO_DROPOUT})
    parts = {id(p) for p in model.qdma_part_params()}
    names = {n for n, p in model.named_parameters() if id(p) in parts}
    assert names and any(n.startswith("enc_a.tcn") for n in names) and not any(n.startswith("cross") for n in names)
    full, scaled = _first_step_change(1.0), _first_step_change(0.3)
    for n in full:
        factor = 0.3 if n in names else 1.0
        torch.testing.assert_close(scaled[n], factor * full[n], atol=1e-8, rtol=1e-4, msg=n)


def test_qdma_lr_scale_is_checked():
    with pytest.raises(ValueError, match="qdma_lr_scale"):
        build_model("daan_qdma", InputDims(12, 12, 10), {**SMALL, "qdma_lr_scale": 0.0})
    with pytest.raises(ValueError, match="no QDMA"):
        build_model("daan_base", InputDims(12, 12, 10), {**SMALL, "qdma_lr_scale": 0.5})


def test_evaluating_along_the_way_leaves_the_training_as_it_was(tmp_path):
    """A run scored every 2 steps trains on the same batches as one scored only at the end: the same end point."""
    from bench.daan_evidence import prepare_benchmark
    from bench.synthetic_eval import evaluate_model

    torch.set_num_threads(1)
    paths = prepare_benchmark(tmp_path / "b", "UCF", 0.03)
    end = evaluate_model("daan_base", paths, "UCF", 4, 32, 0, "cpu")
    curved = evaluate_model("daan_base", paths, "UCF", 4, 32, 0, "cpu", eval_every=3)
    assert "curve" not in end and curved["eval_every"] == 3
    assert [p["step"] for p in curved["curve"]] == [3, 4]
    for m in ("S", "U", "HM", "ZSL"):
        assert curved[m] == end[m] == curved["curve"][-1][m]
    assert curved["loss"] == pytest.approx(end["loss"], abs=2e-4)


def test_the_evidence_commands_on_the_sequence_benchmark_with_curves_and_the_lr_control(tmp_path):
    from avzsl.app.cli import main as avzsl
    from bench.synthetic_eval import benchmark_paths

    data = str(tmp_path / "bench")
    avzsl(["--quiet", "evidence-benchmark", "--data", data, *TINY, "--generator", "sequence"])
    with pytest.raises(SystemExit, match="another benchmark"):
        benchmark_paths(tmp_path / "bench", "UCF", 0, 0.03, "synthetic")
    runs = []
    for variant in ("daan", "qdma.lr_scaled"):
        runs.append(str(tmp_path / f"{variant}.jsonl"))
        avzsl(["--quiet", "--threads", "1", "evidence-run", "--data", data, *TINY, "--generator", "sequence",
               "--steps", "2", "--eval-every", "1", "--batch-size", "16", "--variants", variant,
               "--qdma-lr-scale", "0.3", "--first-seed", "0", "--seeds", "1", "--json-out", runs[-1]])
    daan, control = (json.loads(open(r).read()) for r in runs)
    assert control["override"] == {"model": {"qdma_lr_scale": 0.3}} and control["model"] == "daan_qdma"
    assert [p["step"] for p in daan["curve"]] == [1, 2]
    for point in daan["curve"]:
        for part in ("a_attention", "a_tcn", "v_attention", "v_tcn"):
            assert 0 <= point["stats"][f"eta_floor.{part}"] <= 1
            assert 0.45 <= point["stats"][f"step_scale.{part}"] <= 1
    avzsl(["--quiet", "evidence-table", *runs, "--steps", "2", "--generator", "sequence", "--out",
           str(tmp_path / "t.md")])
    table = (tmp_path / "t.md").read_text()
    assert "UCF sequence benchmark" in table and "## Validation HM over training" in table
    assert "| daan | v_tcn |" in table and "| qdma.lr_scaled |" in table
    assert "scaled by 0.3." in table
