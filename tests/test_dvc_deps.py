"""dvc.yaml lists, for every stage, exactly the project code its module imports.

The import graph is walked statically (AST) from each stage's ``python -m <module>``, transitively
over the project packages: module-level and function-level imports, and module paths written as
strings in lazy tables (``hashers/registry.py``, ``pipeline/sources/__init__.py``). Package
``__init__.py`` files count as imported. A folder in ``deps`` stands for every file in it, so a folder
may be listed only when the stage imports all its ``.py`` files. A second test shows with
``dvc status`` that touching one file marks exactly the stages that import it.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("pipeline", "hashers", "retrieval", "privacy")
#: An import line ending in this marker is not a DVC dependency of the importing module's stages:
#: it checks params or names the error classes that exit 2 (neither changes an output), or it is
#: the lazy lookup behind ``Params.method_config`` / ``DataConfig.source``, whose only callers (the
#: train, train_dp, extract and attack stages) import ``hashers.registry`` / ``pipeline.sources``
#: themselves. Without it, every stage would depend on every hashing method and data source (a
#: changed method would re-extract the embeddings). Only the sites in VALIDATION_SITES may carry it.
VALIDATION_ONLY = "# dvc-deps: not an output dependency"
VALIDATION_SITES = {
    "pipeline/config.py",  # the kind / method / attack name checks of params parsing
    "pipeline/common.py",  # user_errors(): the error classes that exit 2
}
_MODULE_STRING = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.\w+)*)(?::\w+)?$")


def module_file(root: Path, module: str) -> Path | None:
    """The file of ``module`` under ``root`` (package ``__init__.py`` or ``.py``), if it exists."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name ``path`` may import: import statements anywhere (relative ones resolved)
    and ``pkg.mod`` / ``pkg.mod:attr`` string constants naming project modules."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and lines[
            node.end_lineno - 1
        ].rstrip().endswith(VALIDATION_ONLY):
            continue
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _MODULE_STRING.match(node.value)
            if match:
                out.add(match.group(1))
    return {m for m in out if m.split(".")[0] in PACKAGES}


def import_closure(root: Path, module: str) -> set[Path]:
    """Files of every project module ``module`` imports, transitively, with their packages."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            name = ".".join(parts[:i])
            path = module_file(root, name)
            if path is None or name in seen:
                continue
            seen[name] = path
            todo.extend(imported_names(path, name))
    return {p.relative_to(root) for p in seen.values()}


def stage_code(root: Path) -> dict[str, tuple[str, list[str]]]:
    """``{stage: (module, code deps)}`` from dvc.yaml (code deps: paths inside the packages)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        match = re.search(r"python -m ([\w.]+)", stage["cmd"])
        assert match, f"stage {name}: cmd does not run a module: {stage['cmd']}"
        code = [d for d in stage["deps"] if d.split("/")[0] in PACKAGES]
        out[name] = (match.group(1), code)
    return out


def coverage_problems(root: Path, module: str, deps: list[str]) -> list[str]:
    """What is wrong with ``deps`` for ``module``: imported files not covered, listed paths that
    nothing imports, folders holding files the stage does not import."""
    needed = import_closure(root, module)
    problems = []
    for path in sorted(needed):
        if not any(path == Path(d) or Path(d) in path.parents for d in deps):
            problems.append(f"missing {path}")
    for dep in deps:
        target = root / dep
        files = (
            {p.relative_to(root) for p in target.rglob("*.py") if "__pycache__" not in p.parts}
            if target.is_dir()
            else {Path(dep)}
        )
        unused = sorted(files - needed)
        if unused:
            problems.append(
                f"{dep} lists files the stage does not import: {[str(u) for u in unused]}"
            )
    return problems


def test_validation_only_imports_are_confined_to_the_params_and_error_checks() -> None:
    marked = {
        str(p.relative_to(REPO))
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
        if VALIDATION_ONLY in p.read_text()
    }
    assert marked <= VALIDATION_SITES, marked - VALIDATION_SITES


def test_callers_of_the_marked_lookups_import_them_themselves() -> None:
    """The marked lazy lookups stay honest: every stage module that calls ``method_config`` or
    ``data.source`` still has the registry / sources table in its own import closure."""
    for path in sorted((REPO / "pipeline").glob("*.py")):
        text = path.read_text()
        closure = import_closure(REPO, f"pipeline.{path.stem}")
        if ".method_config(" in text and path.name != "config.py":
            assert Path("hashers/registry.py") in closure, path.name
        if ".data.source(" in text:
            assert Path("pipeline/sources/__init__.py") in closure, path.name


def test_validation_only_marker_is_honoured(tmp_path: Path) -> None:
    pkg = tmp_path / "pipeline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(f"def f():\n    from pipeline import b  {VALIDATION_ONLY}\n")
    (pkg / "b.py").write_text("")
    assert Path("pipeline/b.py") not in import_closure(tmp_path, "pipeline.a")


@pytest.mark.parametrize("stage", sorted(stage_code(REPO)))
def test_stage_deps_are_exactly_the_imported_code(stage: str) -> None:
    module, deps = stage_code(REPO)[stage]
    problems = coverage_problems(REPO, module, deps)
    assert not problems, f"dvc.yaml stage {stage} ({module}): " + "; ".join(problems)


