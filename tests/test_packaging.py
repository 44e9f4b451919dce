"""The environment files, the entry point and the README commands agree with each other."""

import re
import subprocess
import sys

import tomllib
from conftest import REPO


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_console_entry_point_runs_every_stage():
    out = subprocess.run([sys.executable, "-m", "avzsl", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("demo-videos", "extract", "merge-features", "build-splits", "class-text", "import-released", "train",
                "evaluate", "summary", "evidence-run"):
        assert cmd in out.stdout
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"avzsl": "avzsl.app.cli:main"}


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert test_cmd in ci, "the README's test command is not what .ci/run runs"


def test_no_absolute_machine_paths_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"(/work/|/home/\w+|/Users/\w+|/root/)")
    offenders = [f for f in files if (REPO / f).is_file() and f.endswith((".py", ".smk", ".yaml", ".md", ".toml", ""))
                 and not f.startswith("tests/") and pattern.search((REPO / f).read_text(errors="ignore"))]
    assert offenders == []


def _readme_section(title: str) -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_lists_every_command_of_each_package_in_order():
    import argparse

    from avzsl.app.cli import PACKAGES

    listed = {}
    for item in re.findall(r"^- .*?(?=^- |\Z)", _readme_section("Commands"), re.M | re.S):
        module = re.search(r"\(`(\w+)/cli\.py`\)", item).group(1)
        listed[module] = re.findall(r"`([a-z][a-z0-9-]*)`", item.split(":", 1)[1])
    for package in PACKAGES:
        names = package.add_commands(argparse.ArgumentParser().add_subparsers())
        assert listed[package.__name__.split(".")[0]] == names, package.__name__
    assert set(listed) == {p.__name__.split(".")[0] for p in PACKAGES}


def test_the_readme_layout_names_every_folder_and_rule_file():
    block = _readme_section("Layout").split("```\n", 2)[1]
    entries = {m.group(1): m.group(0) for m in re.finditer(r"^(\S+)[^\n]*(?:\n {2,}[^\n]*)*", block, re.M)}
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folders = {f.split("/")[0] for f in tracked if "/" in f and not f.startswith(".")}
    named = {e.split("/")[0] for e in entries}
    assert folders <= named, f"not in the README's layout: {sorted(folders - named)}"
    assert named <= folders | {"Snakefile"}, f"in the layout but not in the repository: {sorted(named - folders)}"
    rules = entries["workflow/rules/*.smk"]
    stems = {p.stem for p in (REPO / "workflow" / "rules").glob("*.smk")}
    assert {s for s in stems if re.search(rf"\b{s}\b", rules)} == stems, rules
