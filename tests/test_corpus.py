import numpy as np
import pytest
import soundfile as sf

from auttention.audio import load_audio
from auttention.corpus import read_corpus, read_labels
from auttention.errors import UserError


def test_compare_layout(tone_corpus):
    corpus = read_corpus(tone_corpus)
    assert list(corpus.columns) == ["file_name", "path", "partition", "label"]
    assert set(corpus["partition"]) == {"train", "devel", "test"}
    assert corpus["label"].between(1, 9).all()


def test_question_mark_test_labels(tmp_path):
    from conftest import write_tone_corpus

    root = write_tone_corpus(tmp_path / "c", test_labels_known=False)
    corpus = read_corpus(root)
    assert corpus.loc[corpus.partition == "test", "label"].isna().all()
    assert read_labels(root / "lab" / "labels.csv")["label"].isna().sum() == 6


def test_manifest(tone_corpus):
    labels = (tone_corpus / "lab" / "labels.csv").read_text().splitlines()[1:]
    rows = ["file,label,partition"] + [f"wav/{n},{lab},{'devel' if n.startswith('test') else n.split('_')[0]}"
                                       for n, lab in (r.split(",") for r in labels)]
    manifest = tone_corpus / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    corpus = read_corpus(manifest)
    assert len(corpus) == 18 and (corpus.partition == "devel").sum() == 12


def _excel_unicode_text(text: str) -> bytes:
    """What Excel's "Unicode text" writes: UTF-16 LE with a byte-order mark, tab-separated, CRLF lines."""
    return b"\xff\xfe" + text.replace(",", "\t").replace("\n", "\r\n").encode("utf-16-le")


