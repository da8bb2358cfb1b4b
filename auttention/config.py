"""One config object per stage (spectrogram, model, training, scoring), built from YAML-shaped dicts.

YAML keys, CLI flags and dataclass fields use the same names. Every value is checked here, at the
edge, and a bad one raises UserError naming the key path and what is allowed. Each network has its own
model config class (MODEL_CONFIGS: Seq2seqConfig, AttentionConfig) holding only the keys that apply to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


def _opt(
    default: Any = None,
    *,
    choices: tuple | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    doc: str = "",
) -> Any:
    """A dataclass field with validation metadata (allowed choices, numeric bounds)."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


FRAME_RULES = ("train_max", "train_min")


@dataclass(frozen=True)
class SpectrogramConfig:
    """Mel spectrogram settings; lengths in samples or frames, frequencies in Hz, levels in dB."""

    sample_rate: int = _opt(16000, lo=1000, hi=192000, doc="audio is resampled to this rate (Hz)")
    window: str = _opt("hamming", choices=("hamming", "hann", "blackman"))
    n_fft: int = _opt(512, lo=16, hi=16384, doc="FFT window length (samples)")
    hop_length: int = _opt(256, lo=1, hi=16384, doc="hop between frames (samples)")
    n_mels: int = _opt(64, lo=8, hi=512, doc="mel bands")
    fmin: float = _opt(0.0, lo=0.0, doc="lowest mel band edge (Hz)")
    fmax: float | None = _opt(None, lo=0.0, lo_open=True, doc="highest band edge (Hz); null = sample_rate / 2")
    clip_below: float = _opt(-80.0, lo=-200.0, hi=-1.0, doc="dB below the clip's maximum where values are clipped")
    frames: int | str = _opt(
        "train_max",
        doc="length of a row: train_max (the longest training clip, capped at max_seconds; shorter "
        "clips are padded and masked, longer ones cut into chunks), train_min (every clip cropped "
        "to the shortest training clip, the paper) or a number of frames (crop or pad)",
    )
    crop: str = _opt(
        "start", choices=("start", "center"), doc="which part of a longer clip is kept (train_min, a number of frames)"
    )
    max_seconds: float = _opt(
        30.0,
        lo=0.0,
        lo_open=True,
        doc="train_max only: rows are at most this long (s); a longer clip becomes chunks of this length",
    )
    chunk_hop_seconds: float | None = _opt(
        None, lo=0.0, lo_open=True, doc="train_max only: hop between the chunks of a long clip (s); null = max_seconds"
    )

    def __post_init__(self) -> None:
        if self.hop_length > self.n_fft:
            raise UserError(
                f"spectrogram.hop_length ({self.hop_length}) is larger than spectrogram.n_fft "
                f"({self.n_fft}); use a hop no larger than the window"
            )
        top = self.fmax if self.fmax is not None else self.sample_rate / 2
        if top > self.sample_rate / 2 + 1e-6:
            raise UserError(
                f"spectrogram.fmax ({top}) is above the Nyquist frequency "
                f"({self.sample_rate / 2}); lower it or raise spectrogram.sample_rate"
            )
        if self.fmin >= top:
            raise UserError(f"spectrogram.fmin ({self.fmin}) must be below fmax ({top})")
        if isinstance(self.frames, str) and self.frames not in FRAME_RULES:
            raise UserError(
                f"spectrogram.frames must be a positive number of frames, train_max or train_min; got {self.frames!r}"
            )
        if isinstance(self.frames, int) and self.frames < 1:
            raise UserError(f"spectrogram.frames must be at least 1, got {self.frames}")

    def hash(self) -> str:
        """A short stable hash of the settings, naming the spectrogram cache folder."""
        return settings_hash(self)


def settings_hash(cfg: Any) -> str:
    """A short stable hash of a config object's settings (provenance of what was made with them)."""

    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


