"""Search-space YAML, compiled once into a plan (`Space`): the pipeline's sections with values fixed or drawn
from distributions, plus the experiment, resources, scheduler and searcher sections.

A value is fixed (`units: 64`) or a distribution:
  {choice: [a, b, ...]}            any type
  {uniform: [lo, hi]}              float
  {loguniform: [lo, hi]}           float, lo > 0
  {int: [lo, hi], step: k}         int (step optional, default 1; `log: true` for a log scale)
Any distribution may carry `when: {key: value | [values]}`: it is sampled only where that key of
the same section takes one of those values (e.g. attention_units only for bahdanau attention).

Everything that can be checked before Ray starts is checked while parsing, each problem in one line
naming the key or the combination: every key's value, and for a section whose config checks keys
together (`__post_init__`: spectrogram, scoring) every combination of its searched choices and of its
numeric ranges' ends. So a trial's PipelineConfig is built from the plan without checking it again.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import operator
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auttention.config import (
    SECTIONS,
    PipelineConfig,
    SpectrogramConfig,
    _opt,
    build,
    check_value,
    expand_preset,
    field_types,
    load_yaml,
    section_data,
    to_dict,
)
from auttention.errors import UserError
from auttention.record import FUSION, NETWORKS, metric_name, renamed_metric

from .keys import flat_params, param_name

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna

METRICS = tuple(metric_name(branch) for branch in (FUSION, *NETWORKS))
SELECT = ("mean_last", "last", "best")
KINDS = ("choice", "uniform", "loguniform", "int")
MAX_SPECTROGRAM_SETTINGS = 32
MAX_COMBINATIONS = 10000  # of one section's searched values, checked one by one at parse time

# Keys the plan sets for every trial, never the space: section.key -> the plan's value that sets it.
# A trial trains scheduler.max_epochs epochs (ASHA may stop it earlier).
PLANNED: dict[tuple[str, str], str] = {("training", "epochs"): "scheduler.max_epochs"}
# keys a space fixes and never searches, and why
FIXED: dict[tuple[str, str], str] = {
    ("scoring", "validation"): "trials scored on different validations cannot be ranked against each other",
    ("scoring", "folds"): "trials scored on different folds cannot be ranked against each other",
}


@dataclass(frozen=True)
class ExperimentConfig:
    """What the search optimises, how many trials, and for how long."""

    name: str = _opt("search", doc="run folder name under --runs")
    metric: str = _opt(
        "fusion_score",
        choices=METRICS,
        doc="the score a trial reports every epoch and is ranked by: "
        "the branch's validation score (scoring.validation's "
        "Spearman rho; ASHA stops trials on it)",
    )
    num_samples: int = _opt(8, lo=1, hi=100000, doc="trials")
    max_concurrent: int = _opt(2, lo=1, hi=10000, doc="trials at once")
    seed: int = _opt(0, lo=0)
    time_budget: int | str | None = _opt(
        None,
        doc="the whole search's wall time, from start to report (trials, confirmation, export), e.g. 900, "
        "15m, 6h; null = none",
    )
    confirm_share: float = _opt(
        0.25,
        lo=0.0,
        hi=0.9,
        doc="of time_budget kept for the confirmation; what it runs is planned from the trials' measured times",
    )
    report_every: int = _opt(1, lo=1, doc="score the features every k epochs")
    max_failures: int = _opt(2, lo=0, doc="retries of a failed trial (from its last checkpoint)")
    select: str = _opt(
        "mean_last",
        choices=SELECT,
        doc="what a trial is ranked by (its selection_score, Optuna's value): the mean of its last "
        "select_last scores, its last score, or its best epoch (the most optimistic)",
    )
    select_last: int = _opt(3, lo=1, doc="scores averaged by select: mean_last")
    confirm_top: int = _opt(3, lo=0, doc="the best trials trained again with new seeds at the end (0: none)")
    confirm_seeds: int = _opt(
        2,
        lo=0,
        doc="new training seeds per confirmed trial; the exported best has the best "
        "mean selection score over its seeds",
    )
    ensemble_top: int = _opt(
        1,
        lo=1,
        hi=100,
        doc="the export averages the best k <= ensemble_top confirmed "
        "configurations (each over its seeds), k chosen by the validation score "
        "(scoring.validation; devel rho by default); "
        "1: the chosen configuration alone",
    )

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", self.name):
            raise UserError(f"experiment.name {self.name!r} must be letters, digits, '.', '_' or '-'")
        parse_duration(self.time_budget, "experiment.time_budget")

    @property
    def time_budget_s(self) -> float | None:
        """The time budget in seconds (None: no budget)."""
        return parse_duration(self.time_budget, "experiment.time_budget")


@dataclass(frozen=True)
class ResourcesConfig:
    """What one trial reserves: CPUs and a (fractional) GPU."""

    cpu: float = _opt(1.0, lo=0.0, lo_open=True, hi=1024.0)
    gpu: float = _opt(0.0, lo=0.0, hi=1.0, doc="a fraction shares one GPU between trials (0.25: four trials)")
    memory_gb: float | None = _opt(
        None,
        lo=0.0,
        lo_open=True,
        hi=65536.0,
        doc="memory a trial may use for its models, optimizer state and a batch's activations: Ray reserves it "
        "on a node, and a configuration that needs more ends at once as 'out of memory' instead of "
        "endangering the node; null = no reservation",
    )


@dataclass(frozen=True)
class SchedulerConfig:
    """ASHA early stopping on the per-epoch metric."""

    type: str = _opt("asha", choices=("asha", "none"))
    max_epochs: int = _opt(10, lo=1, hi=10000, doc="epochs of a trial that is never stopped")
    grace_period: int = _opt(1, lo=1, doc="epochs before a trial can be stopped")
    reduction_factor: float = _opt(2.0, lo=1.0, lo_open=True)

    def __post_init__(self) -> None:
        if self.grace_period > self.max_epochs:
            raise UserError(
                f"scheduler.grace_period ({self.grace_period}) is above scheduler.max_epochs ({self.max_epochs})"
            )


@dataclass(frozen=True)
class SearcherConfig:
    """Optuna's sampler."""

    type: str = _opt("tpe", choices=("tpe", "random"))
    n_startup_trials: int = _opt(4, lo=0, doc="random trials before TPE models the space")
    multivariate: bool = _opt(True)
    group: bool = _opt(True, doc="TPE groups conditional parameters (needs multivariate)")
    # _opt makes a default_factory for a list
    points_to_evaluate: list = _opt([], doc="configurations to try first (section: {key: value})")  # noqa: RUF009


