"""The search spec: YAML in, one validated, frozen, picklable config out.

Every field has one name everywhere (YAML key, attribute, MLflow param ``section.field``).
Names of activations, initializers, datasets and optimizers are checked against the
registries in ``models`` so the spec and the code cannot drift.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.names import ACTIVATION_NAMES, DATASET_NAMES, INITIALIZER_NAMES, OPTIMIZER_NAMES
from search.errors import SpecError, brief

SAMPLERS = ("tpe", "random", "gp")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_DEPTH = 64
"""Nesting levels a spec may have (a real spec has 3)."""
MAX_SPEC_VALUES = 100_000
"""Values a spec may expand to, aliases counted at every use (a real spec has a few hundred)."""


def _list_to_tuple(v: Any) -> Any:
    # YAML gives lists; frozen configs hold tuples (hashable, immutable).
    return tuple(v) if isinstance(v, list) else v


Names = Annotated[tuple[str, ...], BeforeValidator(_list_to_tuple)]


class _Section(BaseModel):
    # strict: YAML "3" is not the number 3; forbid: a misspelt key is an error, not a default.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class DatasetSpec(_Section):
    name: str
    """A key of models.datasets.DATASETS."""
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Held-out share (mnist1d keeps its generator's own 4000/1000 split)."""


class ModelSpec(_Section):
    width: int = Field(64, ge=1, le=4096)
    """Units per hidden layer."""