SPECTROGRAM_PRESETS: dict[str, dict[str, Any]] = {
    # The paper: 22.05 kHz, Hamming, n_fft 1024, hop 256, 80 dB floor, cropped to the shortest
    # (training) clip. It computed 240 bands and resized the image to 120 rows; a 120-band
    # filterbank is the same thing without the image interpolation.
    "paper": {
        "sample_rate": 22050,
        "window": "hamming",
        "n_fft": 1024,
        "hop_length": 256,
        "n_mels": 120,
        "fmin": 0.0,
        "fmax": None,
        "clip_below": -80.0,
        "frames": "train_min",
        "crop": "start",
    },
    # auDeep's sleepiness recipe: 80 ms Hann windows with 40 ms overlap, 128 bands, 4 s centred.
    "audeep": {
        "sample_rate": 16000,
        "window": "hann",
        "n_fft": 1280,
        "hop_length": 640,
        "n_mels": 128,
        "fmin": 0.0,
        "fmax": None,
        "clip_below": -60.0,
        "frames": 100,
        "crop": "center",
    },
}

# published starting points per config class: `preset: NAME` in a section (see `expand_preset`)
PRESETS: dict[type, dict[str, dict[str, Any]]] = {SpectrogramConfig: SPECTROGRAM_PRESETS}


FEATURES = ("final", "mean", "mean_std", "final_mean", "final_mean_std")


@dataclass(frozen=True)
class ModelConfig:
    """What both recurrent autoencoders share; `Seq2seqConfig` and `AttentionConfig` add each network's own keys."""

    # not a setting: the class says which network it configures; kept in YAML and checkpoints (state.json)
    network: str = field(default="", init=False)
    cell: str = _opt("gru", choices=("gru", "lstm"))
    layers: int = _opt(2, lo=1, hi=3)
    units: int = _opt(256, lo=1, hi=4096)
    encoder_bidirectional: bool = _opt(True, doc="encode the frames in both directions (the paper)")
    dropout: float = _opt(0.2, lo=0.0, hi=0.95, doc="dropout on the encoder input")
    feature: str = _opt(
        "final",
        choices=FEATURES,
        doc="the clip's feature: final (the paper: seq2seq's bottleneck of the final states, "
        "attention's final states), mean or mean_std (statistics of the top encoder layer's "
        "outputs over the clip's real frames), or final_mean / final_mean_std (both)",
    )


@dataclass(frozen=True)
class Seq2seqConfig(ModelConfig):
    """The seq2seq autoencoder: a recurrent decoder with teacher forcing, a bottleneck of the final states."""

    network: str = field(default="seq2seq", init=False)
    decoder_bidirectional: bool = _opt(
        True,
        doc="seq2seq only; a bidirectional decoder's backward direction "
        "sees the frames after the one it predicts (the next target "
        "frame among them), as in the paper: not causal",
    )
    feature_units: int | None = _opt(None, lo=1, hi=4096, doc="seq2seq bottleneck width; null = units")