CONTROL = {
    "experiment": ExperimentConfig,
    "resources": ResourcesConfig,
    "scheduler": SchedulerConfig,
    "searcher": SearcherConfig,
}


def parse_duration(value: Any, where: str) -> float | None:
    """Seconds from 900, '900s', '15m', '6h' or '1d'; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if not match:
            raise UserError(f"{where} must be a duration like 900, 15m, 6h or 1d; got {value!r}")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds <= 0:
        raise UserError(f"{where} must be a positive duration, got {value!r}; omit it for no budget")
    return seconds


@dataclass(frozen=True)
class Param:
    """One searched value: section.key drawn from a distribution, maybe only `when` a condition holds."""

    section: str
    key: str
    kind: str
    args: tuple
    step: float | None = None
    log: bool = False
    when: tuple = ()  # ((key, (values...)), ...)

    @property
    def name(self) -> str:
        """The Optuna parameter name: section/key (Ray unflattens it into the nested config)."""
        return param_name(self.section, self.key)


@dataclass(frozen=True)
class Space:
    """A search space compiled into a plan: each section's fixed values and searched parameters, the control
    sections, and every spectrogram setting a trial can ask for; all of it checked when it was parsed."""

    fixed: dict[str, dict[str, Any]]
    params: tuple[Param, ...]
    experiment: ExperimentConfig
    resources: ResourcesConfig
    scheduler: SchedulerConfig
    searcher: SearcherConfig
    spectrograms: tuple[SpectrogramConfig, ...]  # the distinct settings, in the order they are extracted
    source: str = "space"

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Optuna define-by-run: suggest each applicable parameter; return the fixed values."""
        chosen: dict[str, dict[str, Any]] = {s: dict(v) for s, v in self.fixed.items()}
        for p in self.params:
            if not _applies(p, chosen[p.section]):
                continue
            if p.kind == "choice":
                value = trial.suggest_categorical(p.name, list(p.args))
            elif p.kind == "int":
                value = trial.suggest_int(p.name, p.args[0], p.args[1], step=int(p.step or 1), log=p.log)
            else:
                value = trial.suggest_float(p.name, p.args[0], p.args[1], log=p.kind == "loguniform")
            chosen[p.section][p.key] = value
        return flat_params(self.fixed)

    def values(self, section: str, key: str) -> tuple:
        """Every value the plan can give section.key: its choices (a range: its ends) where it is searched,
        else its fixed value (the default where the space leaves the key out)."""
        for p in self.params:
            if (p.section, p.key) == (section, key):
                return _options(p)
        if key in self.fixed.get(section, {}):
            return (self.fixed[section][key],)
        return (getattr(SECTIONS[section](), key),)

    def spectrogram_settings(self) -> list[dict[str, Any]]:
        """Every spectrogram setting a trial can ask for ({key: value} of every key), to extract up front."""
        return [to_dict(cfg) for cfg in self.spectrograms]

    def trial_config(self, config: Mapping[str, Mapping[str, Any]]) -> PipelineConfig:
        """The PipelineConfig of a trial's nested config ({section: {key: value}}, drawn from this plan by
        `define_by_run`), built without checking its values again: parsing checked every value and every
        combination the plan can draw. A configuration from anywhere else goes through
        `auttention.config.pipeline_config`, which checks it."""
        sections = {s: {**self.fixed[s], **(config.get(s) or {})} for s in SECTIONS}
        for (section, key), source in PLANNED.items():
            sections[section][key] = operator.attrgetter(source)(self)
        return PipelineConfig(**{s: cls(**sections[s]) for s, cls in SECTIONS.items()})