class IntRange(_Section):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class LogRange(_Section):
    low: float = Field(gt=0.0, allow_inf_nan=False)
    high: float = Field(gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class SpaceSpec(_Section):
    activations: Names = Field(min_length=1)
    """Each activation is its own stratum with its own budget and its own Optuna study."""
    depth: IntRange = IntRange(low=1, high=4)
    """Number of hidden layers, searched as an integer in [low, high] within 1..64."""
    initializers: Names = Field(("auto",), min_length=1)
    lr: LogRange = LogRange(low=1e-3, high=1.0)
    """Learning rate, searched log-uniformly."""
    optimizers: Names = Field(("momentum",), min_length=1)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    batch_size: int = Field(128, ge=1, le=65536)

    @field_validator("depth")
    @classmethod
    def _depth_bounds(cls, v: IntRange) -> IntRange:
        if v.low < 1 or v.high > 64:
            raise ValueError(f"depth must lie within 1..64, got {v.low}..{v.high}")
        return v


class ConvergenceSpec(_Section):
    target_loss: float | None = Field(0.5, gt=0.0, allow_inf_nan=False)
    """Smoothed training loss that counts as converged (set null to use target_accuracy)."""
    target_accuracy: float | None = Field(None, gt=0.0, le=1.0)
    max_steps: int = Field(1500, ge=1, le=10_000_000)
    eval_every: int = Field(25, ge=1)
    divergence_factor: float = Field(10.0, gt=1.0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _accuracy_replaces_default_loss(cls, data: Any) -> Any:
        # Writing only `target_accuracy: 0.9` means "use accuracy", not "two targets".
        if (
            isinstance(data, dict)
            and data.get("target_accuracy") is not None
            and "target_loss" not in data
        ):
            return {**data, "target_loss": None}
        return data

    @model_validator(mode="after")
    def _one_target(self) -> ConvergenceSpec:
        if (self.target_loss is None) == (self.target_accuracy is None):
            raise ValueError("set exactly one of target_loss and target_accuracy")
        if self.eval_every > self.max_steps:
            raise ValueError(
                f"eval_every ({self.eval_every}) must be <= max_steps ({self.max_steps})"
            )
        if self.max_steps % self.eval_every:
            raise ValueError(
                f"max_steps ({self.max_steps}) must be a multiple of eval_every ({self.eval_every})"
            )
        return self


class BudgetSpec(_Section):
    trials_per_activation: int = Field(16, ge=1, le=100_000)
    cohort_size: int = Field(4, ge=1, le=1024)
    """Trials of one activation trained together as one batched model (each trial brings
    `seeds` members, so a cohort has up to cohort_size x seeds members); of one depth too,
    unless `mixed_depths`."""
    mixed_depths: bool | None = None
    """Let one cohort hold trials of different depths (shallower members get identity layers,
    exact: models.mlp), so a cohort samples depth freely like every other parameter. None: on
    when diagnostics are off (per-layer diagnostics need cohorts of one depth)."""
    early_stopping: bool = True
    """Stop a trial once it can no longer beat its activation's best: when an earlier trial or a
    cohort sibling already reached the target sooner. Such trials are censored (reached = 0,
    step_limit < max_steps); set false to train every trial to its own end (maps, curves)."""


class SamplerSpec(_Section):
    name: Literal["tpe", "random", "gp"] = "tpe"
    n_startup_trials: int = Field(8, ge=0, le=100_000)
    """Start-up trials per activation before the model-based sampler takes over."""
    startup: Literal["lhs", "random"] = "lhs"
    """How the start-up trials are drawn: ``lhs``, a Latin hypercube over depth, initializer,
    log-lr and optimizer (search.design: every stratum covered, no gaps); ``random``, the
    sampler's own independent draws."""
    pooled: bool = False
    """Pool what the sampler learns across activations (search.pool): one model-based sampler
    sees every activation's completed trials, as one joint study over the activation would,
    so an activation's later cohorts start where the others converged fast. Each activation
    keeps its own study, budget and early-stopping bar. The start-up design then stops once
    the pool holds ``n_startup_trials`` completed trials, whichever activations ran them.
    Off: each activation's sampler sees only its own trials (independent strata)."""


class ResourcesSpec(_Section):
    cpus_per_trial: float = Field(1.0, gt=0.0, le=1024)
    gpus_per_trial: float = Field(0.0, ge=0.0, le=64)


class TrackingSpec(_Section):
    uri: str | None = None
    """MLflow tracking URI; the CLI's --tracking-uri wins, then MLFLOW_TRACKING_URI, then MLflow's default."""
    experiment: str | None = Field(None, min_length=1, max_length=256)
    """MLflow experiment; defaults to the spec's name."""
    optuna_storage: str | None = Field(None, min_length=1, max_length=4096)
    """Optuna storage: a database URL (postgresql://...) or a journal file path; defaults to
    a journal file in the state directory beside the MLflow store."""

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, v: str | None) -> str | None:
        # The form only: a SQLite store may live on the machine that runs the search.
        from search.paths import check_tracking_uri

        if v is not None:
            try:
                check_tracking_uri(v, "tracking.uri", local=False)
            except SpecError as err:
                allowed = f"; allowed: {', '.join(err.allowed)}" if err.allowed else ""
                raise ValueError(err.message + allowed) from None
        return v

    @field_validator("optuna_storage")
    @classmethod
    def _storage_kind(cls, v: str | None) -> str | None:
        if v is not None and "://" in v:
            scheme = v.split("://", 1)[0].split("+")[0]
            if scheme not in ("postgresql", "mysql"):
                # SQLite is refused: Optuna's FAQ warns against it for parallel optimisation.
                raise ValueError(
                    f"unsupported Optuna storage scheme {brief(scheme)}; allowed: postgresql://, "
                    "mysql://, or a journal file path"
                )
        return v


class DiagnosticsSpec(_Section):
    """Mechanism diagnostics (models.diagnostics), measured on a fixed probe batch."""

    enabled: bool = True
    """Bias shift, dead and saturated units, per-layer gradient norms, gradient cosine."""
    every: int = Field(5, ge=1, le=100_000)
    """Evaluation points between diagnostics, starting at the first (5 keeps the overhead
    under 10 %: bench/diagnostics_overhead.py)."""
    probe_size: int = Field(256, ge=1, le=65536)
    """Training examples in the fixed probe batch (the same for every run)."""
    sharpness: bool = False
    """Opt-in: top Hessian eigenvalue of the probe loss (Lanczos), reported against 2 / lr."""
    sharpness_iters: int = Field(20, ge=2, le=500)
    """Lanczos iterations (Hessian-vector products) per sharpness estimate."""


class LrProbeSpec(_Section):
    """After a search: sweep lr geometrically up from each activation's best configuration
    until training diverges; the largest stable lr goes into the convergence map."""

    enabled: bool = True
    factor: float = Field(2.0, gt=1.0, le=100.0, allow_inf_nan=False)
    """Ratio between successive probe learning rates."""
    points: int = Field(6, ge=1, le=64)
    """Learning rates per probe round (trained together as one cohort)."""
    rounds: int = Field(3, ge=1, le=20)
    """Rounds of `points` learning rates before giving up on finding divergence."""


class SearchSpec(_Section):
    name: str = Field(pattern=NAME_PATTERN)
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    space: SpaceSpec
    convergence: ConvergenceSpec = ConvergenceSpec()
    budget: BudgetSpec = BudgetSpec()
    sampler: SamplerSpec = SamplerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    seed: int = Field(0, ge=0, le=2**31 - 1)
    """Seeds the data split, the samplers and every trial's init and data order."""
    seeds: int = Field(3, ge=1, le=1000)
    """Paired seeds per configuration: run index i uses the same init stream and data order
    for every activation and configuration (search.space.member_seed)."""
    diagnostics: DiagnosticsSpec = DiagnosticsSpec()
    lr_probe: LrProbeSpec = LrProbeSpec()

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v: Any) -> Any:
        # `dataset: digits` is the common case; the mapping form carries options.
        return {"name": v} if isinstance(v, str) else v

    @property
    def mixed_depths(self) -> bool:
        """Whether cohorts may mix depths (budget.mixed_depths, resolved)."""
        if self.budget.mixed_depths is not None:
            return self.budget.mixed_depths
        return not self.diagnostics.enabled

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def spec_hash(self) -> str:
        """Content hash of everything that defines the search (not where it is tracked)."""
        body = self.model_dump(mode="json", exclude={"tracking"})
        if not self.sampler.pooled:
            # Added after searches existed: at its default it leaves their identity alone.
            del body["sampler"]["pooled"]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @property
    def search_id(self) -> str:
        """Stable identity: the same spec is the same search (resume, no duplicate jobs)."""
        return f"{self.name}-{self.spec_hash()[:10]}"

    def flat_params(self) -> dict[str, str]:
        """Fields as MLflow params: ``section.field`` -> string."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(value, list | tuple):
                out[prefix] = ",".join(str(x) for x in value)
            else:
                out[prefix] = "null" if value is None else str(value)

        walk("", self.model_dump(mode="json"))
        return out


# --- loading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float.

    YAML 1.1 (PyYAML) only takes exponents with a dot (`1.0e-3`); people write `1e-3`
    for learning rates and would otherwise get a confusing "not a number" error.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _compose_node(self: _Loader, parent: Any, index: Any) -> Any:
    # Refuse deep documents at a fixed depth with a position, before Python's recursion limit
    # (whose RecursionError is slow to unwind and says nothing about where).
    depth = getattr(self, "_depth", 0) + 1
    if depth > MAX_SPEC_DEPTH:
        raise yaml.composer.ComposerError(
            None, None, f"nested deeper than {MAX_SPEC_DEPTH} levels", self.peek_event().start_mark
        )
    self._depth = depth
    try:
        return yaml.SafeLoader.compose_node(self, parent, index)
    finally:
        self._depth = depth - 1


_Loader.compose_node = _compose_node


def _too_deep(text: str, limit: int) -> bool:
    """Whether [ ] and { } in the raw text nest deeper than `limit` (quoted ones count too).

    PyYAML's scanner costs O(depth) per token over its 1024-character lookahead, so a line of
    "[[[[..." takes most of a second before any depth check can run; this one is linear.
    """
    depth = 0
    for ch in re.sub(r"[^\[\]{}]", "", text):
        depth = depth + 1 if ch in "[{" else max(depth - 1, 0)
        if depth > limit:
            return True
    return False


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    try:
        return int(yaml.SafeLoader.construct_yaml_int(loader, node))
    except ValueError:
        # Python refuses int() of more than 4300 digits (CVE-2020-10735); say where it is.
        limit = sys.get_int_max_str_digits()
        raise yaml.constructor.ConstructorError(
            None, None, f"integer longer than {limit} digits", node.start_mark
        ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with every alias expanded, counting up to `limit` + 1.

    PyYAML shares one object per anchor, so loading an alias bomb is cheap; anything that
    walks it (validation, messages, hashing) is not. Counted with memoisation by identity,
    so the count itself stays linear in the document.
    """
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if isinstance(value, dict):
            items: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple | set):
            items = list(value)
        else:
            return 1
        key = id(value)
        if key not in sizes:
            total = 1
            for item in items:
                total += size(item)
                if total > limit:
                    break
            sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(data)


