import pytest

from auttention.config import (
    SPECTROGRAM_PRESETS,
    AttentionConfig,
    Seq2seqConfig,
    SpectrogramConfig,
    TrainingConfig,
    build,
    expand_preset,
    load_pipeline_config,
    model_config,
    pipeline_config,
    to_dict,
)
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
        build(Seq2seqConfig, {"network": "attention"}, "seq2seq")
    assert build(AttentionConfig, {"network": "attention"}, "attention") == AttentionConfig()


def test_each_network_has_its_own_config_class():
    cfg = pipeline_config({})
    assert type(cfg.seq2seq) is Seq2seqConfig and type(cfg.attention) is AttentionConfig
    # the YAML (and a checkpoint's state.json) keeps `network` and the keys in the order they always had
    assert list(to_dict(cfg.seq2seq)) == ["network", "cell", "layers", "units", "encoder_bidirectional", "dropout",
                                          "feature", "decoder_bidirectional", "feature_units"]
    assert list(to_dict(cfg.attention)) == ["network", "cell", "layers", "units", "encoder_bidirectional", "dropout",
                                            "feature", "attention", "attention_units"]
    with pytest.raises(TypeError):
        Seq2seqConfig(attention="luong")  # a key of the other network is no field of this one


def test_model_config_of_a_checkpoint_builds_its_network_class():
    # the `model` dict of a state.json written before the per-network classes
    old = {"network": "attention", "cell": "gru", "layers": 1, "units": 8, "encoder_bidirectional": True,
           "dropout": 0.2, "feature": "final", "attention": "luong", "attention_units": None}
    cfg = model_config(old, "model")
    assert cfg == AttentionConfig(layers=1, units=8, attention="luong") and to_dict(cfg) == old
    assert type(model_config({"units": 8}, "model")) is Seq2seqConfig  # no network: the old default
    with pytest.raises(UserError, match="model.network must be one of seq2seq, attention; got 'rnn'"):
        model_config({"network": "rnn"}, "model")
    with pytest.raises(UserError, match="unknown key 'model.attention'"):
        model_config({"network": "seq2seq", "attention": "luong"}, "model")


@pytest.mark.parametrize("section", ["spectrogram", "seq2seq", "attention", "training", "scoring"])
@pytest.mark.parametrize("value, kind", [([1, 2], "a list"), ("fast", "str 'fast'"), (3, "int 3")])
def test_a_section_that_is_not_a_mapping_is_one_line(section, value, kind):
    with pytest.raises(UserError) as err:
        pipeline_config({section: value}, "cfg.yaml")
    assert str(err.value) == f"cfg.yaml: {section} must be a mapping of keys to values, got {kind}"


def test_presets_expand_in_one_place():
    assert expand_preset(SpectrogramConfig, {"preset": "audeep", "n_mels": 64}, "spectrogram") == \
        {**to_dict(SpectrogramConfig(**SPECTROGRAM_PRESETS["audeep"])), "n_mels": 64}
    assert expand_preset(SpectrogramConfig, {"n_mels": 64}, "spectrogram") == {"n_mels": 64}
    with pytest.raises(UserError, match="spectrogram.preset must be one of paper, audeep; got 'papper'"):
        build(SpectrogramConfig, {"preset": "papper"}, "spectrogram")
    with pytest.raises(UserError, match="unknown key 'training.preset'"):
        build(TrainingConfig, {"preset": "paper"}, "training")


def test_shipped_pipeline_configs_are_valid():
    for name in ("demo", "paper"):
        cfg = load_pipeline_config(f"configs/{name}.yaml")
        assert cfg.seq2seq.network == "seq2seq"
    assert load_pipeline_config("configs/paper.yaml").spectrogram.n_fft == 1024