def _applies(p: Param, values: Mapping[str, Any]) -> bool:
    return all(values.get(k) in allowed for k, allowed in p.when)


def _parse_param(section: str, key: str, definition: Mapping[str, Any], annotation: Any, meta: Mapping) -> Param:
    where = f"{section}.{key}"
    kinds = [k for k in KINDS if k in definition]
    extra = set(definition) - set(KINDS) - {"step", "log", "when"}
    if len(kinds) != 1 or extra:
        raise UserError(
            f"{where}: a distribution has exactly one of {', '.join(KINDS)} "
            f"(plus optional step, log, when); got keys {', '.join(map(str, definition))}"
        )
    kind = kinds[0]
    args = definition[kind]
    base = _base_type(annotation)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}.choice must be a non-empty list of values")
        args = tuple(check_value(v, annotation, meta, f"{where}.choice[{i}]") for i, v in enumerate(args))
        if len(set(map(repr, args))) != len(args):
            raise UserError(f"{where}.choice lists a value twice")
        if not all(isinstance(v, (str, int, float, bool, type(None))) for v in args):
            raise UserError(f"{where}.choice values must be plain numbers, text, true/false or null")
    else:
        fits = {int: ("int",), float: ("uniform", "loguniform")}.get(base, ())
        if kind not in fits:
            raise UserError(f"{where}: {kind} does not fit this key; use {', '.join(('choice',) + fits)}")
        if not (isinstance(args, list) and len(args) == 2):
            raise UserError(f"{where}.{kind} must be [low, high]")
        lo, hi = (check_value(v, annotation, meta, f"{where}.{kind}") for v in args)
        if lo is None or hi is None or not lo < hi:
            raise UserError(f"{where}.{kind}: bounds out of order ({args[0]} is not below {args[1]})")
        if (kind == "loguniform" or definition.get("log")) and lo <= 0:
            raise UserError(f"{where}.{kind}: a log scale needs a positive low bound, got {lo}")
        args = (lo, hi)
    step = definition.get("step")
    if step is not None:
        if kind != "int" or isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise UserError(f"{where}.step must be a whole number >= 1, and only with int")
        if definition.get("log") and step != 1:
            raise UserError(f"{where}: step and log cannot be combined")
    log = definition.get("log", False)
    if not isinstance(log, bool) or (log and kind != "int"):
        raise UserError(f"{where}.log must be true or false, and only with int (use loguniform for floats)")
    when = definition.get("when") or {}
    if not isinstance(when, dict):
        raise UserError(f"{where}.when must map keys of section {section} to a value or list of values")
    cond = tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in when.items())
    return Param(section, key, kind, args, step, log, cond)