def _fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, ...] | None:
    """Allowed keys of the section that `loc` points into (for unknown-field errors)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        current = field.annotation
    fields = getattr(current, "model_fields", None)
    return tuple(fields) if fields else None


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "constrained-", "lax-", "strict-")):
            continue  # pydantic's internal validator names, not fields
        elif not isinstance(part, str) or not _PLAIN_KEY.match(part):
            path += f"[{brief(part)}]"  # a key typed by the user: '\r', '', 'a.b', None, ...
        else:
            path += f".{part}" if path else str(part)
    return path or "spec"


def _from_validation_error(err: ValidationError) -> SpecError:
    first = err.errors(include_url=False)[0]
    loc = tuple(first.get("loc", ()))
    field = _field_path(loc)
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        return SpecError(field, "unknown field", _fields_of(SearchSpec, loc))
    if kind == "missing":
        return SpecError(field, "required field is missing")
    if kind == "literal_error":
        allowed = first.get("ctx", {}).get("expected", "")
        return SpecError(field, f"got {brief(first.get('input'))}", [allowed])
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return SpecError(field, msg)


def _check_names(spec: SearchSpec) -> None:
    """Registry names are checked here so errors list the registry's keys."""
    if spec.dataset.name not in DATASET_NAMES:
        raise SpecError(
            "dataset.name", f"unknown dataset {brief(spec.dataset.name)}", sorted(DATASET_NAMES)
        )
    groups = (
        ("space.activations", spec.space.activations, ACTIVATION_NAMES, "activation"),
        ("space.initializers", spec.space.initializers, INITIALIZER_NAMES, "initializer"),
        ("space.optimizers", spec.space.optimizers, OPTIMIZER_NAMES, "optimizer"),
    )
    for field, names, registry, kind in groups:
        for i, name in enumerate(names):
            if name not in registry:
                raise SpecError(f"{field}[{i}]", f"unknown {kind} {brief(name)}", sorted(registry))
        if len(set(names)) != len(names):
            raise SpecError(field, f"lists a {kind} twice")


