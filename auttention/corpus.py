"""A corpus on disk: ComParE layout (wav/ + lab/labels.csv) or a manifest CSV, its speakers, and the screening of
its audio (decoding itself is auttention/audio.py).

A corpus is a pandas DataFrame with one row per clip: file_name, path (absolute), partition
(train | devel | test) and label (float; NaN where unknown, e.g. ComParE's '?' test labels), and a
speaker column (str) where the corpus names its speakers (lab/speakers.csv or a manifest's speaker column).

Bad audio (a clip that cannot be decoded, is empty or holds NaN/Inf samples) is a BadAudio error;
a BadAudioPolicy ('fail' or 'skip') decides whether it stops the run.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import logging
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from . import storage
from .audio import BadAudio, audio_problem
from .errors import UserError

log = logging.getLogger(__name__)

PARTITIONS = ("train", "devel", "test")
UNKNOWN_LABELS = {"?", ""}
ON_BAD_AUDIO = ("fail", "skip")
SPEAKERS = "speakers.csv"  # beside labels.csv: file_name,speaker (other columns, e.g. partition, ignored)
MAX_LISTED = 10  # bad clips named one per line before the rest is only counted


def read_corpus(data: str | os.PathLike, labels: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a corpus: a ComParE folder (wav/, lab/labels.csv) or a manifest CSV (file,label,partition).

    Speakers, where known (lab/speakers.csv beside labels.csv, or a manifest's speaker column), become
    a checked `speaker` column (see attach_speakers); without them the column is absent.

    Audio files in a ComParE wav/ folder without a label row are left out with one warning line
    (removing a row is how a clip is excluded); everything else that is wrong is a UserError.
    """
    if storage.is_remote(str(data)):
        return _read_remote_corpus(str(data))
    data = Path(data)
    if data.is_file():
        return _read_manifest(data)
    if not data.is_dir():
        raise UserError(f"{data}: no such corpus folder or manifest CSV")
    labels = Path(labels) if labels else data / "lab" / "labels.csv"
    wav_dir = data / "wav"
    if not labels.is_file():
        raise UserError(
            f"{labels}: label file not found; a ComParE corpus has lab/labels.csv "
            f"(file_name,label), or pass a manifest CSV (file,label,partition)"
        )
    if not wav_dir.is_dir():
        raise UserError(f"{wav_dir}: audio folder not found; a ComParE corpus keeps its clips in wav/")
    table = _read_csv(labels, ("file_name", "label"))
    rows = []
    for line, (name, label) in enumerate(zip(table["file_name"], table["label"]), start=2):
        path = _safe_path(wav_dir, name, labels, line)
        rows.append((name, path, _partition_of(name, labels, line), _parse_label(label, labels, line), line))
    corpus = with_speakers(_finish(rows, labels), labels)
    listed = set(corpus["file_name"])
    unlisted = sorted(
        p.name for p in wav_dir.iterdir() if p.name not in listed and not p.name.startswith(".") and p.is_file()
    )
    if unlisted:
        more = f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""
        log.warning(
            f"warning: {wav_dir}: {len(unlisted)} file(s) have no row in {labels} and are left out: "
            f"{', '.join(unlisted[:3])}{more}"
        )
    return corpus


def joined_columns(corpus: pd.DataFrame) -> list[str]:
    """The columns of a corpus that are joined by file name where they are used, never cached with the
    spectrograms: file_name, label, and speaker where the corpus names its speakers."""
    return ["file_name", "label"] + (["speaker"] if "speaker" in corpus.columns else [])


def _partition_of(name: str, labels, line: int) -> str:
    """The partition a ComParE file name starts with (train_, devel_, test_); UserError otherwise."""
    prefix = name.split("_", 1)[0] if "_" in name else ""
    if prefix not in PARTITIONS:
        raise UserError(
            f"{labels}, line {line}: file name {name!r} does not start with train_, devel_ "
            f"or test_, so its partition is unknown; rename it or use a manifest CSV "
            f"with a partition column"
        )
    return prefix