@dataclass(frozen=True)
class AttentionConfig(ModelConfig):
    """The attention autoencoder: a decoder that attends over the encoder outputs at every step."""

    network: str = field(default="attention", init=False)
    attention: str = _opt("bahdanau", choices=("bahdanau", "luong"), doc="attention only")
    attention_units: int | None = _opt(None, lo=1, hi=4096, doc="attention only; null = units")


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {"seq2seq": Seq2seqConfig, "attention": AttentionConfig}


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation of each autoencoder (Adam on the reconstruction MSE)."""

    epochs: int = _opt(10, lo=1, hi=10000)
    batch_size: int = _opt(64, lo=1, hi=65536)
    learning_rate: float = _opt(1e-3, lo=0.0, hi=1.0, lo_open=True)
    clip_value: float | None = _opt(None, lo=0.0, lo_open=True, doc="clip gradients to [-v, v]; null = off")
    seed: int = _opt(0, lo=0)
    fit_on: str = _opt(
        "train",
        choices=("train", "train+devel", "all"),
        doc="partitions the autoencoders learn from (unsupervised; labels never used)",
    )
    jit_compile: bool = _opt(True, doc="compile the training step with XLA where it helps (GPU only; slower on CPU)")


# What the fusion branch concatenates (early fusion, joined on file name): the paper's two autoencoders, or
# either or both with the utterance functionals (auttention.baseline); each feature set is also its own branch.
FUSIONS = ("attention+seq2seq", "attention+seq2seq+functionals", "attention+functionals", "seq2seq+functionals")
# what C (and a search's every choice) is scored on: the paper's devel; train and devel swapped, averaged;
# K speaker-disjoint folds over train+devel (auttention/validation.py `validation_folds`)
VALIDATIONS = ("devel", "swap", "speaker_folds")


@dataclass(frozen=True)
class ScoringConfig:
    """The paper's linear SVR: C chosen on devel (or on the validation scoring.validation names),
    predictions rounded and clipped to the label range."""

    fuse: str = _opt(
        "attention+seq2seq",
        choices=FUSIONS,
        doc="the feature sets the fusion branch concatenates (functionals: auttention.baseline's utterance statistics)",
    )
    validation: str = _opt(
        "devel",
        choices=VALIDATIONS,
        doc="what C, a trial's per-epoch score, the selection and the ensembles are scored on: "
        "devel (fit on train; the paper's), swap (train->devel and devel->train, the two "
        "rhos averaged) or speaker_folds (scoring.folds speaker-disjoint folds over "
        "train+devel, the folds' rhos averaged; needs speakers); test predictions always "
        "come from the SVR refit on train+devel",
    )
    folds: int = _opt(5, lo=2, doc="the number of speaker-disjoint folds of validation: speaker_folds")
    # _opt makes a default_factory for a list
    complexities: list = _opt([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], doc="SVR C grid")  # noqa: RUF009
    round: bool = _opt(True, doc="round predictions to whole labels")
    label_min: float = _opt(1.0, doc="predictions are clipped to [label_min, label_max]")
    label_max: float = _opt(9.0)
    max_iter: int = _opt(10000, lo=1)

    def __post_init__(self) -> None:
        if not self.complexities or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 and math.isfinite(c)
            for c in self.complexities
        ):
            raise UserError("scoring.complexities must be a non-empty list of positive numbers")
        if self.label_min >= self.label_max:
            raise UserError(f"scoring.label_min ({self.label_min}) must be below scoring.label_max ({self.label_max})")

    @property
    def fused(self) -> tuple[str, ...]:
        """The feature sets the fusion branch concatenates, in order."""
        return tuple(self.fuse.split("+"))


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one run of the published pipeline needs."""

    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    seq2seq: Seq2seqConfig = field(default_factory=Seq2seqConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)


SECTIONS: dict[str, type] = {
    "spectrogram": SpectrogramConfig,
    "seq2seq": Seq2seqConfig,
    "attention": AttentionConfig,
    "training": TrainingConfig,
    "scoring": ScoringConfig,
}


