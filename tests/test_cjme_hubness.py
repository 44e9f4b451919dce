import pytest
import torch

from bench.cjme_hubness import cosine_distance, hub, main, report
from training import engine
from training import run_dir as rd
from training.config import RunConfig, TrainConfig, resolve_hparams


def test_cosine_distance_and_hub_by_hand():
    x = torch.tensor([[1.0, 0.0], [2.0, 2.0], [0.0, 3.0]])
    y = torch.tensor([[4.0, 0.0], [0.0, 0.5]])
    d = cosine_distance(x, y)
    torch.testing.assert_close(d, torch.tensor([[0.0, 1.0], [1 - 2 ** -0.5, 1 - 2 ** -0.5], [1.0, 0.0]]))
    # L2: the short class vector (0, 0.5) is the nearest to all three videos (1.12 < 3, 2.50 < 2.83, 2.50 < 5)
    share, norm = hub(torch.cdist(x, y), y)
    assert share == pytest.approx(100.0) and norm == pytest.approx(0.5)
    # cosine ignores norms: class 0 takes videos 0 and 1 (a tie goes to the first class), class 1 video 2
    share, norm = hub(d, y)
    assert share == pytest.approx(200 / 3) and norm == pytest.approx(4.0)


def test_reads_a_trained_cjme_run_and_reproduces_its_test_json(tiny_dataset, tmp_path, capsys):
    hp = resolve_hparams("cjme", "demo")
    train = TrainConfig.from_dict({**hp["train"], "epochs": 2, "n_batches": 3, "batch_size": 16})
    cfg = RunConfig(model="cjme", seed=5, train=train, model_params=hp["model"], dataset="tiny",
                    feature_set="handcrafted", profile="demo", features=str(tiny_dataset["features"]),
                    splits=str(tiny_dataset["splits"]), text=str(tiny_dataset["text"]), device="cpu")
    run = tmp_path / "cjme" / "seed5"
    selection = rd.Selection.from_dict(engine.train_stage(cfg, 1, rd.stage_path(run, 1), progress=False))
    selection.write(rd.selection_path(run))
    engine.train_stage(cfg, 2, rd.stage_path(run, 2), selection, progress=False)
    rd.TestResult.from_dict(engine.evaluate_test(cfg, rd.model_path(run), selection)).write(rd.test_path(run))

    r = report(run)  # exits if the recomputed published scores differ from test.json
    test = rd.TestResult.read(rd.test_path(run))
    assert r["published"]["HM"] == pytest.approx(test.HM, abs=0.05)
    assert r["published"]["ZSL"] == r["l2_beta0"]["ZSL"]  # ZSL does not depend on β
    assert 0 < r["hub_l2"][0] <= 100 and r["norms"]["text_min"] <= r["hub_l2"][1] <= r["norms"]["text_max"]
    main([str(run)])
    out = capsys.readouterr().out
    assert "| seed5 |" in out and "cosine_beta0: HM" in out