def fingerprint(corpus: pd.DataFrame) -> str:
    """A short hash of what a corpus' spectrograms are made from: each clip's file name, partition and
    audio file (size and modification time). Labels are left out: relabelling a corpus keeps its
    spectrograms, and labels are joined by file name where they are used. So are speakers: they only
    group the bootstrap and the folds, so adding or fixing a speaker list keeps every cache valid."""

    remote = _remote_stats([p for p in corpus["path"] if storage.is_remote(p)])
    digest = hashlib.sha256()
    for name, path, part in corpus[["file_name", "path", "partition"]].itertuples(index=False):
        if path in remote:
            size, mtime = remote[path]
        else:
            try:
                stat = os.stat(path)
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:
                size = mtime = -1  # unreadable: the audio check names it
        digest.update(f"{name}\0{part}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:16]


def _remote_stats(uris: list[str]) -> dict[str, tuple[int, int]]:
    """{uri: (size, mtime in ns)} of audio files on object storage, one listing per folder."""

    out: dict[str, tuple[int, int]] = {}
    for folder in sorted({u.rsplit("/", 1)[0] for u in uris}):
        loc = storage.location(folder, "--data")
        for info in loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True)):
            if info.type == pafs.FileType.File:
                mtime = int(info.mtime_ns) if info.mtime_ns is not None else -1
                out[f"{folder}/{info.base_name}"] = (int(info.size), mtime)
    return out


def _read_remote_corpus(data: str) -> pd.DataFrame:
    """read_corpus for object storage: a ComParE prefix (wav/, lab/labels.csv) or a manifest CSV object.
    The clips' paths are URIs; the workers that decode them read them from the bucket."""

    loc = storage.location(data, "--data")
    storage.check(loc, "--data", write=False)
    if loc.is_file():
        table = _read_csv(io.BytesIO(loc.read_bytes()), ("file", "label", "partition"), source=data)
        root = data.rsplit("/", 1)[0]
        present = set((storage.location(root, "--data")).files())
        rows = []
        for line, (name, label, part) in enumerate(zip(table["file"], table["label"], table["partition"]), start=2):
            if part not in PARTITIONS:
                raise UserError(f"{data}, line {line}: partition {part!r} must be one of {', '.join(PARTITIONS)}")
            rows.append((name, _safe_uri(root, name, present, data, line), part, _parse_label(label, data, line), line))
        return _manifest_speakers(_finish(rows, data), table, data)
    labels, wav = loc / "lab" / "labels.csv", loc / "wav"
    if not labels.is_file():
        raise UserError(
            f"{labels}: label file not found; a ComParE corpus has lab/labels.csv "
            f"(file_name,label), or pass a manifest CSV (file,label,partition)"
        )
    present = set(wav.files())
    if not present:
        raise UserError(f"{wav}: audio folder not found; a ComParE corpus keeps its clips in wav/")
    table = _read_csv(io.BytesIO(labels.read_bytes()), ("file_name", "label"), source=str(labels))
    rows = []
    for line, (name, label) in enumerate(zip(table["file_name"], table["label"]), start=2):
        path = _safe_uri(wav.uri, name, present, str(labels), line)
        rows.append((name, path, _partition_of(name, labels, line), _parse_label(label, labels, line), line))
    corpus = _finish(rows, str(labels))
    speakers = loc / "lab" / SPEAKERS
    if speakers.is_file():
        table = _read_csv(io.BytesIO(speakers.read_bytes()), ("file_name", "speaker"), source=str(speakers))
        corpus = attach_speakers(corpus, table, "file_name", str(speakers))
    unlisted = sorted(present - set(corpus["file_name"]) - {n for n in present if "/" in n or n.startswith(".")})
    if unlisted:
        more = f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""
        log.warning(
            f"warning: {wav}: {len(unlisted)} file(s) have no row in {labels} and are left out: "
            f"{', '.join(unlisted[:3])}{more}"
        )
    return corpus


def _safe_uri(root: str, name: str, present: set[str], source: str, line: int) -> str:
    """The clip's URI under root (an object-storage prefix); refuses names that escape it."""
    if not name:
        raise UserError(f"{source}, line {line}: empty file name")
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts or "://" in name:
        raise UserError(
            f"{source}, line {line}: file name {name!r} points outside the corpus folder; use a path relative to {root}"
        )
    if name not in present:
        raise UserError(f"{source}, line {line}: audio file {root}/{name} not found; add it or remove its row")
    return f"{root}/{name}"


