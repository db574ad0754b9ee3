"""dvc.yaml lists, for every stage, the params.yaml keys its code reads.

A stage re-runs on ``dvc repro`` only when a key under its ``params:`` changes; a key the code reads
but the stage does not list leaves the stage's outputs stale when it changes. The reads are found
statically (AST), per function, over the stage module's import closure (the walker of
``tests/test_dvc_deps.py``):

* roots: function arguments annotated with :class:`pipeline.config.Params` or one of its section
  classes (``KnnConfig`` -> ``knn``, ``DataConfig`` -> ``data``, ...), any other name ``params``
  (the stages' name for the loaded Params: ``params = load(args)``, ``params: Any``) and names
  assigned from a chain of them (``t = params.train``, ``seed, data = params.seed, params.data``,
  ``data = dataclasses.replace(data, ...)``);
* a read is the chain of field names after a root (``t.lr`` -> ``train.lr``); a section used whole
  (``to_dict(params.backbone)``) reads every key of it; ``params.method_config(m)`` reads
  ``methods.<method>``, ``params.data.source(d)`` ``data.sources.<dataset>``, the ``strengths`` /
  ``snrs_db`` properties and ``KnnConfig.check_database`` the keys behind them;
* a whole config passed to a function (``load_backbone(params.backbone)``) is not a read: the
  callee's annotated argument is a root;
* only functions reachable from the stage module's ``main`` count: a name through its module's
  imports; ``obj.name(...)`` and ``hook = getattr(obj, "name")`` (registries' plug-in modules) reach
  every function of that name whose argument count fits (an over-approximation: the branch a
  stage's command-line flags take is not known).

Not output dependencies, so never required: ``tracking.*`` (where MLflow logs: no output file
changes), arguments of ``log_params`` / ``log.<level>`` calls and ``run_params`` (MLflow params),
and ``pipeline/config.py``'s parsing (every stage validates all of params.yaml).
Branches one module takes for one stage only (``--mechanism``, the float control, forced DP
settings) are listed in :data:`NOT_READ_BY`, each with its reason. Limits: a read through a name the
scan cannot type (an unannotated argument, ``getattr`` with a computed name) is missed.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import yaml

from pipeline import config as pconfig
from tests.conftest import REPO
from tests.test_dvc_deps import import_closure, stage_code

#: section classes of params.yaml: annotation name -> dotted prefix ("*": a matrix item)
SECTIONS = {
    "Params": "",
    "DataConfig": "data",
    "SourceConfig": "data.sources.*",
    "BackboneConfig": "backbone",
    "KnnConfig": "knn",
    "TrainConfig": "train",
    "TrackingConfig": "tracking",
    "DPParams": "dp",
    "ReleaseParams": "release",
    "RetrievalConfig": "retrieval",
    "AttackConfig": "attack",
    "ReportParams": "report",
}
#: keys that cannot change an output: where MLflow logs
NOT_OUTPUTS = ("tracking",)
#: calls whose arguments are only logged (MLflow params, log lines) and functions that only build
#: MLflow params
LOGGING_CALLS = {"log_params", "debug", "info", "warning", "error", "exception"}
LOGGING_FUNCTIONS = {"run_params"}
#: the params parser: its reads validate params.yaml (every stage parses all of it) and change no
#: output; the section methods it defines are modelled by :data:`METHOD_READS`
SKIPPED = {"pipeline/config.py"}
#: ``{stage: {key: reason}}``: keys the shared module reads only on another stage's branch
NOT_READ_BY: dict[str, dict[str, str]] = {
    "release_rr": {"release.k": "read for --mechanism kanon only (and logged)"},
    "release_kanon": {"release.seed": "bit flips of --mechanism rr only (kanon draws nothing)"},
    **{
        stage: {
            "backbone": "re-embeds the gallery only in the float control (attack-float)",
        }
        for stage in ("attack", "attack_dp", "attack_rr", "attack_kanon")
    },
    "train_dp": {
        f"train.{k}": "forced by dp_fit_config (pipeline/train_dp.py), whatever the train block says"
        for k in ("class_balance", "selection_window", "ema_epochs", "geometry")
    },
}


def _fields(prefix: str) -> dict[str, str]:
    """``{field: annotation text}`` of the section class at ``prefix`` (empty for a leaf)."""
    cls = {v: k for k, v in SECTIONS.items()}.get(prefix)
    if cls is None:
        return {}
    return {f.name: str(f.type) for f in dataclasses.fields(getattr(pconfig, cls))}


def _section_of(annotation: str) -> str | None:
    """The prefix a field's (or an argument's) annotation text names, if it is a section class."""
    for name, prefix in SECTIONS.items():
        if re.fullmatch(rf"(?:\w+\.)*{name}(?:\s*\|\s*None)?", annotation.strip()):
            return prefix
    return None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


#: section methods and properties -> the keys they read (relative to their section)
METHOD_READS = {
    ("", "method_config"): ["methods.*"],
    ("data", "source"): ["sources.*"],
    ("attack", "strengths"): ["strength", "strength_sweep"],
    ("attack", "snrs_db"): ["snr_db", "snr_db_sweep"],
    ("knn", "check_database"): ["k", "k_sweep"],
}


class _Reads(ast.NodeVisitor):
    """Params keys one function reads (nested functions and lambdas included)."""

    def __init__(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.env: dict[str, str] = {}
        self.other: set[str] = set()  # arguments typed as something else
        self.keys: set[str] = set()
        self._bind(fn)
        self.generic_visit(fn)

    def _bind(self, fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        """Typed arguments become roots (an argument named ``params`` is the Params object)."""
        for arg in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]:
            text = "" if arg.annotation is None else ast.unparse(arg.annotation)
            prefix = _section_of(text) if text else None
            if prefix is not None:
                self.env[arg.arg] = prefix
            elif text and text != "Any":
                self.other.add(arg.arg)

    # --- resolving an expression to a section prefix -----------------------------------------
    def _chain(self, node: ast.expr) -> tuple[str, list[str]] | None:
        """``(root prefix, attribute names)`` of ``root.a.b`` when ``root`` is typed."""
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in self.env:
            return self.env[node.id], attrs[::-1]
        if isinstance(node, ast.Name) and node.id == "params" and node.id not in self.other:
            return "", attrs[
                ::-1
            ]  # the stages' name for the loaded Params (``params = load(args)``)
        return None

    def _resolve(self, node: ast.expr) -> tuple[str, bool] | None:
        """``(dotted key, is a whole section)`` the chain ``node`` reaches (fields only)."""
        chain = self._chain(node)
        if chain is None:
            return None
        prefix, attrs = chain
        for attr in attrs:
            fields = _fields(prefix)
            if attr not in fields:
                return None
            sub = _section_of(fields[attr])
            prefix = sub if sub is not None else _join(prefix, attr)
        return prefix, bool(_fields(prefix))

    def _section(self, node: ast.expr) -> str | None:
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"dataclasses.replace", "replace"}
            and node.args
        ):
            node = node.args[0]
        got = self._resolve(node)
        return got[0] if got is not None and got[1] else None

    # --- visitors --------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            pairs = (
                list(zip(target.elts, node.value.elts, strict=False))
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                else [(target, node.value)]
            )
            for t, v in pairs:
                section = self._section(v)
                if isinstance(t, ast.Name) and section is not None:
                    self.env[t.id] = section
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in LOGGING_FUNCTIONS:
            return
        self._bind(node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in LOGGING_CALLS:
            return
        if isinstance(func, ast.Attribute):
            owner = self._resolve(func.value)
            if owner is not None and (owner[0], func.attr) in METHOD_READS:
                reads = METHOD_READS[owner[0], func.attr]
                if (owner[0], func.attr) == ("knn", "check_database") and any(
                    k.arg == "sweep" and isinstance(k.value, ast.Constant) and not k.value.value
                    for k in node.keywords
                ):
                    reads = ["k"]
                self.keys |= {_join(owner[0], r) for r in reads}
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    self.visit(arg)
                return
        # a whole section passed as an argument is read by the callee (a typed root there);
        # to_dict / asdict / json of it read every key
        whole = {"to_dict", "asdict"}
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            got = self._resolve(arg)
            if got is not None and got[1]:
                if name in whole:
                    self.keys.add(got[0])
                continue
            self.visit(arg)
        self.visit(func)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = self._chain(node)
        if chain is None:
            self.generic_visit(node)
            return
        prefix, attrs = chain
        for attr in attrs:
            if (prefix, attr) in METHOD_READS:
                self.keys |= {_join(prefix, r) for r in METHOD_READS[prefix, attr]}
                return
            fields = _fields(prefix)
            if attr not in fields:
                return  # a method of the section (visit_Call) or not a params key
            sub = _section_of(fields[attr])
            if sub is None:
                self.keys.add(_join(prefix, attr))  # a leaf: what follows is its value's
                return
            prefix = sub
        # a whole section used as a value (assigned, passed on): its reads are where it goes


def _module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Module:
    """One file of the closure: its functions by name and what its names import."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse((REPO / path).read_text(), filename=str(path))
        self.defs: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.modules: dict[str, str] = {}  # alias -> module
        self.names: dict[str, tuple[str, str]] = {}  # alias -> (module, name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defs.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.modules[a.asname] = a.name
                    else:
                        self.modules[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for a in node.names:
                    self.names[a.asname or a.name] = (base, a.name)


def _targets(
    fn: ast.AST, mod: _Module, modules: dict[str, _Module]
) -> Iterator[tuple[_Module, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """The closure's functions ``fn`` may call or hand on: a name resolved through the imports of
    its module; ``obj.name(...)`` (a method, a registry's module) and ``hook = getattr(obj,
    "name")`` then ``hook(...)`` to every function of that name whose arguments fit."""

    def named(m: _Module | None, name: str) -> list:
        return [] if m is None else [(m, d) for d in m.defs.get(name, [])]

    def anywhere(name: str) -> list:
        return [hit for m in modules.values() for hit in named(m, name)]

    def imported(module: str, name: str) -> list:
        m = modules.get(module)
        if m is not None and name not in m.defs and name in m.names:  # a re-export
            return imported(*m.names[name])
        return named(m, name)

    called = {id(n.func): n for n in ast.walk(fn) if isinstance(n, ast.Call)}
    called_names = {getattr(n.func, "id", None) for n in called.values()}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            if node.id in mod.defs:
                yield from named(mod, node.id)
            elif node.id in mod.names:
                yield from imported(*mod.names[node.id])
        elif isinstance(node, ast.Attribute):
            base = node.value
            alias = None
            if isinstance(base, ast.Name):
                if base.id in mod.modules:
                    alias = mod.modules[base.id]
                elif base.id in mod.names:
                    alias = ".".join(mod.names[base.id])
            if alias is not None and alias in modules:
                yield from imported(alias, node.attr)
            elif alias is None and id(node) in called:  # obj.method(...): any such method
                call = called[id(node)]
                yield from (hit for hit in anywhere(node.attr) if _fits(call, hit[1]))
        elif isinstance(node, ast.Assign) and _hook(node.value) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in called_names:
                yield from anywhere(_hook(node.value) or "")


def _hook(node: ast.expr) -> str | None:
    """``name`` of ``getattr(obj, "name", ...)`` (a plug-in hook looked up by name)."""
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[1].value
    return None


def _fits(call: ast.Call, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``call`` (``obj.name(...)``) can call ``fn`` by its arguments' count (a method's
    ``self`` / ``cls`` aside): tells ``img.load()`` from a data source's ``load(name, ...)``."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return True
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    if positional and positional[0].arg in {"self", "cls"}:
        positional = positional[1:]
    required = len(positional) - len(a.defaults)
    required += sum(d is None for d in a.kw_defaults)
    given = len(call.args) + len(call.keywords)
    most = len(positional) + len(a.kwonlyargs)
    return given >= required and (a.vararg is not None or a.kwarg is not None or given <= most)


@cache
def stage_reads(module: str) -> dict[str, set[str]]:
    """``{key: {"file:function", ...}}``: params keys read by the functions reachable from
    ``module``'s ``main``, over its import closure."""
    modules = {}
    for path in sorted(import_closure(REPO, module)):
        m = _Module(path)
        modules[_module_name(path)] = m
    start = modules[module]
    assert "main" in start.defs, f"{module} has no main()"
    todo = [(start, d) for d in start.defs["main"]]
    seen: set[tuple[str, int]] = set()
    reads: dict[str, set[str]] = {}
    while todo:
        mod, fn = todo.pop()
        if (mod.path, fn.lineno) in seen or fn.name in LOGGING_FUNCTIONS or mod.path in SKIPPED:
            continue
        seen.add((mod.path, fn.lineno))
        for key in _Reads(fn).keys:
            reads.setdefault(key, set()).add(f"{mod.path}:{fn.name}")
        todo.extend(_targets(fn, mod, modules))
    return reads


def _pattern(dep: str) -> str:
    return re.sub(r"\$\{item\.\w+\}", "*", dep)


def covered(key: str, listed: list[str]) -> bool:
    """Whether ``key`` (or a section holding it) is listed; ``*`` matches a matrix item."""
    parts = key.split(".")
    for dep in map(_pattern, listed):
        dparts = dep.split(".")
        if len(dparts) <= len(parts) and all(
            d == p or d == "*" for d, p in zip(dparts, parts, strict=False)
        ):
            return True
    return False


def stage_params(root: Path) -> dict[str, list[str]]:
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: [str(p) for p in stage.get("params", [])] for name, stage in stages.items()}


def missing_params(stage: str, listed: list[str] | None = None) -> dict[str, set[str]]:
    """``{key: {"file:function", ...}}``: output-relevant keys ``stage`` reads and does not list
    (``listed``: its dvc.yaml ``params``)."""
    module, _ = stage_code(REPO)[stage]
    listed = stage_params(REPO)[stage] if listed is None else listed
    exempt = list(NOT_READ_BY.get(stage, {}))
    return {
        key: where
        for key, where in stage_reads(module).items()
        if not key.startswith(NOT_OUTPUTS) and not covered(key, exempt) and not covered(key, listed)
    }


@pytest.mark.parametrize("stage", sorted(stage_params(REPO)))
def test_stage_lists_every_params_key_its_code_reads(stage: str) -> None:
    missing = missing_params(stage)
    assert not missing, f"dvc.yaml stage {stage}: params read but not listed: " + "; ".join(
        f"{k} (read in {', '.join(sorted(w))})" for k, w in sorted(missing.items())
    )


def test_exemptions_are_still_needed() -> None:
    """Every :data:`NOT_READ_BY` entry names a stage of dvc.yaml and a key its module reads and
    the stage does not list (else the entry is stale and hides nothing)."""
    listed = stage_params(REPO)
    for stage, keys in NOT_READ_BY.items():
        assert stage in listed, stage
        reads = stage_reads(stage_code(REPO)[stage][0])
        for key in keys:
            assert any(covered(r, [key]) for r in reads), (stage, key, "not read")
            assert not covered(key, listed[stage]), (stage, key, "listed")


@pytest.mark.parametrize(
    ("stage", "dropped", "found"),
    [
        ("train", "train.lr", "train.lr"),  # fit_config(params) -> t = params.train; t.lr
        ("train", "methods.${item.method}", "methods.*"),  # params.method_config(name)
        ("evaluate", "retrieval.radius", "retrieval.radius"),  # r = params.retrieval; r.radius
        ("attack-float", "backbone", "backbone.name"),  # load_backbone(config: BackboneConfig)
        ("attack", "data.root", "data.root"),  # a data source's load(..., data: DataConfig, ...)
        ("source", "backbone.name", "backbone.name"),  # local_backbone(kind, params: Any)
        ("release_curve", "release.epsilons", "release.epsilons"),  # params = load(args)
    ],
)
def test_the_scan_finds_a_dropped_key(stage: str, dropped: str, found: str) -> None:
    listed = [p for p in stage_params(REPO)[stage] if p != dropped]
    assert len(listed) == len(stage_params(REPO)[stage]) - 1
    assert found in missing_params(stage, listed)


def test_covered_matches_sections_and_matrix_items() -> None:
    assert covered("knn.k", ["knn"]) and covered("methods.*", ["methods.${item.method}"])
    assert covered("data.sources.*", ["data.sources.${item.dataset}"])
    assert not covered("knn", ["knn.k"]) and not covered("train.lr", ["train.lr_decay"])