def _base_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in KINDS)


def parse_space(data: Any, source: str = "space") -> Space:
    """Compile a search-space mapping into its plan; every problem is one line naming the key path or the
    combination of searched values that fails."""
    try:
        return _parse_space(data, source)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def _parse_space(data: Any, source: str) -> Space:
    if not isinstance(data, dict):
        raise UserError(f"the top level must be a mapping with sections {', '.join([*CONTROL, *SECTIONS])}")
    for key in data:
        if key not in CONTROL and key not in SECTIONS:
            raise UserError(f"unknown section '{key}'; allowed: {', '.join([*CONTROL, *SECTIONS])}")
    experiment = data.get("experiment")
    if isinstance(experiment, dict) and renamed_metric(str(experiment.get("metric"))):
        new = renamed_metric(str(experiment["metric"]))
        log.warning(
            f"warning: {source}: experiment.metric {experiment['metric']} is called {new} now (the "
            f"branch's validation score); read as {new}"
        )
        data = {**data, "experiment": {**experiment, "metric": new}}
    control = {name: build(cls, data.get(name), name) for name, cls in CONTROL.items()}
    fixed: dict[str, dict[str, Any]] = {}
    params: list[Param] = []
    for section, cls in SECTIONS.items():
        fixed[section], searched = _parse_section(section, cls, data.get(section))
        params += searched
    spectrograms: tuple[SpectrogramConfig, ...] = ()
    for section, cls in SECTIONS.items():
        # a config's __post_init__ holds its checks of keys together: try every combination the plan can draw
        if cls is SpectrogramConfig or hasattr(cls, "__post_init__"):
            built = _check_combinations(section, cls, fixed[section], [p for p in params if p.section == section])
            if cls is SpectrogramConfig:
                spectrograms = tuple(dict.fromkeys(built))
    if len(spectrograms) > MAX_SPECTROGRAM_SETTINGS:
        raise UserError(
            f"spectrogram: {len(spectrograms)} distinct settings to extract (at most "
            f"{MAX_SPECTROGRAM_SETTINGS}); search fewer spectrogram choices"
        )
    space = Space(fixed, tuple(params), spectrograms=spectrograms, source=source, **control)
    _check_points(space)
    return space