def check_label_range(frame: pd.DataFrame, label_min: float, label_max: float) -> None:
    """Known labels (file_name, label columns) must lie in [label_min, label_max]: predictions are clipped to it."""
    known = frame[frame["label"].notna()]
    out = known[(known["label"] < label_min) | (known["label"] > label_max)]
    if len(out):
        source = frame.attrs.get("labels", "labels")
        raise UserError(
            f"{source}: {out['file_name'].iloc[0]} has label {out['label'].iloc[0]:g}, outside "
            f"scoring.label_min..label_max = {label_min:g}..{label_max:g} ({len(out)} such label(s)); "
            f"predictions are clipped to that range, so set scoring.label_min and label_max "
            f"to the range of this corpus"
        )


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """A label table (file_name, label as float, NaN for '?') from a ComParE labels.csv or a manifest."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    header = _read_csv(path, ())
    name_col = "file_name" if "file_name" in header.columns else "file"
    table = _read_csv(path, (name_col, "label"))
    labels = [_parse_label(v, path, line) for line, v in enumerate(table["label"], start=2)]
    frame = pd.DataFrame({"file_name": table[name_col], "label": labels})
    frame.attrs["labels"] = str(path)
    return frame


def _read_manifest(manifest: Path) -> pd.DataFrame:
    table = _read_csv(manifest, ("file", "label", "partition"))
    root = manifest.parent
    rows = []
    for line, (name, label, part) in enumerate(zip(table["file"], table["label"], table["partition"]), start=2):
        if part not in PARTITIONS:
            raise UserError(f"{manifest}, line {line}: partition {part!r} must be one of {', '.join(PARTITIONS)}")
        rows.append((name, _safe_path(root, name, manifest, line), part, _parse_label(label, manifest, line), line))
    return _manifest_speakers(_finish(rows, manifest), table, manifest)


def speakers_beside(labels: str | os.PathLike) -> pd.DataFrame | None:
    """The speakers.csv beside the label file `labels` (file_name, speaker), or None where there is none."""
    speakers = Path(labels).parent / SPEAKERS
    return _read_csv(speakers, ("file_name", "speaker")) if speakers.is_file() else None


def with_speakers(frame: pd.DataFrame, labels: str | os.PathLike) -> pd.DataFrame:
    """`frame` (file_name, partition, ...) with the speakers of the speakers.csv beside the label file
    `labels`, checked (see attach_speakers); unchanged where there is none."""
    table = speakers_beside(labels)
    if table is None:
        return frame
    return attach_speakers(frame, table, "file_name", Path(labels).parent / SPEAKERS)


def _manifest_speakers(corpus: pd.DataFrame, table: pd.DataFrame, manifest) -> pd.DataFrame:
    """The corpus with the manifest's optional `speaker` column attached (unchanged without one)."""
    if "speaker" not in table.columns:
        return corpus
    table = table.assign(speaker=table["speaker"].str.strip())
    return attach_speakers(corpus, table, "file", manifest)


def attach_speakers(corpus: pd.DataFrame, table: pd.DataFrame, name_col: str, source) -> pd.DataFrame:
    """The corpus with a `speaker` column from `table` (name_col, speaker: stripped strings), checked.

    Every clip needs a speaker, a clip has one speaker, and no speaker may sit in two partitions (that
    would leak a voice from train into devel or test); each is a UserError naming the clip or speaker
    and `source`. Rows of clips not in the corpus are ignored, as labels.csv decides what is in it.
    """
    table = table[[name_col, "speaker"]]
    twice = table[table[name_col].duplicated(keep=False)].drop_duplicates()
    twice = twice[twice[name_col].duplicated(keep=False)]
    if len(twice):
        name = twice[name_col].iloc[0]
        said = sorted(twice.loc[twice[name_col] == name, "speaker"])
        raise UserError(
            f"{source}: clip {name} is given two speakers ({said[0]!r} and {said[1]!r}); keep one row per clip"
        )
    speaker = corpus["file_name"].map(dict(zip(table[name_col], table["speaker"])))
    missing = speaker.isna() | (speaker == "")
    if missing.any():
        raise UserError(
            f"{source}: clip {corpus['file_name'][missing].iloc[0]} has no speaker ({int(missing.sum())} "
            f"such); give every clip a speaker, or remove the speaker list"
        )
    corpus = corpus.assign(speaker=speaker)
    first = corpus.drop_duplicates(["speaker", "partition"])  # the corpus is sorted: the first clip of each
    shared = first[first["speaker"].duplicated(keep=False)]
    if len(shared):
        one, other = shared.iloc[0], shared[shared["speaker"] == shared.iloc[0]["speaker"]].iloc[1]
        raise UserError(
            f"{source}: speaker {one['speaker']!r} is in {one['partition']} ({one['file_name']}) and "
            f"in {other['partition']} ({other['file_name']}); partitions must not share speakers, "
            f"fix the speaker list or the partitions"
        )
    return corpus