@pytest.mark.parametrize("encode", [
    lambda t: t.encode("utf-8"),
    lambda t: t.encode("utf-8-sig"),
    lambda t: b"\xff\xfe" + t.encode("utf-16-le"),
    lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
    lambda t: t.replace(",", "\t").encode("utf-8"),
    _excel_unicode_text,
], ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom", "utf-8-tabs", "excel-unicode-text"])
def test_labels_in_any_spreadsheet_encoding(tone_corpus, encode):
    labels = tone_corpus / "lab" / "labels.csv"
    expected = read_corpus(tone_corpus)
    labels.write_bytes(encode(labels.read_text()))
    corpus = read_corpus(tone_corpus)
    assert corpus["file_name"].tolist() == expected["file_name"].tolist()
    assert corpus["label"].tolist() == expected["label"].tolist()
    table = read_labels(labels)
    assert dict(zip(table["file_name"], table["label"])) == dict(zip(expected["file_name"], expected["label"]))


def test_manifest_as_excel_unicode_text(tone_corpus):
    rows = ["file,label,partition"] + [f"wav/{p.name},3,{p.name.split('_')[0]}"
                                       for p in sorted((tone_corpus / "wav").iterdir())]
    manifest = tone_corpus / "manifest.csv"
    manifest.write_bytes(_excel_unicode_text("\n".join(rows) + "\n"))
    corpus = read_corpus(manifest)
    assert len(corpus) == 18 and set(corpus["partition"]) == {"train", "devel", "test"}


@pytest.mark.parametrize("raw, message", [
    ("file_name,label\ntrain_0001.wav,3\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
    ("file_name,label\ntrain_0001.wav,3 \u00fc\n".encode("cp1252"), "neither UTF-8 nor UTF-16"),
], ids=["utf-16-no-bom", "cp1252"])
def test_unreadable_encoding_is_one_line(tone_corpus, raw, message):
    labels = tone_corpus / "lab" / "labels.csv"
    labels.write_bytes(raw)
    with pytest.raises(UserError, match=message) as err:
        read_corpus(tone_corpus)
    assert "labels.csv" in str(err.value) and "CSV UTF-8" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("line, message", [
    ("../outside.wav,3", "outside the corpus folder"),
    ("/etc/passwd,3", "outside the corpus folder"),
    ("train_0001.wav,abc", "is not a number"),
    ("train_0001.wav,3", "listed more than once"),
    ("train_9999.wav,3", "not found"),
    ("other_0001.wav,3", "partition is unknown"),
])
def test_bad_label_rows(tone_corpus, line, message):
    import shutil
    shutil.copy(tone_corpus / "wav" / "train_0001.wav", tone_corpus / "wav" / "other_0001.wav")
    labels = tone_corpus / "lab" / "labels.csv"
    labels.write_text(labels.read_text() + line + "\n")
    with pytest.raises(UserError, match=message) as err:
        read_corpus(tone_corpus)
    assert "labels.csv" in str(err.value)


def test_symlink_out_of_corpus_is_refused(tone_corpus, tmp_path):
    outside = tmp_path / "secret.wav"
    sf.write(outside, np.zeros(1600, np.float32), 16000)
    (tone_corpus / "wav" / "train_0100.wav").symlink_to(outside)
    labels = tone_corpus / "lab" / "labels.csv"
    labels.write_text(labels.read_text() + "train_0100.wav,3\n")
    with pytest.raises(UserError, match="symlink"):
        read_corpus(tone_corpus)


@pytest.mark.parametrize("subtype, fmt, channels", [
    ("PCM_16", "WAV", 1), ("PCM_24", "WAV", 2), ("PCM_32", "WAV", 1), ("FLOAT", "WAV", 2),
    ("PCM_16", "FLAC", 2), ("VORBIS", "OGG", 1),
])
def test_decoding_any_format(tmp_path, subtype, fmt, channels):
    rate = 44100
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    audio = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, audio, rate, subtype=subtype, format=fmt)
    out = load_audio(path, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 16000) <= 16
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 5


def test_undecodable_audio_is_one_line(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all")
    with pytest.raises(UserError, match="bad.wav: cannot decode audio"):
        load_audio(bad, 16000)


def _write_speakers(corpus_dir, speaker_of=lambda name: f"{name.split('_')[0]}{int(name[-8:-4]) % 2}") -> None:
    """lab/speakers.csv as the demo corpus writes it (file_name,speaker,partition): two voices per partition."""
    names = sorted(p.name for p in (corpus_dir / "wav").iterdir())
    rows = ["file_name,speaker,partition"] + [f"{n},{speaker_of(n)},{n.split('_')[0]}" for n in names]
    (corpus_dir / "lab" / "speakers.csv").write_text("\n".join(rows) + "\n")


def test_speakers_csv(tone_corpus):
    from auttention.corpus import fingerprint

    before = fingerprint(read_corpus(tone_corpus))
    _write_speakers(tone_corpus)
    corpus = read_corpus(tone_corpus)
    assert corpus.set_index("file_name")["speaker"].to_dict()["devel_0003.wav"] == "devel1"
    assert corpus["speaker"].nunique() == 6
    assert fingerprint(corpus) == before  # speakers only group the bootstrap: caches stay valid


def test_speakers_in_a_spreadsheet_encoding(tone_corpus):
    _write_speakers(tone_corpus)
    speakers = tone_corpus / "lab" / "speakers.csv"
    speakers.write_bytes(_excel_unicode_text(speakers.read_text()))
    assert read_corpus(tone_corpus)["speaker"].nunique() == 6


def test_no_speakers_no_column(tone_corpus):
    assert "speaker" not in read_corpus(tone_corpus).columns


def test_manifest_speaker_column(tone_corpus):
    rows = ["file,label,partition,speaker"] + [f"wav/{p.name},3,{p.name.split('_')[0]}, v{p.name.split('_')[0]}"
                                               for p in sorted((tone_corpus / "wav").iterdir())]
    manifest = tone_corpus / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    corpus = read_corpus(manifest)
    assert sorted(corpus["speaker"].unique()) == ["vdevel", "vtest", "vtrain"]


@pytest.mark.parametrize("speaker_of, message", [
    (lambda n: "" if n == "devel_0002.wav" else "s" + n[:3], "clip devel_0002.wav has no speaker"),
    (lambda n: "shared" if n in ("train_0004.wav", "test_0001.wav") else "s" + n[:3],
     "speaker 'shared' is in test (test_0001.wav) and in train (train_0004.wav)"),
], ids=["missing", "two-partitions"])
def test_bad_speakers_are_one_line(tone_corpus, speaker_of, message):
    _write_speakers(tone_corpus, speaker_of)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_corpus(tone_corpus)
    assert "speakers.csv" in str(err.value) and "\n" not in str(err.value)


def test_clip_missing_from_speakers_csv(tone_corpus):
    _write_speakers(tone_corpus)
    speakers = tone_corpus / "lab" / "speakers.csv"
    speakers.write_text("\n".join(l for l in speakers.read_text().splitlines() if "test_0006" not in l) + "\n")
    with pytest.raises(UserError, match="clip test_0006.wav has no speaker"):
        read_corpus(tone_corpus)


def test_manifest_speaker_errors(tone_corpus):
    rows = ["file,label,partition,speaker"] + [f"wav/{p.name},3,{p.name.split('_')[0]},{'a' if 'test' in p.name else p.name[:3]}"
                                               for p in sorted((tone_corpus / "wav").iterdir())]
    rows[1] = rows[1].rsplit(",", 1)[0] + ",a"  # the first devel clip shares test's speaker
    manifest = tone_corpus / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"manifest.csv: speaker 'a' is in devel \(wav/devel_0001.wav\) and in test"):
        read_corpus(manifest)
