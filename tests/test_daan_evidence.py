"""The evidence table's statistics: hand-computed Welch t, mean ± std and the seed-noise marks."""

import pytest

from bench.daan_evidence import VARIANTS, markdown, summarise, welch_t
from training.models import MODELS


def test_welch_t_by_hand():
    # means 2 and 1, variances 1 and 1, n = 3 each: t = 1 / sqrt(1/3 + 1/3)
    assert welch_t([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]) == pytest.approx(1 / (2 / 3) ** 0.5)
    assert welch_t([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert welch_t([1.0], [2.0, 3.0]) == pytest.approx(-1.5 / (0.5 / 2) ** 0.5)  # one seed: the other's spread alone


def test_summary_marks_only_differences_beyond_the_seed_noise():
    def run(s, u, hm, z, eta=0.0):
        return {"S": s, "U": u, "HM": hm, "ZSL": z, "stats": {"eta_std.a_attention": eta}}
    runs = {"base": [run(40, 20, 26.7, 30), run(42, 22, 28.9, 31), run(41, 21, 27.8, 29)],
            "daan": [run(50, 21, 29.6, 30), run(52, 20, 28.9, 31), run(51, 22, 30.8, 32, eta=0.1)]}
    rows = {r["variant"]: r for r in summarise(runs, t_threshold=2.0)}
    assert rows["base"]["S"] == (41.0, 1.0) and "t_S" not in rows["base"]
    assert rows["daan"]["beyond_noise_S"] and not rows["daan"]["beyond_noise_U"]
    assert rows["daan"]["eta_spread"] == pytest.approx(0.1 / 3)
    text = markdown(list(rows.values()), {"dataset": "UCF", "steps": 60, "seeds": 3, "t": 2.0, "chance_gzsl": 2.38,
                                          "chance_zsl": 8.33})
    assert "| daan | 51.00 ± 1.00 ✱ | 21.00 ± 1.00 |" in text
    single = {r["variant"]: r for r in summarise({"base": runs["base"][:1], "daan": runs["daan"][:1]})}
    assert "t_S" not in single["daan"] and not single["daan"].get("beyond_noise_S")


def test_every_variant_names_a_model_and_known_hyper_parameters():
    for name, (model, overrides) in VARIANTS.items():
        assert set(overrides) <= set(MODELS[model].hparams), name


def test_the_workflow_offers_exactly_the_script_variants():
    import yaml
    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    ev = schema["properties"]["evidence"]["properties"]["variants"]
    assert ev["items"]["enum"] == list(VARIANTS) and ev["default"] == list(VARIANTS)


@pytest.mark.slow
def test_per_job_runs_make_the_same_table_as_one_invocation(tmp_path, capsys):
    """What the Snakemake target does (the avzsl evidence commands: a benchmark, one job per variant and seed, then
    the table) equals one run of the script."""
    from avzsl.app.cli import main as avzsl
    from bench.daan_evidence import main

    size = ["--scale", "0.03"]
    training = ["--steps", "2", "--batch-size", "32"]
    data = str(tmp_path / "bench")
    avzsl(["--quiet", "evidence-benchmark", "--data", data, *size])
    jobs = []
    for variant in ("base", "daan"):
        for seed in (0, 1):
            jobs.append(str(tmp_path / f"{variant}.{seed}.jsonl"))
            avzsl(["--quiet", "--threads", "1", "evidence-run", "--data", data, *size, *training, "--variants",
                   variant, "--first-seed", str(seed), "--seeds", "1", "--json-out", jobs[-1]])
    avzsl(["--quiet", "evidence-table", *jobs, "--steps", "2", "--out", str(tmp_path / "table.md")])
    main([*size, *training, "--threads", "1", "--data", data, "--variants", "base,daan", "--seeds", "2", "--out",
          str(tmp_path / "one.md")])
    table = (tmp_path / "table.md").read_text()
    assert table == (tmp_path / "one.md").read_text()
    main_table = table.split("Chance:")[0]  # then the curves (one point: the default eval_every exceeds 2 steps)
    assert "2 seeds" in table and main_table.count("| base |") == 1 and main_table.count("| daan |") == 1
    assert "## Validation HM over training" in table and "| variant | step 2 |" in table


def test_the_named_comparisons_give_difference_t_and_p_by_hand():
    from bench.daan_evidence import compare, comparison_table

    def run(hm):
        return {"S": 50.0, "U": 20.0, "HM": hm, "ZSL": 30.0}
    runs = {"qdma": [run(30.0), run(31.0), run(32.0)], "daan": [run(28.0), run(29.0), run(30.0)],
            "qdma.lr_scaled": [run(28.0), run(29.0), run(30.0)], "daan.no_noise": [run(29.0)]}
    rows = {(r["variant"], r["against"]): r for r in compare(runs, t_threshold=2.0)}
    # base is missing and no_noise has one seed: only the pairs with two seeds a side
    assert set(rows) == {("daan", "qdma"), ("daan", "qdma.lr_scaled"), ("qdma.lr_scaled", "qdma")}
    hm = rows[("daan", "qdma")]["HM"]
    # means 29 and 31, variances 1 and 1, n = 3: t = -2 / sqrt(2/3), df = 4, two-sided p = 0.0705
    assert hm["diff"] == -2.0 and hm["t"] == pytest.approx(-2 / (2 / 3) ** 0.5) and hm["beyond_noise"]
    assert hm["p"] == pytest.approx(0.0705, abs=5e-4)
    same = rows[("daan", "qdma.lr_scaled")]
    assert same["HM"]["diff"] == 0.0 and same["HM"]["p"] == pytest.approx(1.0) and not same["HM"]["beyond_noise"]
    assert same["S"]["t"] == 0.0 and not same["S"]["beyond_noise"]  # neither varies, means agree
    text = "\n".join(comparison_table(list(rows.values()), 2.0))
    assert "| daan | qdma | CSGM (both parts) |" in text and "-2.00 (t -2.4, p 0.07) ✱" in text
    assert "best HM" not in rows[("daan", "qdma")] and "best HM |" not in text  # no curves: no best-HM column


def test_the_comparisons_add_the_best_hm_along_the_curve():
    from bench.daan_evidence import compare

    def run(final, peak):
        return {"S": 50.0, "U": 20.0, "HM": final, "ZSL": 30.0,
                "curve": [{"step": 100, "HM": peak}, {"step": 200, "HM": final}]}
    runs = {"qdma": [run(25.0, 35.0), run(26.0, 36.0)], "base": [run(25.0, 30.0), run(26.0, 31.0)]}
    (row,) = compare(runs)
    assert row["HM"]["diff"] == 0.0 and row["best HM"]["diff"] == 5.0 and row["best HM"]["beyond_noise"]