def parse_spec(data: Any) -> SearchSpec:
    """Validate an already-parsed YAML document into a SearchSpec (raises SpecError)."""
    if not isinstance(data, dict):
        raise SpecError("spec", f"must be a mapping of fields, got {type(data).__name__}")
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as err:
        raise _from_validation_error(err) from None
    except RecursionError:
        raise SpecError("spec", "nested too deeply") from None
    _check_names(spec)
    return spec


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a YAML spec file; every failure is a SpecError naming the field."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError("SPEC", f"no such file: {p}") from None
    except IsADirectoryError:
        raise SpecError("SPEC", f"is a directory, not a YAML file: {p}") from None
    except OSError as err:
        raise SpecError("SPEC", f"cannot read {p}: {err.strerror}") from None
    except ValueError as err:  # a NUL byte or an unencodable character in the path
        raise SpecError("SPEC", f"not a usable file path: {brief(str(path))} ({err})") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError("SPEC", f"{p} is larger than {MAX_SPEC_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("SPEC", f"{p} is not UTF-8 text") from None
    if _too_deep(text, MAX_SPEC_DEPTH):
        raise SpecError("SPEC", f"YAML nested deeper than {MAX_SPEC_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.reader.ReaderError as err:
        raise SpecError(
            "SPEC",
            f"malformed YAML: character {err.character!r} at position {err.position} "
            "is not allowed in YAML",
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(err, "problem", None) or "cannot be parsed")
        if len(problem) > 200:  # problems quote tags and tokens from the file
            problem = problem[:200] + "..."
        raise SpecError("SPEC", f"malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError("SPEC", "YAML nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:
        # A constructor that rejects its scalar (`!!float x`, `!!timestamp 99`, ...).
        raise SpecError(
            "SPEC", f"malformed YAML: a value cannot be read ({brief(str(err))})"
        ) from None
    try:
        too_big = _expanded_size(data, MAX_SPEC_VALUES) > MAX_SPEC_VALUES
    except RecursionError:
        raise SpecError("SPEC", "YAML nested too deeply") from None
    if too_big:
        raise SpecError(
            "SPEC", f"YAML expands to more than {MAX_SPEC_VALUES} values (anchors and aliases)"
        )
    return parse_spec(data)
