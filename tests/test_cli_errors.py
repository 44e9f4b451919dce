"""Every command of ``avzsl`` answers a missing or damaged input with one line, ``avzsl <command>: error: ...``,
naming the file or URL (no traceback); a new command must add its case here. The hostile-network and archive cases
of the fetching commands: tests/test_fetch_verified.py, tests/test_archive_safety.py, tests/test_fetch_rules.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from helpers import cli_error

from avzsl.app.cli import parser

GARBAGE = b'garbage\x00\x01,"\n'


def _cases(t: Path) -> dict[str, tuple[list[str], str]]:
    """command -> (arguments, what its one line must name)."""
    bad, missing, out = str(t / "bad.csv"), str(t / "missing"), str(t / "out")
    bad_json = str(t / "bad.json")
    return {
        "demo-videos": (["--manifest", f"{out}/m.csv", "--class-names", f"{out}/c.csv", "--spec", '{"n_visuals": -1}'],
                      "n_visuals"),
        "scan-local-folder": (["--root", missing, "--manifest", f"{out}/m.csv", "--class-names", f"{out}/c.csv"], missing),
        "extract": (["--manifest", bad, "--out", f"{out}/x.h5"], bad),
        "fetch": (["--url", f"{missing}.pth", "--out", f"{out}/w.pth"], f"{missing}.pth"),
        "lock": (["--update", "https://example.org/never-locked.pth"], "never-locked.pth"),
        "download": (["--list", bad, "--manifest", f"{out}/m.csv", "--unavailable", f"{out}/u.tsv"], bad),
        "download-manifest": (["--list", bad, "--shard-manifest", f"{missing}.csv", "--shard-unavailable",
                            f"{missing}.tsv", "--manifest", f"{out}/m.csv", "--unavailable", f"{out}/u.tsv",
                            "--class-names", f"{out}/c.csv", "--coverage-tsv", f"{out}/c.tsv", "--coverage-md",
                            f"{out}/c.md"], missing),
        "ucf-archive": (["--archive", bad, "--manifest", f"{out}/m.csv", "--class-names", f"{out}/c.csv"], bad),
        "merge-features": (["--out", f"{out}/f.h5", bad], bad),
        "build-splits": (["--manifest", bad, "--recipe", "{}", "--out", f"{out}/s"], bad),
        "copy-splits": (["--src", missing, "--out", f"{out}/s"], missing),
        "fetch-official-splits": (["--dataset", "UCF", "--cache", f"{out}/c", "--out", f"{out}/s", "--source", missing],
                            missing),
        "official-download-list": (["--splits", missing, "--dataset", "VGGSound", "--out", f"{out}/l.csv"], missing),
        "leakage-free-splits": (["--manifest", bad, "--recipe", "{}", "--backbone", "selavi", "--out", f"{out}/s",
                                 "--report", f"{out}/r.md"], bad),
        "split-coverage": (["--manifest", bad, "--split-dir", missing, "--coverage-tsv", f"{out}/c.tsv", "--coverage-md",
                      f"{out}/c.md"], bad),
        "class-text": (["--splits", missing, "--class-names", bad, "--out", f"{out}/t.h5"], missing),
        "import-released": (["features", "--root", missing, "--dataset", "UCF", "--feature-set", "main", "--out",
                         f"{out}/f.h5"], missing),
        "resolve": (["--model", "no_such_model"], "no_such_model"),
        "train": (["--stage", "1", "--run-dir", f"{out}/r", "--features", bad, "--splits", missing, "--text", bad],
                  missing),
        "evaluate": (["--model-path", bad, "--selection", bad_json, "--out", f"{out}/t.json", "--features", bad,
                      "--splits", missing, "--text", bad], bad_json),
        "summary": (["--csv", f"{out}/s.csv", "--md", f"{out}/s.md", bad_json], bad_json),
        "report-files": (["--out-dir", f"{out}/report", bad_json], bad_json),
        "evidence-benchmark": (["--data", f"{out}/bench", "--dataset", "NoSuchSet"], "NoSuchSet"),
        "evidence-run": (["--data", f"{out}/bench", "--variants", "no_such_variant", "--json-out", f"{out}/r.jsonl"],
                         "no_such_variant"),
        "evidence-table": (["--out", f"{out}/t.md", bad_json], bad_json),
    }


def _commands() -> list[str]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_has_a_case(tmp_path):
    assert sorted(_cases(tmp_path)) == _commands()


@pytest.mark.parametrize("command", _commands())
def test_a_bad_input_is_one_line_naming_it(tmp_path, command):
    (tmp_path / "bad.csv").write_bytes(GARBAGE)
    (tmp_path / "bad.json").write_text("{")
    argv, named = _cases(tmp_path)[command]
    message = cli_error(command, *argv)
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"avzsl {command}: error: ") and named in message, message
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
