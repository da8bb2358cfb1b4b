import pytest

from auttention.config import (SPECTROGRAM_PRESETS, ModelConfig, SpectrogramConfig, build, load_pipeline_config,
                               pipeline_config, to_dict)
from auttention.errors import UserError


def test_defaults_round_trip():
    cfg = pipeline_config({})
    again = pipeline_config(to_dict(cfg))
    assert again == cfg
    assert "attention" not in to_dict(cfg)["seq2seq"]
    assert "decoder_bidirectional" not in to_dict(cfg)["attention"]


def test_preset_then_override():
    cfg = build(SpectrogramConfig, {"preset": "paper", "n_mels": 64}, "spectrogram")
    assert cfg.n_fft == SPECTROGRAM_PRESETS["paper"]["n_fft"] == 1024
    assert cfg.sample_rate == 22050 and cfg.n_mels == 64 and cfg.frames == "train_min"


@pytest.mark.parametrize("data, message", [
    ({"spectrogram": {"n_ftt": 512}}, "unknown key 'spectrogram.n_ftt'"),
    ({"spectrogram": {"n_fft": "big"}}, "spectrogram.n_fft must be a number"),
    ({"spectrogram": {"n_fft": 256, "hop_length": 512}}, "hop_length (512) is larger"),
    ({"spectrogram": {"frames": "longest"}}, "spectrogram.frames"),
    ({"spectrogram": {"fmax": 9000}}, "Nyquist"),
    ({"seq2seq": {"attention": "luong"}}, "unknown key 'seq2seq.attention'"),
    ({"attention": {"attention": "dot"}}, "attention.attention must be one of bahdanau, luong"),
    ({"attention": {"layers": 4}}, "attention.layers must be <= 3"),
    ({"training": {"learning_rate": 0}}, "training.learning_rate must be > 0"),
    ({"training": {"epochs": 2.5}}, "whole number"),
    ({"training": {"jit_compile": "yes"}}, "true or false"),
    ({"scoring": {"complexities": []}}, "scoring.complexities"),
    ({"sccoring": {}}, "unknown section 'sccoring'"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(UserError) as err:
        pipeline_config(data, "cfg.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("cfg.yaml: ")
    assert "\n" not in str(err.value)


def test_yaml_is_loaded_safely(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("training: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_pipeline_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("training: {epochs: 2\n")
    with pytest.raises(UserError, match=r"broken.yaml: invalid YAML at line"):
        load_pipeline_config(broken)


def test_model_config_sections_fix_network():
    cfg = pipeline_config({"attention": {"attention": "luong", "cell": "lstm"}})
    assert cfg.attention.network == "attention" and cfg.attention.attention == "luong"
    assert cfg.seq2seq.network == "seq2seq"
    with pytest.raises(UserError, match="seq2seq.network must be 'seq2seq'"):
        build(ModelConfig, {"network": "attention"}, "seq2seq", network="seq2seq")


def test_shipped_pipeline_configs_are_valid():
    for name in ("demo", "paper"):
        cfg = load_pipeline_config(f"configs/{name}.yaml")
        assert cfg.seq2seq.network == "seq2seq"
    assert load_pipeline_config("configs/paper.yaml").spectrogram.n_fft == 1024