def test_walker_follows_lazy_imports_strings_and_packages(tmp_path: Path) -> None:
    (tmp_path / "pipeline" / "sub").mkdir(parents=True)
    files = {
        "pipeline/__init__.py": "",
        "pipeline/stage.py": "def f():\n    from pipeline import helper\n",
        "pipeline/helper.py": "TABLE = {'a': 'pipeline.sub.plugin:Thing'}\n",
        "pipeline/sub/__init__.py": "from .other import X\n",
        "pipeline/sub/plugin.py": "import numpy\n",
        "pipeline/sub/other.py": "X = 1\n",
        "pipeline/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    closure = {str(p) for p in import_closure(tmp_path, "pipeline.stage")}
    assert closure == set(files) - {"pipeline/unused.py"}
    assert coverage_problems(tmp_path, "pipeline.stage", ["pipeline/stage.py"]) == [
        "missing pipeline/__init__.py",
        "missing pipeline/helper.py",
        "missing pipeline/sub/__init__.py",
        "missing pipeline/sub/other.py",
        "missing pipeline/sub/plugin.py",
    ]
    problems = coverage_problems(tmp_path, "pipeline.stage", ["pipeline"])
    assert problems == ["pipeline lists files the stage does not import: ['pipeline/unused.py']"]


# --------------------------------------------------------------------------------------------
# dvc status in a throw-away copy
# --------------------------------------------------------------------------------------------


def _changed(work: Path) -> set[str]:
    """Stages that ``dvc status`` reports as changed (DVC's Python API: what the CLI prints),
    without the ``always_changed`` ones (the ``source`` digests, reported on every status)."""
    from dvc.repo import Repo

    with Repo(str(work)) as repo:
        always = {s.addressing.rsplit(":", 1)[-1] for s in repo.index.stages if s.always_changed}
        return {name.rsplit(":", 1)[-1] for name in repo.status()} - always


def test_touching_a_file_marks_exactly_the_stages_that_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs are stand-in files recorded with ``dvc commit`` (no stage runs): ``dvc status``
    compares only the recorded hashes of deps, so this is what a real study would see."""
    work = tmp_path / "study"
    work.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["datasets"] = ["breastmnist"]
    params["train"].update(methods=["dpsh"], bits=[12])
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from dvc.repo import Repo

    monkeypatch.chdir(work)  # DVC's API resolves stage paths against the working directory
    Repo.init(str(work), no_scm=True)  # dvc status compares hashes only: no git needed
    with Repo(str(work)) as repo:
        outs = [Path(o.fs_path) for stage in repo.index.stages for o in stage.outs]
        for out in outs:  # stand-ins for the outputs, so that dvc commit can record every stage
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("{}\n")
        repo.commit(force=True)
        expanded = {stage.addressing.rsplit(":", 1)[-1] for stage in repo.index.stages}
    assert _changed(work) == set()

    # which stages import each file, by the (separately tested) walker; dvc status must agree
    code = stage_code(REPO)
    closures = {full: import_closure(REPO, code[full.split("@")[0]][0]) for full in expanded}
    files = ("pipeline/plots.py", "pipeline/train.py", "pipeline/sources/medmnist.py")
    files += ("retrieval/metrics.py",)
    expected = {f: {s for s, c in closures.items() if Path(f) in c} for f in files}
    assert "train@breastmnist-dpsh-12" in expected["pipeline/train.py"]
    assert "knn@breastmnist" not in expected["pipeline/train.py"]
    assert "train@breastmnist-dpsh-12" not in expected["pipeline/plots.py"]
    for path, want in expected.items():
        target = work / path
        original = target.read_text()
        target.write_text(original + "\n# touched\n")
        assert _changed(work) == want - {"source@breastmnist"}, path  # always changed anyway
        target.write_text(original)
        assert _changed(work) == set(), path


def suggested_deps(root: Path, module: str) -> list[str]:
    """The shortest exact code deps for ``module``: a package folder where the stage imports every
    file in it, single files elsewhere."""
    needed = import_closure(root, module)
    out: list[str] = []
    covered: set[Path] = set()
    for folder in sorted({p.parent for p in needed}, key=lambda p: len(p.parts)):
        if any(c in folder.parents or c == folder for c in covered):
            continue
        files = {
            p.relative_to(root)
            for p in (root / folder).rglob("*.py")
            if "__pycache__" not in p.parts
        }
        if folder != Path(".") and len(folder.parts) > 0 and files <= needed and len(files) > 1:
            covered.add(folder)
            out.append(str(folder))
    out += [str(p) for p in sorted(needed) if not any(c in p.parents for c in covered)]
    return sorted(out)


def rewrite_dvc_yaml(root: Path) -> None:
    """Replace the package entries of every stage's ``deps`` in dvc.yaml (text edit, comments kept)."""
    lines = (root / "dvc.yaml").read_text().splitlines(keepends=True)
    code = stage_code(root)
    out, stage, in_deps = [], None, False
    for line in lines:
        m = re.match(r"^  ([\w-]+):\s*(#.*)?$", line)
        if m:
            stage = m.group(1)
        if re.match(r"^    deps:\s*$", line):
            in_deps = True
            out.append(line)
            out += [f"      - {d}\n" for d in suggested_deps(root, code[stage][0])]
            continue
        if in_deps:
            item = re.match(r"^      - (\S+)", line)
            if item:
                if item.group(1).split("/")[0] in PACKAGES:
                    continue
                out.append(line)
                continue
            in_deps = False
        out.append(line)
    (root / "dvc.yaml").write_text("".join(out))


if __name__ == "__main__":  # `python -m tests.test_dvc_deps` rewrites dvc.yaml's code deps
    rewrite_dvc_yaml(REPO)
