"""The shape of the code base: one direction of imports, Lightning's private names still there, a
clean tree after the commands run, and benchmarks that still run."""

from __future__ import annotations

import ast
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_pl import lightning_internals

from .helpers import QUIET, REPO, run_main

PACKAGE = REPO / "fmnist_pl"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in it (function-local imports included)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b` imports the module a.b when there is one, else a name from a.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): project_imports(path, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "fmnist_pl.export" in graph["fmnist_pl.cli"]  # function-local imports are seen
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# The package's layers, lowest first, and what each may import. A module is in the layer of the
# longest prefix of its name here.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("errors", "atomic", "pixels", "hparams", "argparse_internals", "lightning_internals"),
    "networks": ("model",),
    "data": ("data",),
    "pictures": ("plots",),
    "checkpoint files": ("checkpoints", "runs", "trained"),
    "training": ("module", "techniques", "callbacks", "speed"),
    "commands": ("cli", "usage", "show", "export", "sweep", "serve", "__main__"),
}
MAY_IMPORT: dict[str, set[str]] = {
    "foundation": {"foundation"},
    "networks": {"foundation", "networks"},  # no Lightning, no data, no training code
    "data": {"foundation", "data"},
    "pictures": {"foundation", "data", "pictures"},
    "checkpoint files": {"foundation", "networks", "data", "checkpoint files"},  # a network from its file
    "training": {"foundation", "networks", "data", "pictures", "checkpoint files", "training"},
    "commands": set(LAYERS),
}


def layer_of(module: str) -> str | None:
    name = module.removeprefix("fmnist_pl").removeprefix(".")
    matches = [
        (len(prefix), layer)
        for layer, prefixes in LAYERS.items()
        for prefix in prefixes
        if name == prefix or name.startswith(f"{prefix}.")
    ]
    return max(matches)[1] if matches else None


def test_dependencies_point_one_way() -> None:
    graph = import_graph()
    unplaced = [module for module in graph if layer_of(module) is None and module != "fmnist_pl"]
    assert unplaced == [], f"modules in no layer: {unplaced}"
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, imported in graph.items()
        for target in imported
        if module != "fmnist_pl" and layer_of(target) not in MAY_IMPORT[layer_of(module)]
    ]
    assert upward == []
    assert "lightning" not in (PACKAGE / "model.py").read_text()
    # Between commands, only the entry point dispatches to the others.
    commands = {
        "fmnist_pl.cli",
        "fmnist_pl.export",
        "fmnist_pl.show",
        "fmnist_pl.sweep.command",
        "fmnist_pl.serve.command",
    }
    for module, imported in graph.items():
        if module not in ("fmnist_pl.cli", "fmnist_pl.__main__"):
            assert not imported & commands, f"{module} imports a command: {imported & commands}"
    # The table is checked for real: an upward import is found.
    assert layer_of("fmnist_pl.model") == "networks" and "training" not in MAY_IMPORT["networks"]


def test_every_private_lightning_name_relied_on_is_still_there() -> None:
    assert lightning_internals.missing() == [], "\n".join(lightning_internals.missing())


# Lightning's checkpoint layout below its documented top level: read through lightning_internals.
CHECKPOINT_LAYOUT = {"loops", "fit_loop", "epoch_progress", "batch_progress"}


def foreign_private_uses(trees: dict[Path, ast.Module]) -> list[str]:
    """Each ``x._name`` (and ``getattr(x, "_name")``) whose name the package itself never defines, so
    another package's private name, and each key of Lightning's inner checkpoint layout."""
    ours = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                ours.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    ours.add(node.attr)  # set on our own objects (another's, ``logger._version = v``, is not)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                ours.add(node.id)
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                name = node.args[1].value
            elif isinstance(node, ast.Constant) and (
                node.value in CHECKPOINT_LAYOUT or str(node.value).startswith("ModelCheckpoint{")
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: checkpoint key {node.value!r}")
                continue
            private = isinstance(name, str) and name.startswith("_") and not name.startswith("__")
            if private and name not in ours:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_other_packages_private_names_are_used_only_in_the_internals_modules() -> None:
    trees = {path: ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}
    elsewhere = {path: tree for path, tree in trees.items() if not path.name.endswith("_internals.py")}
    assert foreign_private_uses(elsewhere) == []
    # The check finds what it looks for: each internals module holds at least one.
    internals = {path: tree for path, tree in trees.items() if path.name.endswith("_internals.py")}
    assert len(internals) >= 3
    for path, tree in internals.items():
        assert foreign_private_uses({path: tree, **elsewhere}), path


def tracked_copy(destination: Path) -> Path:
    """The working tree's tracked files, with their .gitignore, as a fresh repository's first commit."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=destination, check=True)
    subprocess.run([*git, "add", "-A"], cwd=destination, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=destination, check=True)
    return destination


@pytest.mark.slow
def test_fit_test_and_predict_from_a_clones_root_leave_git_status_clean(
    tmp_path: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tracked_copy(tmp_path / "clone")
    monkeypatch.setenv("FMNIST_DATA", str(real_data_dir / "FashionMNIST" / "raw"))
    small = [*QUIET, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    run_main(["fit", "--config", "configs/seed.yaml", *small], clone, monkeypatch)  # the default data folder
    ckpt = "lightning_logs/seed/version_0/checkpoints/last.ckpt"
    run_main(["test", f"--ckpt_path={ckpt}", *QUIET, "--trainer.limit_test_batches=1"], clone, monkeypatch)
    run_main(["predict", f"--ckpt_path={ckpt}", *QUIET, "--trainer.limit_predict_batches=1"], clone, monkeypatch)
    assert (clone / "data").is_dir() and (clone / ckpt).is_file()
    assert list((clone / "lightning_logs" / "seed" / "version_0").rglob("predictions.csv"))
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""


@pytest.fixture
def run_benchmark(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """``run_benchmark(SCRIPT, *ARGS)``: the script's own code as ``python SCRIPT ARGS`` runs it, in this
    process (its variants still get processes of their own); returns what it printed."""

    def run(script: str, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [str(REPO / script), *args])
        monkeypatch.chdir(REPO)
        monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # a script imports its siblings
        capsys.readouterr()
        runpy.run_path(str(REPO / script), run_name="__main__")
        return capsys.readouterr().out

    return run


@pytest.mark.slow
def test_the_epoch_benchmark_runs_at_its_smallest_size(run_benchmark, real_data_dir: Path, tmp_path: Path) -> None:
    out = run_benchmark(
        "benchmarks/epoch_time.py",
        "--epochs=1",
        "--rounds=1",
        "--limit-batches=3",
        f"--data-dir={real_data_dir}",
        f"--log-dir={tmp_path}",
        "--accelerator=cpu",
        "--variants=tutorial,fast,bare,lightning",  # torchvision: fast's code with the other loader
        "--in-process",  # the subprocesses only add their start-up; the script's own run is the same
    )
    names = {"tutorial", "fast", "bare", "lightning"}
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in names}
    assert set(rows) == names
    for row in rows.values():
        assert float(row[1]) > 0 and int(row[2]) == 192  # 3 batches of 64
        assert all(ratio.endswith("x") and float(ratio[:-1]) > 0 for ratio in row[4:7])  # vs (a), (d), (e)
    assert rows["lightning"][6] == "1.00x" and rows["bare"][5] == "1.00x"


@pytest.mark.slow
def test_the_figures_benchmark_runs_at_its_smallest_size(run_benchmark, real_data_dir: Path, tmp_path: Path) -> None:
    out = run_benchmark(
        "benchmarks/figures_overhead.py",
        "--epochs=2",
        "--limit-batches=2",
        f"--data-dir={real_data_dir}",
        f"--log-dir={tmp_path}",
    )
    rows = [line for line in out.splitlines() if line.startswith(("training part", "whole epoch", "all epochs"))]
    assert len(rows) == 3 and all(line.rstrip().endswith("%") for line in rows)


@pytest.mark.slow
def test_the_predict_benchmark_runs_at_its_smallest_size(
    run_benchmark, trained_checkpoint: Path, real_data_dir: Path
) -> None:
    out = run_benchmark(
        "benchmarks/predict_throughput.py",
        f"--ckpt_path={trained_checkpoint}",
        f"--data-dir={real_data_dir}",
        "--files=20",
    )
    rates = [line for line in out.splitlines() if line.startswith("predict,")]
    assert len(rates) == 2 and "20 PNG files" in rates[1]
    assert all(float(line.split()[-2].replace(",", "")) > 0 for line in rates)


@pytest.mark.slow
def test_the_time_to_accuracy_benchmark_runs_at_its_smallest_size(run_benchmark, real_data_dir: Path) -> None:
    # One seed, one epoch, one whole fit command and the bare floor: every other fit variant runs the
    # same code with another config, and the tutorial's loop is epoch_time.py's (tested above).
    out = run_benchmark(
        "benchmarks/time_to_accuracy.py",
        "--max-epochs=1",
        "--seeds=1",
        "--long-seeds=1",
        "--variants=fast,bare",
        f"--data-dir={real_data_dir}",
    )
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["fast"], ["bare"])}
    assert set(rows) == {"fast", "bare"}
    for row in rows.values():
        seeds, whole, train, accuracy = int(row[1]), float(row[2]), float(row[3]), float(row[4])
        assert seeds == 1 and whole > train > 0, row
        assert 50 < accuracy < 95, row  # one epoch of training: far above chance, below a finished run
    assert float(rows["fast"][2]) > 2  # the whole command, Python's start and imports included


@pytest.mark.slow
def test_the_threads_benchmark_runs_at_its_smallest_size(run_benchmark, real_data_dir: Path) -> None:
    # The one variant started another way (torch imported first); the others are the plain command,
    # once or twice at a time.
    out = run_benchmark(
        "benchmarks/threads.py",
        "--epochs=1",
        "--repeats=1",
        "--variants=alone-torch",
        f"--data-dir={real_data_dir}",
        "--extra",
        "--trainer.limit_train_batches=5",
        "--trainer.limit_val_batches=2",
    )
    (row,) = [line for line in out.splitlines() if line.startswith("alone")]
    assert row.startswith("alone, torch's own OpenMP waiting"), out
    assert float(row.split(" s ")[0].split()[-1]) > 1, out  # a whole command: Python, imports and the fit


@pytest.mark.slow
def test_the_serve_benchmark_runs_at_its_smallest_size(
    run_benchmark, trained_checkpoint: Path, real_data_dir: Path
) -> None:
    out = run_benchmark(
        "benchmarks/serve_throughput.py",
        f"--ckpt_path={trained_checkpoint}",
        f"--data-dir={real_data_dir}",
        "--requests=20",
        "--images=10",
        "--concurrency=1,4",
        "--variants=serve,floor",
    )
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["serve"], ["floor"])]
    rows = [row for row in rows if row[1].isdigit()]  # the table, not the ratio lines
    assert [(row[0], row[1]) for row in rows] == [("serve", "1"), ("serve", "4"), ("floor", "1"), ("floor", "4")]
    for row in rows:
        assert float(row[2]) > 0 and float(row[4]) >= float(row[3]) > 0 and row[5] == "0", row  # no errors
    assert "serve vs floor at concurrency 4: " in out
    assert "serve vs predict's CSV: same class on 10/10 files" in out


def test_lint_covers_every_source_file_and_skips_only_the_top_level_data_and_runs(tmp_path: Path) -> None:
    # A copy of the tree with a data folder and a run folder at the top, as after `make fit`.
    clone = tmp_path / "clone"
    shutil.copytree(
        REPO, clone, ignore=shutil.ignore_patterns(".venv", ".git", "lightning_logs", "data", "__pycache__")
    )
    for folder in ("data", "lightning_logs"):
        (clone / folder).mkdir()
        (clone / folder / "stray.py").write_text("import os\n")
    listed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-files", "."], cwd=clone, capture_output=True, text=True
    )
    checked = {Path(line).relative_to(clone) for line in listed.stdout.split()}
    sources = {
        path.relative_to(clone) for top in ("fmnist_pl", "tests", "benchmarks") for path in (clone / top).rglob("*.py")
    }
    assert sources <= checked, sorted(sources - checked)  # fmnist_pl/data/ included
    assert not {path for path in checked if path.parts[0] in ("data", "lightning_logs")}