def _read_csv(path, columns: tuple[str, ...], source: str | None = None) -> pd.DataFrame:
    """A CSV (a path, or a buffer named `source`) with `columns`, every cell a stripped string.

    UTF-8 with or without a byte-order mark, or UTF-16 with one (a spreadsheet's "Unicode text"),
    comma- or tab-separated (that "Unicode text" is tab-separated)."""
    try:
        raw = path.read() if hasattr(path, "read") else Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{source or path}: cannot read it ({exc.strerror or exc})") from None
    path = source or path
    text = _decode_csv(raw, path)
    header = text.split("\n", 1)[0]
    # a header with tabs and no comma is a tab-separated table (Excel's "Unicode text", "Text (Tab delimited)")
    sep = "\t" if "\t" in header and "," not in header else ","
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: cannot read it as CSV ({str(exc).splitlines()[0]})") from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; expected a header "
            f"{','.join(columns)} (found {','.join(table.columns) or 'none'})"
        )
    if table.empty:
        raise UserError(f"{path}: has a header but no rows")
    for c in columns:
        table[c] = table[c].str.strip()
    return table


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decode_csv(raw: bytes, source) -> str:
    """A CSV file's text: UTF-16 where a byte-order mark says so, else UTF-8 (a leading BOM dropped)."""
    fix = 'save it as "CSV UTF-8" (or "Unicode text") and run again'
    try:
        if raw.startswith(_UTF16_BOMS):
            return raw.decode("utf-16")  # the BOM tells the byte order, and is dropped
        if b"\x00" in raw:  # NUL bytes are valid UTF-8 but never in a CSV's text: UTF-16 without its BOM
            raise UserError(
                f"{source}: cannot read it as CSV: its text looks like UTF-16 without a byte-order mark; {fix}"
            )
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{source}: cannot read it as CSV: its text is neither UTF-8 nor UTF-16 (byte {exc.start}); {fix}"
        ) from None


def _safe_path(root: Path, name: str, source: Path, line: int) -> Path:
    """The clip's path under root; refuses names that escape it (.., absolute paths, symlinks out)."""
    if not name:
        raise UserError(f"{source}, line {line}: empty file name")
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise UserError(
            f"{source}, line {line}: file name {name!r} points outside the corpus folder; use a path relative to {root}"
        )
    if _symlink_loop(root / candidate):
        raise UserError(
            f"{source}, line {line}: {root / candidate}: a symlink loop; replace it with the audio file or remove it"
        )
    root_real = root.resolve()
    path = (root / candidate).resolve()
    if root_real != path and root_real not in path.parents:
        raise UserError(
            f"{source}, line {line}: {name!r} resolves outside the corpus folder "
            f"(a symlink out?); copy the file into {root}"
        )
    if not path.is_file():
        raise UserError(f"{source}, line {line}: audio file {root / candidate} not found; add it or remove its row")
    return path


