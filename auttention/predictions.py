"""Predictions as CSV files (ComParE's `file_name,prediction`), and scoring a predictions file against labels."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .confidence import rho_ci
from .config import ScoringConfig
from .corpus import speakers_beside
from .errors import UserError
from .io import refuse_non_finite, write_csv
from .metric import spearman


def write_predictions(path: str | os.PathLike, predictions: pd.DataFrame, cfg: ScoringConfig) -> Path:
    """Write ComParE-style predictions (file_name,prediction), atomically."""
    out = predictions[["file_name", "prediction"]].copy()
    if cfg.round:
        out["prediction"] = out["prediction"].round().astype(int)
    write_csv(path, out)
    return Path(path)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions CSV (file_name,prediction)."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such predictions file") from None
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for a file that is not CSV: one line
        raise UserError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None
    if not {"file_name", "prediction"} <= set(table.columns):
        raise UserError(f"{path}: expected columns file_name,prediction")
    refuse_non_finite(path, table, ["prediction"])
    return table


def score_predictions(
    predictions: pd.DataFrame, labels: pd.DataFrame
) -> tuple[float, int, tuple[float, float] | None, str]:
    """Spearman's rho of predictions against known labels: (rho, number of clips scored, its 95% bootstrap
    interval, what was resampled). Speakers are resampled where the speakers.csv beside the label file
    (labels.attrs["labels"]) names every scored clip's speaker, clips otherwise."""
    merged = predictions.merge(labels[["file_name", "label"]], on="file_name", how="left")
    unknown = merged["label"].isna()
    if unknown.all():
        raise UserError(
            "none of the predicted clips has a known label (ComParE ships test labels as '?'); nothing to score"
        )
    scored = merged[~unknown]
    y, pred = scored["label"].to_numpy(), scored["prediction"].to_numpy(dtype=float)
    table = speakers_beside(labels.attrs["labels"]) if labels.attrs.get("labels") else None
    groups = None
    if table is not None:
        speaker = scored["file_name"].map(dict(zip(table["file_name"], table["speaker"].str.strip())))
        groups = speaker.to_numpy(dtype=object) if speaker.notna().all() else None
    return spearman(y, pred), len(scored), rho_ci(y, pred, groups), "clips" if groups is None else "speakers"
