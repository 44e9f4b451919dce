import json

from training.report.records import read_summary_csv, summary_rows
from training.report.tables import build_table, render_markdown, write_summary


def _result(tmp_path, model, family, seed, hm, ds="demo"):
    d = tmp_path / ds / model / str(seed)
    d.mkdir(parents=True)
    r = {"dataset": ds, "feature_set": "handcrafted", "family": family, "model": model, "display_name": model.upper(),
         "seed": seed, "S": hm + 1, "U": hm - 1, "HM": hm, "ZSL": hm + 2, "beta": 0.4, "best_epoch": 3,
         "code_version": "git:abc"}
    (d / "test.json").write_text(json.dumps(r))
    return d / "test.json"


def test_summary_groups_by_type_and_aggregates_seeds(tmp_path):
    files = [_result(tmp_path, "avca", "Audio-visual", s, hm) for s, hm in ((1, 40.0), (2, 44.0))]
    files.append(_result(tmp_path, "ale", "ZSL", 1, 20.0))
    files.append(_result(tmp_path, "ale", "ZSL", 2, 20.0))
    rows = write_summary(files, tmp_path / "s.csv", tmp_path / "s.md")
    assert [r.model for r in rows] == ["ale", "ale", "avca", "avca"]  # ZSL group first, like Table I
    back = read_summary_csv(tmp_path / "s.csv")
    assert back == rows  # the csv keeps every field (numbers at two decimals)
    assert back[2].HM == 40.0 and back[2].seed == 1
    md = (tmp_path / "s.md").read_text()
    assert "| ZSL | ALE | 21.00 ± 0.00 | 19.00 ± 0.00 | 20.00 ± 0.00 | 22.00 ± 0.00 |" in md
    assert "| Audio-visual | AVCA | 43.00 ± 2.83 | 41.00 ± 2.83 | 42.00 ± 2.83 | 44.00 ± 2.83 |" in md
    assert "## Per seed" in md and "git:abc" in md


def test_one_seed_plain_numbers_and_several_datasets(tmp_path):
    rows = summary_rows([_result(tmp_path, "avca", "Audio-visual", 1, 30.0, ds) for ds in ("ucf", "vggsound")])
    md = render_markdown(build_table(rows))
    assert "ucf · handcrafted S" in md and "vggsound · handcrafted S" in md
    assert "| Audio-visual | AVCA | 31.00 | 29.00 | 30.00 | 32.00 | 31.00 | 29.00 | 30.00 | 32.00 |" in md
    assert "Per seed" not in md