def _symlink_loop(path: Path) -> bool:
    """Whether following `path`'s symlinks never ends (resolve() raises RuntimeError on it before Python 3.13)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _parse_label(value: str, source: object, line: int) -> float:
    if value in UNKNOWN_LABELS:
        return math.nan
    try:
        label = float(value)
    except ValueError:
        raise UserError(f"{source}, line {line}: label {value!r} is not a number (use '?' for unknown)") from None
    if not math.isfinite(label):
        raise UserError(f"{source}, line {line}: label {value!r} is not finite (use '?' for unknown)")
    return label


def _finish(rows: list, source: object) -> pd.DataFrame:
    corpus = pd.DataFrame(rows, columns=["file_name", "path", "partition", "label", "line"])
    for column, what in (("file_name", "file name"), ("path", "audio file")):
        # the same file twice (also under two spellings of its path) could sit in train and test at once
        dup = corpus[corpus[column].duplicated(keep=False)]
        if len(dup):
            first, again = dup.iloc[0], dup[dup[column] == dup.iloc[0][column]].iloc[1]
            raise UserError(
                f"{source}, line {again['line']}: {what} {str(again[column])!r} is listed more than "
                f"once (also on line {first['line']}); keep one row per clip"
            )
    corpus = corpus.drop(columns="line")
    for part in ("train", "devel"):
        if not (corpus["partition"] == part).any():
            raise UserError(f"{source}: the {part} partition is empty; the SVR needs labelled train and devel clips")
        unknown = corpus[(corpus["partition"] == part) & corpus["label"].isna()]
        if len(unknown):
            raise UserError(
                f"{source}: {part} clip {unknown['file_name'].iloc[0]} has no label "
                f"({len(unknown)} such); train and devel clips need numeric labels"
            )
    corpus["path"] = corpus["path"].map(str)
    corpus = corpus.sort_values("file_name", kind="stable").reset_index(drop=True)
    corpus.attrs["labels"] = str(source)  # named by later checks (check_label_range)
    return corpus


def check_audio(corpus: pd.DataFrame, jobs: int = 8) -> dict[str, str]:
    """The clips whose headers show a problem: {file_name: what is wrong} (see audio_problem)."""
    paths = list(corpus["path"])
    # file opens, mostly waiting on the disk (a network file system above all); a few dozen per thread
    # task, as one task per file costs more in thread hand-offs than the header read itself
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        problems = [why for found in pool.map(lambda chunk: [audio_problem(p) for p in chunk], chunks) for why in found]
    return {name: why for name, why in zip(corpus["file_name"], problems) if why}


@dataclass(frozen=True)
class BadAudioPolicy:
    """What a run does with clips whose audio cannot be used (cannot be decoded, is empty, holds NaN/Inf
    samples): created once, from --on-bad-audio, and passed down to every step that reads audio.

    mode : 'fail' (a BadAudio error naming the first bad clip, before any output) or 'skip' (the clip is
        left out with one warning line)
    once : say each warning line once (several spectrogram settings decode the same bad clip)
    """

    mode: str = "fail"
    once: bool = False
    said: set = dataclasses.field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ON_BAD_AUDIO:
            raise UserError(f"on_bad_audio must be one of {', '.join(ON_BAD_AUDIO)}, got {self.mode!r}")

    def apply(self, corpus: pd.DataFrame, bad: Mapping[str, str]) -> pd.DataFrame:
        """The corpus without its bad clips (`bad`: file_name -> what is wrong).

        'fail': a BadAudio error naming the first bad clip (and how many more there are).
        'skip': one warning line per clip (the first MAX_LISTED, then a count); the rows are dropped
        whole, so every remaining clip keeps its own label. A partition left empty is a UserError.
        """
        names = [n for n in corpus["file_name"] if n in bad]
        if not names:
            return corpus
        paths = dict(zip(corpus["file_name"], corpus["path"]))
        if self.mode == "fail":
            more = ""
            if len(names) > 1:
                listed = ", ".join(names[1:4]) + (", ..." if len(names) > 4 else "")
                more = f" (and {len(names) - 1} more bad clip(s): {listed})"
            raise BadAudio(paths[names[0]], bad[names[0]] + more)
        for name in names[:MAX_LISTED]:
            self.warn(f"warning: skipping {paths[name]}: {bad[name]}")
        if len(names) > MAX_LISTED:
            self.warn(f"warning: skipping {len(names) - MAX_LISTED} more clips with bad audio")
        kept = corpus[~corpus["file_name"].isin(names)].reset_index(drop=True)
        for part in PARTITIONS:
            members = set(corpus.loc[corpus["partition"] == part, "file_name"])
            lost = [n for n in names if n in members]
            if lost and not (kept["partition"] == part).any():
                raise UserError(
                    f"{paths[lost[0]]}: every {part} clip has bad audio ({len(lost)} skipped; this one: "
                    f"{bad[lost[0]]}); the {part} partition cannot be empty, fix the files"
                )
        return kept

    def screen(self, corpus: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
        """Header check of every clip, then the policy: (the clips to use, {file_name: reason} of those skipped)."""
        bad = check_audio(corpus)
        return self.apply(corpus, bad), bad

    def warn(self, line: str) -> None:
        """Log one warning line (once, if the policy says each line once)."""
        if self.once:
            if line in self.said:
                return
            self.said.add(line)
        log.warning(line)

    def warning_once(self) -> BadAudioPolicy:
        """The same policy, saying each warning line once (several settings decode the same bad clip)."""
        return dataclasses.replace(self, once=True, said=set())