def to_dict(cfg: Any) -> Any:
    """A config object as plain YAML-ready data."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def check_value(value: Any, annotation: Any, meta: Mapping[str, Any], where: str) -> Any:
    """Check one value against a field's type and bounds; return it (ints widened to float)."""
    ann = annotation
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(value, arg, meta, where)
            except UserError as exc:
                errors.append(exc)
        names = " or ".join("null" if a is type(None) else a.__name__ for a in args)
        if len(errors) == 1:
            raise errors[0]
        raise UserError(f"{where} must be {names}, got {value!r}")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # a NumPy scalar (e.g. from pandas): its plain Python value
    if ann is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if ann in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        if ann is int and (isinstance(value, float) and not value.is_integer()):
            raise UserError(f"{where} must be a whole number, got {value!r}")
        value = int(value) if ann is int else float(value)
        if not math.isfinite(value):
            raise UserError(f"{where} must be finite, got {value!r}")
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
            raise UserError(f"{where} must be {'>' if meta.get('lo_open') else '>='} {lo}, got {value!r}")
        if hi is not None and value > hi:
            raise UserError(f"{where} must be <= {hi}, got {value!r}")
        return value
    if ann is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be text, got {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise UserError(f"{where} must be one of {', '.join(choices)}; got {value!r}")
        return value
    if ann is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}")
        return list(value)
    raise TypeError(f"unsupported annotation {ann!r}")  # a bug in this module, not user input


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of a config class."""
    return typing.get_type_hints(cls)


def expand_preset(cls: type, data: Mapping[str, Any], section: str) -> dict[str, Any]:
    """`data` with its `preset` key replaced by every key of that preset's config; `data`'s own keys win.

    The one place presets are expanded: `build` (pipeline configs, CLI flags) and search spaces use it."""
    data = dict(data)
    if "preset" not in data or cls not in PRESETS:
        return data  # a `preset` key in a section without presets is an unknown key to the caller
    name = data.pop("preset")
    presets = PRESETS[cls]
    if not isinstance(name, str) or name not in presets:
        raise UserError(f"{section}.preset must be one of {', '.join(presets)}; got {name!r}")
    return {**to_dict(cls(**presets[name])), **data}


def section_data(data: Any, section: str) -> Mapping[str, Any]:
    """A section's YAML value as a mapping (absent or empty: {}); anything else is one clear line."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else f"{type(data).__name__} {data!r}"
        raise UserError(f"{section} must be a mapping of keys to values, got {kind}")
    return data


def build(cls: type, data: Mapping[str, Any] | None, section: str) -> Any:
    """Build config `cls` from a mapping, rejecting unknown keys and bad values with one clear line."""
    data = expand_preset(cls, section_data(data, section), section)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is not None and not f.init:  # a key the class fixes (a network's name): allowed only as itself
            if value != f.default:
                raise UserError(f"{section}.{key} must be {f.default!r} here, got {value!r}")
            continue
        if f is None:
            allowed = [n for n, g in fields.items() if g.init]
            raise UserError(f"unknown key '{section}.{key}'; allowed: {', '.join(allowed)}")
        kwargs[key] = check_value(value, types[key], f.metadata, f"{section}.{key}")
    return cls(**kwargs)


def model_config(data: Mapping[str, Any], section: str = "model") -> ModelConfig:
    """The config of the network that `data` names in its `network` key (a checkpoint's `model`)."""
    data = section_data(data, section)
    network = data.get("network", "seq2seq")  # the old single ModelConfig's default
    if not isinstance(network, str) or network not in MODEL_CONFIGS:
        raise UserError(f"{section}.network must be one of {', '.join(MODEL_CONFIGS)}; got {network!r}")
    return build(MODEL_CONFIGS[network], data, section)


def pipeline_config(data: Mapping[str, Any] | None, source: str = "config") -> PipelineConfig:
    """A PipelineConfig from a YAML-shaped mapping with sections spectrogram/seq2seq/attention/training/scoring."""
    data = data or {}
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: the top level must be a mapping with sections {', '.join(SECTIONS)}")
    for key in data:
        if key not in SECTIONS:
            raise UserError(f"{source}: unknown section '{key}'; allowed: {', '.join(SECTIONS)}")
    try:
        return PipelineConfig(**{name: build(cls, data.get(name), name) for name, cls in SECTIONS.items()})
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def load_yaml(path: str | Path) -> Any:
    """Safely load a YAML file, turning syntax errors into one clear line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: invalid YAML{where}: {problem}") from None


def load_pipeline_config(path: str | Path | None) -> PipelineConfig:
    """The PipelineConfig in a YAML file (defaults where it is silent; all defaults when path is None)."""
    if path is None:
        return PipelineConfig()
    return pipeline_config(load_yaml(path), str(path))
