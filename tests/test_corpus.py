import numpy as np
import pytest
import soundfile as sf

from auttention.corpus import load_audio, read_corpus, read_labels
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