def _parse_section(section: str, cls: type, data: Any) -> tuple[dict[str, Any], list[Param]]:
    """A pipeline section's fixed values (each checked) and its searched parameters."""
    values = expand_preset(cls, section_data(data, section), section)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    types = field_types(cls)
    allowed = [n for n in fields if (section, n) not in PLANNED]
    fixed: dict[str, Any] = {}
    params: list[Param] = []
    for key, value in values.items():
        if (section, key) in PLANNED:
            raise UserError(f"{section}.{key} is set by {PLANNED[section, key]} in a search space")
        if key not in allowed:
            raise UserError(f"unknown key '{section}.{key}'; allowed: {', '.join(allowed)}")
        if _is_distribution(value):
            if (section, key) in FIXED:
                raise UserError(f"{section}.{key} cannot be searched: {FIXED[section, key]}; give it one value")
            p = _parse_param(section, key, value, types[key], fields[key].metadata)
            if cls is SpectrogramConfig and p.kind != "choice":
                raise UserError(
                    f"spectrogram.{key}: spectrogram settings can be searched with choice only "
                    f"(each distinct setting is extracted once, up front)"
                )
            params.append(p)
        else:
            fixed[key] = check_value(value, types[key], fields[key].metadata, f"{section}.{key}")
    for p in params:
        for k, _ in p.when:
            if k not in fields:
                raise UserError(f"{section}.{p.key}.when: unknown key '{k}' of section {section}")
            if k == p.key:
                raise UserError(f"{section}.{p.key}.when cannot depend on itself")
    return fixed, params


def _options(p: Param) -> tuple:
    """The values of `p` to check: its choices, or the two ends of its range. The ends suffice because every
    check of keys together compares them (a < b, a <= b), which holds inside a box where it holds at its
    corners; a check that is not such a comparison would have to refuse ranges on its keys instead."""
    if p.kind == "choice":
        return p.args
    lo, hi = p.args
    if p.kind == "int" and p.step:
        hi = lo + (hi - lo) // int(p.step) * int(p.step)  # Optuna draws nothing above the last whole step
    return (lo, hi)


def _check_combinations(section: str, cls: type, fixed: Mapping[str, Any], params: Sequence[Param]) -> list[Any]:
    """`cls` built for every combination of the searched values (`_options`, where `when` applies); the first
    that fails is one line naming the combination."""
    options = [_options(p) for p in params]
    count = math.prod(len(o) for o in options)
    if count > MAX_COMBINATIONS:
        raise UserError(
            f"{section}: {count} combinations of searched values to check (at most "
            f"{MAX_COMBINATIONS}); search fewer {section} keys or values"
        )
    built = []
    for combo in itertools.product(*options):
        values, named = dict(fixed), []
        for p, v in zip(params, combo):
            if _applies(p, values):
                values[p.key] = v
                named.append(f"{section}.{p.key}={v!r}" + ("" if p.kind == "choice" else f" ({p.kind} {list(p.args)})"))
        try:
            built.append(cls(**values))
        except UserError as exc:
            raise UserError(f"the combination {', '.join(named)}: {exc}" if named else str(exc)) from None
    return built


def _check_points(space: Space) -> None:
    """points_to_evaluate: nested {section: {key: value}} over searched keys, each value allowed."""
    searched = {(p.section, p.key): p for p in space.params}
    for i, point in enumerate(space.searcher.points_to_evaluate):
        where = f"searcher.points_to_evaluate[{i}]"
        if not isinstance(point, dict):
            raise UserError(f"{where} must be a mapping of sections to {{key: value}}")
        for section, values in point.items():
            if not isinstance(values, dict):
                raise UserError(f"{where}.{section} must be a mapping of keys to values")
            for key, value in values.items():
                p = searched.get((section, key))
                if p is None:
                    raise UserError(f"{where}: {section}.{key} is not a searched key of this space")
                if p.kind == "choice" and value not in p.args:
                    raise UserError(f"{where}: {section}.{key} = {value!r} is not one of the choices {list(p.args)}")
                number = isinstance(value, int if p.kind == "int" else (int, float)) and not isinstance(value, bool)
                if p.kind != "choice" and not (number and p.args[0] <= value <= p.args[1]):
                    whole = "a whole number " if p.kind == "int" else ""
                    raise UserError(f"{where}: {section}.{key} = {value!r} is not {whole}in [{p.args[0]}, {p.args[1]}]")


def load_space(path: str | Path) -> Space:
    """Read a search-space YAML file (safe loading only) and compile it into its plan."""
    return parse_space(load_yaml(path), str(path))
