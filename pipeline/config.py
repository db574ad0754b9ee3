"""Typed, validated study parameters.

`load_params(path)` turns ``params.yaml`` into frozen dataclasses. Everything is checked before any
work starts: an unknown or misspelt key, a wrong type or an out-of-range value raises
:class:`ParamsError` naming the full key (``train.bits[2]``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import shlex
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

MIN_BITS, MAX_BITS = 8, 1024


class ParamsError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


# --------------------------------------------------------------------------------------------
# generic mapping -> frozen dataclass conversion
# --------------------------------------------------------------------------------------------


_PLAIN_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_name(tp: Any) -> str:
    """The annotation in the words of a params.yaml user: ``list of integer``, not
    ``tuple[int, Ellipsis]``."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        items = [a for a in get_args(tp) if a is not Ellipsis]
        if not items:
            return "list"
        name = _type_name(items[0])
        plural = {int: "integers", float: "numbers", str: "strings"}.get(items[0])
        return f"a list of {plural}" if plural else f"a list of ({name})"
    if origin in (dict, Mapping, typing.Mapping):
        args = get_args(tp)
        return f"a mapping of ({_type_name(args[1])})" if len(args) == 2 else "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    if tp is type(None):
        return "null"
    return _PLAIN_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ParamsError(f"{key}: {value!r} is not allowed; use one of {allowed}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arg, key)
            except ParamsError as err:
                errors.append(str(err))
        raise ParamsError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        item_tp = (get_args(tp) or (Any,))[0]
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping, typing.Mapping):
        if not isinstance(value, Mapping):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return types.MappingProxyType(
            {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
        )
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string; accept numeric strings here
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        try:
            as_float = float(value)
        except OverflowError:  # an int beyond float's range
            raise ParamsError(
                f"{key}: expected a finite number, got an integer too large"
            ) from None
        if not math.isfinite(as_float):
            raise ParamsError(f"{key}: expected a finite number, got {value!r}")
        return as_float
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # programming error


def parse_dataclass(cls: type, data: Any, key: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``data``; every problem names its key."""
    where = key or "params"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ParamsError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        bad = unknown[0]
        close = difflib.get_close_matches(str(bad), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(
            f"{where}: unknown key {bad!r}{hint}; allowed keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{sub}: missing required key")
            continue
        kwargs[name] = _convert(data[name], hints[name], sub)
    try:
        return cls(**kwargs)
    except ValueError as err:  # from __post_init__: the message starts with the field name
        raise ParamsError(f"{key}.{err}" if key else str(err)) from None


def check(condition: bool, key: str, message: str) -> None:
    """Raise ParamsError(``key: message``) unless ``condition``."""
    if not condition:
        raise ParamsError(f"{key}: {message}")


def check_device(value: str, key: str) -> None:
    """A device name hashaudit runs on: ``auto``, ``cpu``, ``cuda``, ``cuda:<index>`` or ``mps``
    (whether that device exists is checked where it is used, ``hashers.devices.resolve_device``);
    ``cuda:1`` was refused here although the stages honour it."""
    check(
        re.fullmatch(r"auto|cpu|cuda(:(0|[1-9][0-9]*))?|mps", value) is not None,
        key,
        f"{value!r} is not a device; use auto, cpu, cuda, cuda:<index> (e.g. cuda:1) or mps",
    )


def check_unique(values: Sequence[Any], key: str) -> None:
    """Refuse a list that names a value twice: each entry is a DVC matrix axis (a stage per value)
    and a row of the report, so ``[8, 8.0]`` would make two stages and two rows of one ε."""
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            raise ParamsError(
                f"{key}[{i}]: {v!r} is listed twice (entry {seen[v]} too; 8 and 8.0 are one "
                "value); list each once"
            )
        seen[v] = i


SEED_LIMIT = 2**63  # seeds reach torch.manual_seed / numpy generators as signed 64-bit integers


def check_seed(seed: int | None, key: str, *, nullable: bool = False) -> None:
    """A seed must be an integer in ``[0, 2**63)`` (or null where ``nullable``)."""
    if seed is None and nullable:
        return
    null = " (or null = secret OS entropy)" if nullable else ""
    check(
        seed is not None and 0 <= seed < SEED_LIMIT,
        key,
        f"{seed} is out of range; use an integer from 0 to 2**63 - 1 = {SEED_LIMIT - 1}{null}",
    )


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where one dataset's images (or ready embeddings) come from."""

    kind: str  # a key of pipeline.sources.SOURCES
    flag: str | None = None  # medmnist: the MedMNIST flag (default: the dataset's name)
    size: int = 28  # medmnist: 28 | 64 | 128 | 224
    id: str | None = None  # huggingface: dataset id on the hub (or a local dataset dir)
    revision: str | None = (
        None  # huggingface hub id: branch, tag or commit (null = the default branch)
    )
    image_column: str = "image"
    label_column: str = "label"
    path: str | None = None  # imagefolder: root dir; embeddings: .safetensors / .npz file

    def __post_init__(self) -> None:
        # checking a kind reads the sources table; it cannot change any stage's outputs
        from pipeline import sources  # dvc-deps: not an output dependency

        check(
            self.kind in sources.SOURCES,
            "kind",
            f"{self.kind!r} is not a data source kind; use one of {', '.join(sources.kinds())}",
        )
        sources.check_config(self)  # the kind's own checks (its module's check_config hook)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    root: str = "data/medmnist"
    download: bool = True
    limit: int | None = None
    val_fraction: float = 0.1
    datasets: tuple[str, ...] = ("breastmnist",)
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(
            self.limit is None or self.limit > 0,
            "limit",
            f"{self.limit} must be a positive integer or null",
        )
        check(
            0.0 < self.val_fraction < 0.5,
            "val_fraction",
            f"{self.val_fraction} must be in (0, 0.5)",
        )
        check(len(self.datasets) > 0, "datasets", "list at least one dataset")
        check_unique(self.datasets, "datasets")
        for i, name in enumerate(self.datasets):
            if name not in self.sources:
                close = difflib.get_close_matches(name, list(self.sources), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ParamsError(
                    f"datasets[{i}]: unknown dataset {name!r}{hint}; define it under data.sources "
                    f"(defined: {', '.join(sorted(self.sources))}), e.g. {name}: {{kind: imagefolder, "
                    "path: <folder of class sub-folders>} or {kind: medmnist, flag: <a MedMNIST "
                    "flag, e.g. breastmnist>, size: 28}"
                )
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]*", name):
                raise ParamsError(
                    f"datasets[{i}]: {name!r} must start with a letter or digit and hold only "
                    "letters, digits and '_' (it names files, DVC stages and the DVC params key "
                    "data.sources.<name>: a '.' splits that key, so dvc repro finds no params for "
                    "it; '..' would leave the folders); rename it, e.g. "
                    f"{re.sub(r'[^A-Za-z0-9_]', '_', name).lstrip('_') or 'mydata'!r}"
                )
            try:  # the kind's name-dependent checks (e.g. a MedMNIST flag) now, not in a stage
                self.source(name)
            except ParamsError as err:  # its message names data.sources...; _build adds "data."
                raise ParamsError(str(err).removeprefix("data.")) from None

    def source(self, name: str) -> SourceConfig:
        """The source of dataset ``name``: its ``data.sources`` entry, completed by the kind's ``resolve`` hook
        (e.g. the MedMNIST flag defaults to the name)."""
        from pipeline import sources  # dvc-deps: not an output dependency

        if name in self.sources:
            return sources.resolve(name, self.sources[name])
        raise ParamsError(f"data.datasets: unknown dataset {name!r}; define it under data.sources")


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    name: str = "facebook/dinov2-base"
    revision: str = "main"
    image_size: int = 224
    resize: Literal["resize", "pad"] = "resize"
    pooling: Literal["cls", "cls_mean"] = "cls"
    batch_size: int = 32
    device: str = "auto"  # auto, cpu, cuda, cuda:<index> or mps (check_device)
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self) -> None:
        check_device(self.device, "device")
        for key in ("name", "revision"):  # "" loaded the folder "." as the model
            value = getattr(self, key)
            check(
                value.strip() == value and value != "",
                key,
                f"{value!r} is empty or has leading/trailing spaces; write the model id or folder "
                "(e.g. facebook/dinov2-base, models/dinov2-base) or revision (main) without them",
            )
        check(
            14 <= self.image_size <= 1024, "image_size", f"{self.image_size} must be in [14, 1024]"
        )
        check(self.batch_size >= 1, "batch_size", f"{self.batch_size} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class KnnConfig:
    k: int = 7
    k_sweep: tuple[int, ...] = (3, 5, 7, 10, 15)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    # retention intervals: paired, class-stratified bootstrap over the test queries
    # (retrieval.uncertainty); 0 resamples = no interval
    ci_resamples: int = 2000
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", f"{self.k} must be >= 1")
        check(self.ci_resamples >= 0, "ci_resamples", f"{self.ci_resamples} must be >= 0 (0 = off)")
        check(0 < self.ci_level < 1, "ci_level", f"{self.ci_level} must be in (0, 1), e.g. 0.95")
        # a percentile interval needs >= 10 resamples beyond each end (Efron & Tibshirani 1993,
        # ch. 19, ask for 1000-2000 for percentile intervals); with fewer its ends are a handful
        # of draws and it can even exclude the point estimate
        least = math.ceil(20 / (1 - self.ci_level) - 1e-9)
        check(
            self.ci_resamples == 0 or self.ci_resamples >= least,
            "ci_resamples",
            f"{self.ci_resamples} resamples are too few for a {self.ci_level:g} interval (each end "
            f"would rest on under 10 resamples); use 0 (no interval) or at least {least} "
            "(default 2000)",
        )
        for i, k in enumerate(self.k_sweep):
            check(k >= 1, f"k_sweep[{i}]", f"{k} must be >= 1")
        check_unique(self.k_sweep, "k_sweep")  # one sweep row per k

    def check_database(
        self, n_database: int, *, database: str = "training split", sweep: bool = True
    ) -> None:
        """The one rule for k, shared by every stage that runs a KNN (knn, train's model
        selection, evaluate): every k of ``knn.k`` and (``sweep``) ``knn.k_sweep`` must be at most
        the database size. No stage lowers k silently. Train's model selection votes with
        ``knn.k`` alone (``sweep=False``: it does not read the sweep, which its DVC stage does not
        declare)."""
        checked = [("knn.k", [self.k])] + ([("knn.k_sweep", list(self.k_sweep))] if sweep else [])
        for key, ks in checked:
            too_big = [k for k in ks if k > n_database]
            if too_big:
                raise ParamsError(
                    f"{key}: k={too_big[0]} exceeds the {n_database} rows of the {database} (the "
                    f"KNN database); use k <= {n_database}"
                )


Selection = Literal[
    "balanced_soft_accuracy", "balanced_accuracy", "soft_accuracy", "accuracy", "balanced_map"
]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    methods: tuple[str, ...] = ("dpsh",)
    bits: tuple[int, ...] = (12, 24, 36, 48)
    epochs: int = 60
    max_steps: int | None = 1200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 20
    hidden_dims: tuple[int, ...] = (512,)
    dropout: float = 0.1
    standardize: bool = True  # per-feature input standardisation (train statistics in the head)
    val_queries: int = 2000
    val_database: int = 20000
    # the val score that picks the epoch (bench/RESULTS-utility-val.md: balanced_map scored a
    # little higher on val but picks later epochs that leak more membership, so it is an option)
    selection: Selection = "balanced_soft_accuracy"
    selection_window: int = 1
    class_balance: float = 0.0
    ema_epochs: float = 0.0  # weight-average time constant (epochs) scored and selected; 0 = off
    # weight of the neighbourhood term (codes keep the embeddings' Euclidean neighbourhoods)
    geometry: float = 0.0
    device: str = "cpu"  # auto, cpu, cuda, cuda:<index> or mps (check_device)

    def __post_init__(self) -> None:
        check_device(self.device, "device")
        check(len(self.methods) > 0, "methods", "list at least one hashing method")
        check(
            len(self.bits) > 0,
            "bits",
            "list at least one code length, e.g. [12, 24, 36, 48] (no lengths = no hashing study)",
        )
        check_unique(self.methods, "methods")
        check_unique(self.bits, "bits")
        for i, b in enumerate(self.bits):
            check(
                MIN_BITS <= b <= MAX_BITS,
                f"bits[{i}]",
                f"{b} bits is out of range; use a code length from {MIN_BITS} to {MAX_BITS}",
            )
        check(self.epochs >= 1, "epochs", f"{self.epochs} must be >= 1")
        check(
            self.max_steps is None or self.max_steps >= 1,
            "max_steps",
            f"{self.max_steps} must be >= 1, or null for no step budget",
        )
        check(
            self.batch_size >= 2, "batch_size", f"{self.batch_size} must be >= 2 (pairwise losses)"
        )
        check(self.lr > 0, "lr", f"{self.lr} must be > 0")
        check(self.weight_decay >= 0, "weight_decay", f"{self.weight_decay} must be >= 0")
        check(self.patience >= 1, "patience", f"{self.patience} must be >= 1")
        check(0.0 <= self.dropout < 1.0, "dropout", f"{self.dropout} must be in [0, 1)")
        check(self.val_queries >= 1, "val_queries", f"{self.val_queries} must be >= 1")
        check(self.val_database >= 1, "val_database", f"{self.val_database} must be >= 1")
        check(
            self.selection_window >= 1 and self.selection_window % 2 == 1,
            "selection_window",
            f"{self.selection_window} must be an odd number of epochs >= 1 (1 = no smoothing)",
        )
        check(
            0.0 <= self.class_balance <= 1.0,
            "class_balance",
            f"{self.class_balance} must be in [0, 1] (0 = natural class rates, 1 = balanced)",
        )
        check(
            self.ema_epochs >= 0.0 and math.isfinite(self.ema_epochs),
            "ema_epochs",
            f"{self.ema_epochs} must be 0 (no weight averaging) or a positive number of epochs",
        )
        check(
            self.geometry >= 0.0 and math.isfinite(self.geometry),
            "geometry",
            f"{self.geometry} must be 0 (the method's own loss) or a positive weight",
        )
        for i, h in enumerate(self.hidden_dims):
            check(h >= 1, f"hidden_dims[{i}]", f"{h} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "hashaudit"


@dataclass(frozen=True, kw_only=True)
class Params:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dp: DPParams = field(default_factory=lambda: DPParams())
    release: ReleaseParams = field(default_factory=lambda: ReleaseParams())
    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig())
    attack: AttackConfig = field(default_factory=lambda: AttackConfig())
    report: ReportParams = field(default_factory=lambda: ReportParams())

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")

    def method_config(self, name: str) -> Any:
        """The resolved, typed hyper-parameters of hashing method ``name``."""
        from hashers import registry  # dvc-deps: not an output dependency

        cls = registry.get(name)
        return parse_dataclass(cls.Config, dict(self.methods.get(name, {})), f"methods.{name}")


def parse_params(raw: Any) -> Params:
    """Validate a parsed ``params.yaml`` mapping (see :func:`load_params`)."""
    params = parse_dataclass(Params, raw)
    from hashers import registry  # dvc-deps: not an output dependency

    known = registry.names()
    for i, name in enumerate(params.train.methods):
        if name not in known:
            raise ParamsError(
                f"train.methods[{i}]: unknown hashing method {name!r}; registered: {', '.join(known)}"
            )
    for name in params.methods:
        if name not in known:
            raise ParamsError(
                f"methods.{name}: no hashing method is registered as {name!r}; registered: {', '.join(known)}"
            )
        params.method_config(name)  # validates the block's keys, types and ranges
    from privacy.dp import dp_refusal  # dvc-deps: not an output dependency

    for i, name in enumerate(params.dp.methods):
        if name not in known:
            raise ParamsError(
                f"dp.methods[{i}]: unknown hashing method {name!r}; registered: {', '.join(known)}"
            )
        reason = dp_refusal(registry.get(name))
        if reason is not None:
            raise ParamsError(f"dp.methods[{i}]: {reason}")
        if getattr(params.method_config(name), "memory_bank", False):
            raise ParamsError(
                f"dp.methods[{i}]: {name} with methods.{name}.memory_bank: true cannot train "
                "under DP (the bank couples every record's loss to the others and is saved with "
                f"the head); set methods.{name}.memory_bank: false or drop {name} from dp.methods"
            )
    return params


def load_params(
    path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None
) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` maps dotted keys to values (tests, CLI)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            f"params file {str(path)!r} not found; run from the repository root or pass --params"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save the params file as UTF-8"
        ) from None
    raw = yaml_value(text, where=str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {raw!r}")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return parse_params(raw)


# YAML 1.1 (PyYAML) reads some plain scalars as numbers nobody writing them means: `012` is octal
# (10) and `1:30` base 60 (90), while DVC's YAML 1.2 reader (ruamel) reads 12 and '1:30', and
# Python 3 refuses 012. ParamsLoader tags them instead, and yaml_value refuses them naming the key
# (zero-padded ones that every reader reads alike, `07`, `-05`, `00`, are kept). Hex (`0x10`),
# binary (`0b101`) and underscores (`1_000`) keep their PyYAML values: they equal what Python reads
# from the same text.
# `yes`/`no`/`on`/`off` stay booleans: on a bool key that is what the writer meant.
_AMBIGUOUS_TAG = "tag:hashaudit,2024:yaml11-number"
_AMBIGUOUS_NUMBER = re.compile(
    r"""^(?:[-+]?0[0-7_]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*)$""",
    re.X,
)


@dataclass(frozen=True, kw_only=True)
class _Yaml11Number:
    """A plain scalar that YAML 1.1 reads as an octal or base-60 number (refused by yaml_value)."""

    text: str  # as written
    reading: int | float  # PyYAML's value of it
    line: int  # 1-based
    column: int  # 1-based


class ParamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that tags octal (``012``) and base-60 (``1:30``) plain scalars as
    :class:`_Yaml11Number` instead of silently reading them as 10 and 90, and refuses a key
    written twice in one mapping (PyYAML kept the last one silently; DVC refuses the file)."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: ([(_AMBIGUOUS_TAG, _AMBIGUOUS_NUMBER)] if first in "-+0123456789" else [])
        + list(resolvers)
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys may override
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node)
                except TypeError:  # unhashable: SafeLoader refuses it below
                    continue
                if seen is not key_node:
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else key
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {shown!r} (first on line {seen.start_mark.line + 1}); "
                        "PyYAML keeps only the last one and DVC refuses it: write each key once",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _construct_yaml11_number(loader: ParamsLoader, node: yaml.ScalarNode) -> _Yaml11Number:
    reading = (
        loader.construct_yaml_float(node) if "." in node.value else loader.construct_yaml_int(node)
    )
    mark = node.start_mark
    return _Yaml11Number(
        text=node.value, reading=reading, line=mark.line + 1, column=mark.column + 1
    )


ParamsLoader.add_constructor(_AMBIGUOUS_TAG, _construct_yaml11_number)


def _resolve_yaml11_numbers(tree: Any, *, where: str, key: str = "") -> Any:
    """``tree`` with each :class:`_Yaml11Number` (values and keys) whose YAML 1.1 reading is the
    decimal one (``07``, ``-05``, ``00``: zero-padded, read alike by PyYAML, DVC and a person)
    replaced by that number; a ParamsError for the first that reads otherwise (``012`` → 10,
    ``1:30`` → 90)."""
    if isinstance(tree, _Yaml11Number):
        return _yaml11_number(tree, where=where, named=f"{key}: " if key else "")
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if isinstance(k, _Yaml11Number):
                k = _yaml11_number(k, where=where, named=f"{key}: the key " if key else "the key ")
            out[k] = _resolve_yaml11_numbers(v, where=where, key=f"{key}.{k}" if key else str(k))
        return out
    if isinstance(tree, list):
        return [
            _resolve_yaml11_numbers(v, where=where, key=f"{key}[{i}]") for i, v in enumerate(tree)
        ]
    return tree


def _yaml11_number(found: _Yaml11Number, *, where: str, named: str) -> int | float:
    text = found.text
    if ":" in text:
        what, write = f"a YAML 1.1 base-60 number (read as {found.reading})", found.reading
    else:
        decimal = int(text.replace("_", ""), 10)
        if found.reading == decimal:
            return found.reading
        what, write = f"a YAML 1.1 octal number (read as {found.reading}, not {decimal})", decimal
    raise ParamsError(
        f"{where}:{found.line}:{found.column}: {named}{text} is {what}; write {write} for the "
        f"number or '{text}' for the text"
    )


def yaml_value(text: str, *, where: str, key: str = "") -> Any:
    """Parse YAML with :class:`ParamsLoader`; a syntax error is one line:
    ``where:LINE:COLUMN: problem``, and so is an octal (``012``) or base-60 (``1:30``) number
    that YAML 1.1 reads otherwise than as the decimal it looks like, named by its dotted key below
    ``key`` (the ``--set`` key the text is the value of); zero-padded numbers read alike
    (``07``) are kept."""
    try:
        tree = yaml.load(text, Loader=ParamsLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
        place = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ParamsError(
            f"{where}{place}: not valid YAML: {' '.join(str(problem).split())}"
        ) from None
    return _resolve_yaml11_numbers(tree, where=where, key=key)


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (``[12, 24]``, ``{kind: medmnist}``, ``null``)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    try:
        text = yaml.safe_dump(plain(value), default_flow_style=True, width=2**31, sort_keys=False)
    except yaml.YAMLError:
        return repr(value)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _set_items(dotted: str, value: Any) -> str:
    """Shell-ready ``--set`` items for each leaf of ``value`` (``--set train.epochs=5``); a
    ``data.sources`` entry stays one item (it is defined whole)."""
    if (
        isinstance(value, Mapping)
        and value
        and not _defined_whole(_annotation_at(dotted.split(".")))
    ):
        return " ".join(_set_items(f"{dotted}.{k}", v) for k, v in value.items())
    return f"--set {shlex.quote(f'{dotted}={_flow(value)}')}"


def _annotation_at(parts: Sequence[str]) -> Any:
    """The annotation of the dotted key ``parts`` in :class:`Params` (None: no such key)."""
    tp: Any = Params
    for part in parts:
        if dataclasses.is_dataclass(tp):
            hints = get_type_hints(tp)
            if part not in {f.name for f in dataclasses.fields(tp) if f.init}:
                return None
            tp = hints[part]
        elif get_origin(tp) in (dict, Mapping, typing.Mapping):
            tp = (get_args(tp) or (str, Any))[1]
        else:
            return None
    return tp


def _defined_whole(tp: Any) -> bool:
    """Whether a mapping of type ``tp`` has a required key (a ``data.sources`` entry's ``kind``):
    such an entry is always written whole, and the kind decides which other keys it has."""
    return dataclasses.is_dataclass(tp) and any(
        f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(tp)
    )


def _dropped(old: Any, new: Any, parts: Sequence[str]) -> list[str]:
    """The keys of mapping ``old`` at dotted key ``parts`` that replacing it with mapping ``new``
    would silently reset to a default (relative to ``parts``); none for an entry that is defined
    whole, or for a collection of them."""
    tp = _annotation_at(parts)
    if (
        not isinstance(old, Mapping)
        or not isinstance(new, Mapping)
        or _defined_whole(tp)
        # a collection of such entries (data.sources): an entry it drops has no default to fall
        # back to, so a dataset that names it is refused (data.datasets)
        or (get_origin(tp) in (dict, Mapping, typing.Mapping) and _defined_whole(get_args(tp)[1]))
    ):
        return []
    lost = []
    for k, v in old.items():
        if k not in new:
            lost.append(str(k))
        else:
            lost += [f"{k}.{sub}" for sub in _dropped(v, new[k], [*parts, str(k)])]
    return lost


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way.

    A :class:`ParamsError` for a path through a plain value (``seed.x`` while ``seed: 0``), for
    null on a section (``train=null`` would reset all its keys to their defaults) and for a
    mapping that would replace a section and drop keys it leaves out (``train={epochs: 5}``).
    A mapping is not merged key by key: ``data.sources`` and its entries (with a required
    ``kind``) are replaced whole, as a merge would keep keys a new kind does not read; sections
    have no required key, so a mapping there could only mean an update, which single keys say
    unambiguously."""
    parts = dotted.split(".")
    if not all(p.strip() for p in parts):
        raise ParamsError(f"--set {dotted!r}: empty key part; use dotted keys like train.epochs")
    *parents, last = parts
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:  # an empty section in the file (`train:`) is an empty mapping
            child = node[part] = {}
        if not isinstance(child, dict):
            here = ".".join(parents[: i + 1])
            raise ParamsError(
                f"--set {dotted}: {here} is a value ({child!r}), not a section with keys; "
                f"set {here} itself, e.g. --set {here}=..."
            )
        node = child
    tp = _annotation_at(parts)
    section = dataclasses.is_dataclass(tp) or get_origin(tp) in (dict, Mapping, typing.Mapping)
    current = node.get(last)
    if value is None and section:
        if dataclasses.is_dataclass(tp):
            first = next(f for f in dataclasses.fields(tp) if f.init)
            example_key = first.name
            example = (
                current[example_key]
                if isinstance(current, Mapping) and example_key in current
                else first.default
                if first.default is not dataclasses.MISSING
                else "..."
            )
        elif isinstance(current, Mapping) and current:
            example_key, example = next(iter(current.items()))
        else:
            example_key, example = "<key>", "..."
        raise ParamsError(
            f"--set {dotted}: {dotted} is a section with keys, not a value, and null is not "
            f"allowed (it would reset every key to its default); set single keys instead, e.g. "
            f"{_set_items(f'{dotted}.{example_key}', example)}"
        )
    lost = _dropped(current, value, parts)
    if lost and isinstance(value, Mapping):
        shown = ", ".join(lost[:4]) + (", ..." if len(lost) > 4 else "")
        fix = _set_items(dotted, value) if value else f"--set {dotted}.<key>=<value>"
        raise ParamsError(
            f"--set {dotted}: a mapping replaces all of {dotted} and would drop the {len(lost)} "
            f"key(s) it leaves out ({shown}); set single keys instead: {fix}"
        )
    node[last] = value


def to_dict(obj: Any) -> Any:
    """Plain JSON-able view of a config dataclass (for config.json and MLflow params)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# defences: DP-SGD heads and code release (privacy/dp.py, privacy/release.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DPParams:
    """``dp:``: the DP-SGD heads (stage ``train_dp``; ε = ∞ is the ordinary ``train`` stage)."""

    methods: tuple[str, ...] = ("csq", "tcl", "cnnh")  # per_sample_loss methods only
    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)  # target ε of each DP head (DVC matrix)
    delta: float | None = None  # null = 0.1 / N_train (below 1/N)
    max_grad_norm: float = 0.1  # per-sample clipping norm C (chosen on val, RESULTS-dp-val.md)
    accountant: Literal["prv", "rdp"] = "prv"
    # DP-SGD's own schedule, chosen on val at ε = 8; None = the train block's value
    lr: float | None = 0.01
    batch_size: int | None = 512  # expected Poisson batch: sampling rate q = batch_size / N
    epochs: int | None = 30  # still capped by train.max_steps
    # input standardisation of DP heads (statistics of val); None = train.standardize. Off: the
    # DP schedule above was chosen on val without it
    standardize: bool | None = False
    # epoch selection score of DP heads (on val alone); None = train.selection. Pinned because
    # the DP schedule above was chosen with balanced_soft_accuracy
    selection: Selection | None = "balanced_soft_accuracy"
    # seed of the Poisson sampling, the Gaussian noise and dropout: None = OS entropy, recorded
    # nowhere (no seed to replay; the generators are not cryptographic: privacy/DEFENCES.md); an
    # int = reproducible, recorded, and the guarantee holds only against someone without it.
    # Initialisation stays seeded by `seed`.
    seed: int | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed", nullable=True)
        check_unique(self.methods, "methods")
        check_unique(self.epsilons, "epsilons")
        for i, eps in enumerate(self.epsilons):
            check(eps > 0, f"epsilons[{i}]", f"{eps} must be > 0 (ε = ∞ is the train stage)")
        for name in ("lr", "batch_size", "epochs"):
            value = getattr(self, name)
            check(value is None or value > 0, name, f"{value} must be > 0 (or null = train.{name})")
        check(
            self.delta is None or 0 < self.delta < 1,
            "delta",
            f"{self.delta} must lie in (0, 1), below 1/N (or null for 0.1/N)",
        )
        check(self.max_grad_norm > 0, "max_grad_norm", f"{self.max_grad_norm} must be > 0")


@dataclass(frozen=True, kw_only=True)
class ReleaseParams:
    """``release:``: ε-LDP randomised response and k-anonymous release of the codes."""

    apply_to: Literal["database", "query", "both"] = "database"  # train codes, test codes, both
    epsilons: tuple[float, ...] = (1.0, 4.0, 16.0, 64.0)  # ε_code per released code (matrix)
    k: int = 20  # every released code is held by >= k records
    # seed of the bit flips: None = OS entropy, recorded nowhere (no seed to replay; not a
    # cryptographic generator: privacy/DEFENCES.md); an int = reproducible, recorded, and whoever
    # holds it can undo the flips
    seed: int | None = None

    def __post_init__(self) -> None:
        check_unique(self.epsilons, "epsilons")
        for i, eps in enumerate(self.epsilons):
            check(eps > 0, f"epsilons[{i}]", f"{eps} must be > 0 (ε_code = ∞: no release noise)")
        check(self.k >= 1, "k", f"{self.k} must be >= 1 (default 20)")
        check_seed(self.seed, "seed", nullable=True)


@dataclass(frozen=True, kw_only=True)
class ReportParams:
    """``report:``: the privacy/utility report (``pipeline/report.py``)."""

    # utility bar of the report's headline "least leakage among releases that keep at least this
    # share of the float KNN's balanced accuracy"; 0.98 is issue 12's retention target
    min_retention: float = 0.98
    link_runs: bool = True  # nest the study's stage runs under the report's MLflow parent run

    def __post_init__(self) -> None:
        check(
            0.0 < self.min_retention <= 2.0 and math.isfinite(self.min_retention),
            "min_retention",
            f"{self.min_retention} must lie in (0, 2] (a share of the float KNN's balanced accuracy)",
        )


RETRIEVAL_METRICS = (
    "map_all",
    "map_at_1000",
    "map_at_10",
    "precision_at_10",
    "precision_at_100",
    "precision_radius_2",
    "radius_2_empty",
    "bytes_per_item",
    "compression_ratio",
)


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    """``retrieval:`` block: tie-aware ranking metrics, two-stage re-ranking and the index back-end."""

    metrics: tuple[str, ...] = RETRIEVAL_METRICS  # reported in the knn / evaluate metrics JSON
    map_at: tuple[int, ...] = (1000, 10)  # mAP@M cut-offs
    precision_at: tuple[int, ...] = (10, 100)  # precision@k cut-offs
    radius: int = 2  # precision within this Hamming radius
    shortlist: int = 1000  # R of the two-stage search (Hamming shortlist, cosine re-rank)
    rerank: bool = False  # also score the two-stage search in evaluate (needs float embeddings)
    backend: Literal["exact", "faiss", "ivf", "faiss_ivf", "faiss_hnsw", "milvus"] = (
        "exact"  # `hashaudit index`
    )
    ivf_nlist: int | None = None  # ivf / faiss_ivf: inverted lists; null = 4 * sqrt(N), at most N
    ivf_nprobe: int = 16  # ivf / faiss_ivf: lists visited per query
    hnsw_m: int = 32  # faiss_hnsw: graph links per node
    hnsw_ef_construction: int = 40  # faiss_hnsw: candidate list while building
    hnsw_ef_search: int = 128  # faiss_hnsw: candidate list per query (>= k is enforced)
    milvus_uri: str = (
        "artifacts/milvus/codes.db"  # a file = Milvus Lite; http://host:19530 = server
    )
    milvus_index: Literal["BIN_FLAT", "BIN_IVF_FLAT"] = "BIN_FLAT"

    def __post_init__(self) -> None:
        for i, k in enumerate(self.map_at):
            check(k >= 1, f"map_at[{i}]", f"{k} must be >= 1")
        for i, k in enumerate(self.precision_at):
            check(k >= 1, f"precision_at[{i}]", f"{k} must be >= 1")
        # a repeated cut-off was scored twice into one metric (map_at_10 = 2.0)
        check_unique(self.map_at, "map_at")
        check_unique(self.precision_at, "precision_at")
        check_unique(self.metrics, "metrics")
        check(self.radius >= 0, "radius", f"{self.radius} must be >= 0")
        check(self.shortlist >= 1, "shortlist", f"{self.shortlist} must be >= 1")
        if self.ivf_nlist is not None:
            check(self.ivf_nlist >= 1, "ivf_nlist", f"{self.ivf_nlist} must be >= 1")
        for key in ("ivf_nprobe", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            value = getattr(self, key)
            check(value >= 1, key, f"{value} must be >= 1")
        # the names this block computes: a listed name of another cut-off or radius (params.yaml's
        # map_at_1000 after `map_at: [5]`) was never computed and left the metrics JSON silently
        known = {
            "map_all",
            "bytes_per_item",
            "compression_ratio",
            *(f"map_at_{k}" for k in self.map_at),
            *(f"precision_at_{k}" for k in self.precision_at),
            f"precision_radius_{self.radius}",
            f"radius_{self.radius}_empty",
        }
        for i, name in enumerate(self.metrics):
            if name in known:
                continue
            cut_off = re.fullmatch(r"(map_at|precision_at)_([1-9][0-9]*)", name)
            radius = re.fullmatch(
                r"precision_radius_(0|[1-9][0-9]*)|radius_(0|[1-9][0-9]*)_empty", name
            )
            if cut_off:
                key, k = cut_off[1], cut_off[2]
                listed = ", ".join(str(c) for c in getattr(self, key))
                problem = (
                    f"{name!r} is not computed: retrieval.{key} is [{listed}]; add {k} to "
                    f"retrieval.{key} or drop {name!r} from retrieval.metrics"
                )
            elif radius:
                r = radius[1] or radius[2]
                instead = name.replace(f"_{r}", f"_{self.radius}", 1)
                problem = (
                    f"{name!r} is not computed: retrieval.radius is {self.radius}; set "
                    f"retrieval.radius to {r} or list {instead!r} instead"
                )
            else:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problem = f"unknown metric {name!r}{hint}"
            check(False, f"metrics[{i}]", problem)


# --------------------------------------------------------------------------------------------
# privacy attacks (the attack stage; see privacy/THREAT_MODEL.md)
# --------------------------------------------------------------------------------------------


#: the most distinct image strengths (or SNRs) an attack runs: pipeline.attack._seed gives the
#: train split offsets 0..MAX_STRENGTHS-1 and the test split the next MAX_STRENGTHS
MAX_STRENGTHS = 500


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """``attack:`` block. The attacker's auxiliary records come from ``aux_split`` (only ``val``:
    train and test are the released splits, i.e. the victims)."""

    attacks: tuple[str, ...] | None = (
        None  # null = every registered attack that applies to the source
    )
    aux_split: Literal["val"] = "val"
    aux_size: int | None = None  # cap on aux records (seeded, stratified); null = the whole split
    seed: int = 0
    strength: float = (
        0.5  # image sources: gallery perturbation strength in [0, 1] (privacy/perturb.py)
    )
    strength_sweep: tuple[float, ...] = (0.25, 0.5, 1.0)
    snr_db: float = 20.0  # embeddings-only sources: gallery noise at this SNR
    snr_db_sweep: tuple[float, ...] = (30.0, 20.0, 10.0)
    shadow_heads: int = 16  # membership inference (LiRA): shadow heads, >= 2
    mi_candidates: int = 500  # membership inference: members and as many non-members
    # membership inference score: the head's real-valued outputs (relaxed_margin), or codes only
    # (code_stability: label-only robustness to input noise; code_margin: class-prototype margin)
    mi_score: Literal["relaxed_margin", "code_stability", "code_margin"] = "relaxed_margin"
    withhold_label: str | int | None = (
        None  # multi-label: finding (name or column) hidden from training
    )
    save_reconstructions: bool = False  # example grid of reconstructed images (patient data!)
    # reconstruction: every image resized to this (H, W); null = the source's most frequent size
    reconstruction_size: tuple[int, int] | None = None
    backbone_batch_size: int = 64  # re-embedding the perturbed gallery images

    def __post_init__(self) -> None:
        if self.attacks is not None:
            from privacy import registry  # dvc-deps: not an output dependency

            known = registry.names()
            check(len(self.attacks) > 0, "attacks", "list at least one attack, or null for all")
            check_unique(self.attacks, "attacks")  # an attack listed twice ran twice
            for i, name in enumerate(self.attacks):
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ParamsError(
                        f"attacks[{i}]: unknown attack {name!r}{hint}; registered: {', '.join(known)}"
                    )
        check(
            self.aux_size is None or self.aux_size >= 1,
            "aux_size",
            f"{self.aux_size} must be >= 1 or null",
        )
        check_seed(self.seed, "seed")
        for i, s in enumerate((self.strength, *self.strength_sweep)):
            where = "strength" if i == 0 else f"strength_sweep[{i - 1}]"
            check(0.0 <= s <= 1.0, where, f"{s} must be in [0, 1]")
        for where, levels, what in (
            ("strength_sweep", self.strengths, "strengths (with attack.strength)"),
            ("snr_db_sweep", self.snrs_db, "SNRs (with attack.snr_db)"),
        ):
            check(
                len(levels) <= MAX_STRENGTHS,
                where,
                f"{len(levels)} distinct {what}; at most {MAX_STRENGTHS}: each draws its "
                "perturbations from its own seed offset (pipeline.attack._seed), and more would "
                "share one between splits",
            )
        check(
            self.shadow_heads >= 2,
            "shadow_heads",
            f"{self.shadow_heads}: LiRA needs at least 2 shadow heads (an IN and an OUT score per record)",
        )
        check(self.mi_candidates >= 1, "mi_candidates", f"{self.mi_candidates} must be >= 1")
        check(
            self.reconstruction_size is None
            or (len(self.reconstruction_size) == 2 and min(self.reconstruction_size) >= 3),
            "reconstruction_size",
            f"{self.reconstruction_size}: give [height, width], both >= 3, or null",
        )
        check(
            self.backbone_batch_size >= 1,
            "backbone_batch_size",
            f"{self.backbone_batch_size} must be >= 1",
        )

    @property
    def strengths(self) -> tuple[float, ...]:
        """Image-gallery strengths: the sweep plus the default, sorted."""
        return tuple(sorted({self.strength, *self.strength_sweep}))

    @property
    def snrs_db(self) -> tuple[float, ...]:
        """Embeddings-gallery SNRs: the sweep plus the default, sorted."""
        return tuple(sorted({self.snr_db, *self.snr_db_sweep}))
