import optuna
import pytest
import yaml
from click.testing import CliRunner

from auttention.config import SPECTROGRAM_PRESETS, AttentionConfig, Seq2seqConfig, SpectrogramConfig, to_dict
from auttention.errors import UserError
from search.cli import main
from search.keys import nested_params
from search.space import CONTROL, MAX_COMBINATIONS, SECTIONS, load_space, parse_space

BASE = {
    "experiment": {"name": "t", "num_samples": 2},
    "spectrogram": {"n_fft": 256, "hop_length": 128, "n_mels": 16, "clip_below": {"choice": [-60, -80]}},
    "seq2seq": {"units": {"int": [8, 32], "step": 8}, "layers": 1},
    "attention": {"attention": {"choice": ["bahdanau", "luong"]},
                  "attention_units": {"choice": [4, 8], "when": {"attention": "bahdanau"}}},
    "training": {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "batch_size": 8},
    "scheduler": {"max_epochs": 2},
}


def _with(section, key, value):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.setdefault(section, {})[key] = value
    return data


def test_shipped_spaces_are_valid():
    for name in ("demo", "paper", "audeep", "full"):
        space = load_space(f"spaces/{name}.yaml")
        assert space.experiment.num_samples >= 1


def test_define_by_run_and_conditionals():
    space = parse_space(BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_kinds = set()
    for _ in range(20):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        params = trial.params
        assert fixed["seq2seq/layers"] == 1 and fixed["training/batch_size"] == 8
        assert params["seq2seq/units"] in (8, 16, 24, 32)
        assert 1e-4 <= params["training/learning_rate"] <= 1e-2
        kind = params["attention/attention"]
        seen_kinds.add(kind)
        # attention_units is sampled only where it applies
        assert ("attention/attention_units" in params) == (kind == "bahdanau")
        cfg = space.trial_config(nested_params({**params, **fixed}))  # Tune merges them so, then unflattens
        assert cfg.training.epochs == 2 and cfg.attention.attention == kind
        study.tell(trial, 0.0)
    assert seen_kinds == {"bahdanau", "luong"}
    assert len(space.spectrogram_settings()) == 2


@pytest.mark.parametrize("section, key, value, message", [
    ("seq2seq", "unitz", 8, "unknown key 'seq2seq.unitz'"),
    ("seq2seq", "units", {"choice": []}, "seq2seq.units.choice must be a non-empty list"),
    ("seq2seq", "units", {"int": [32, 8]}, "bounds out of order"),
    ("seq2seq", "units", {"uniform": [8, 32]}, "uniform does not fit this key; use choice, int"),
    ("seq2seq", "layers", {"int": [1, 5]}, "seq2seq.layers.int must be <= 3"),
    ("seq2seq", "dropout", {"uniform": [0.1, 1.5]}, "seq2seq.dropout.uniform must be <= 0.95"),
    ("training", "learning_rate", {"loguniform": [0, 0.1]}, "training.learning_rate.loguniform must be > 0"),
    ("training", "epochs", 3, "scheduler.max_epochs"),
    ("seq2seq", "cell", {"choice": ["gru", "rnn"]}, "seq2seq.cell.choice[1] must be one of gru, lstm"),
    ("seq2seq", "units", {"int": [8, 16], "ste": 2}, "a distribution has exactly one of"),
    ("spectrogram", "n_mels", {"int": [16, 32]}, "choice only"),
    ("experiment", "time_budget", 0, "positive duration"),
    ("experiment", "time_budget", "soon", "duration like"),
    ("resources", "gpu", 1.5, "resources.gpu must be <= 1"),
    ("attention", "decoder_bidirectional", True, "unknown key 'attention.decoder_bidirectional'"),
    ("scheduler", "grace_period", 5, "grace_period (5) is above scheduler.max_epochs"),
    ("scoring", "validation", {"choice": ["devel", "swap"]}, "scoring.validation cannot be searched: trials scored"),
    ("scoring", "validation", "kfold", "scoring.validation must be one of devel, swap, speaker_folds"),
    ("scoring", "folds", 1, "scoring.folds must be >= 2"),
])
def test_validation_names_the_key(section, key, value, message):
    with pytest.raises(UserError) as err:
        parse_space(_with(section, key, value), "s.yaml")
    assert message in str(err.value) and str(err.value).startswith("s.yaml: ")
    assert "\n" not in str(err.value)


def test_space_with_no_valid_trial():
    data = _with("spectrogram", "hop_length", {"choice": [512, 1024]})
    with pytest.raises(UserError, match="hop_length"):
        parse_space(data)


def test_every_spectrogram_combination_is_checked_at_parse_time():
    # (256, 128), (1024, 128) and (1024, 512) are valid settings; (256, 512) is not: refused before Ray starts
    data = {**BASE, "spectrogram": {"n_fft": {"choice": [256, 1024]}, "hop_length": {"choice": [128, 512]}}}
    with pytest.raises(UserError) as err:
        parse_space(data, "s.yaml")
    assert str(err.value) == (
        "s.yaml: the combination spectrogram.n_fft=256, spectrogram.hop_length=512: "
        "spectrogram.hop_length (512) is larger than spectrogram.n_fft (256); use a hop no larger than the window")
    data["spectrogram"] = {"n_fft": {"choice": [256, 1024]}, "hop_length": {"choice": [128, 256]},
                           "clip_below": {"choice": [-60, -80]}}
    space = parse_space(data)
    assert len(space.spectrograms) == 2 * 2 * 2
    assert all(isinstance(c, SpectrogramConfig) for c in space.spectrograms)
    assert [SpectrogramConfig(**v) for v in space.spectrogram_settings()] == list(space.spectrograms)


def test_searched_label_range_is_checked_at_its_ends():
    data = _with("scoring", "label_min", {"uniform": [1.0, 5.0]})
    data["scoring"]["label_max"] = {"uniform": [4.0, 9.0]}
    with pytest.raises(UserError, match=r"the combination scoring.label_min=5.0 \(uniform \[1.0, 5.0\]\), "
                                        r"scoring.label_max=4.0 \(uniform \[4.0, 9.0\]\): scoring.label_min \(5.0\) "
                                        r"must be below scoring.label_max \(4.0\)"):
        parse_space(data)
    data["scoring"]["label_max"] = {"choice": [6.0, 9.0]}
    parse_space(data)
    # a combination `when` never draws is not checked: label_max 4.0 only with round false
    data["scoring"]["label_max"] = {"choice": [4.0, 9.0], "when": {"round": False}}
    data["scoring"]["round"] = True
    parse_space(data)
    data["scoring"]["round"] = False
    with pytest.raises(UserError, match="scoring.label_min .5.0. must be below scoring.label_max .4.0."):
        parse_space(data)


def test_too_many_combinations_to_check():
    data = _with("spectrogram", "n_mels", {"choice": list(range(8, 8 + 200))})
    data["spectrogram"]["fmin"] = {"choice": [float(f) for f in range(60)]}
    with pytest.raises(UserError, match=f"spectrogram: 24000 combinations .* \\(at most {MAX_COMBINATIONS}\\)"):
        parse_space(data)


def test_a_searched_key_of_a_preset_is_drawn_not_fixed():
    data = _with("spectrogram", "preset", "paper")
    space = parse_space(data)
    assert "clip_below" not in space.fixed["spectrogram"]  # the preset's -80 must not override the draws
    assert {c.clip_below for c in space.spectrograms} == {-60.0, -80.0}
    assert space.fixed["spectrogram"] == {k: v for k, v in to_dict(SpectrogramConfig(**SPECTROGRAM_PRESETS["paper"])).items()
                                          if k != "clip_below"} | {"n_fft": 256, "hop_length": 128, "n_mels": 16}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(12):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        # Tune merges the returned fixed values over the drawn ones: a drawn key must not be among them
        cfg = space.trial_config(nested_params({**trial.params, **fixed}))
        assert cfg.spectrogram.clip_below == trial.params["spectrogram/clip_below"]
        drawn.add(cfg.spectrogram.clip_below)
        study.tell(trial, 0.0)
    assert drawn == {-60.0, -80.0}


def test_trial_config_builds_each_network_class_and_sets_epochs_from_the_scheduler():
    space = parse_space(BASE)
    cfg = space.trial_config({"seq2seq": {"units": 16}, "attention": {"attention": "luong"}})
    assert cfg.seq2seq == Seq2seqConfig(units=16, layers=1)
    assert cfg.attention == AttentionConfig(attention="luong")
    assert cfg.training.epochs == space.scheduler.max_epochs == 2


def test_points_to_evaluate_are_checked():
    data = _with("searcher", "points_to_evaluate", [{"seq2seq": {"units": 12}}])
    data["seq2seq"]["units"] = {"choice": [8, 16]}
    with pytest.raises(UserError, match="not one of the choices"):
        parse_space(data)
    data["searcher"]["points_to_evaluate"] = [{"training": {"learning_rate": "fast"}}]
    with pytest.raises(UserError, match=r"training.learning_rate = 'fast' is not in \[0.0001, 0.01\]"):
        parse_space(data)
    data["searcher"]["points_to_evaluate"] = [{"seq2seq": {"units": 8.5}}]
    data["seq2seq"]["units"] = {"int": [8, 16]}
    with pytest.raises(UserError, match=r"seq2seq.units = 8.5 is not a whole number in \[8, 16\]"):
        parse_space(data)
    data["searcher"]["points_to_evaluate"] = [{"seq2seq": {"layers": 1}}]
    with pytest.raises(UserError, match="not a searched key"):
        parse_space(data)


def test_unknown_section_and_safe_yaml(tmp_path):
    with pytest.raises(UserError, match="unknown section 'schedular'"):
        parse_space({**BASE, "schedular": {}})
    evil = tmp_path / "evil.yaml"
    evil.write_text("experiment: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_space(evil)


@pytest.mark.parametrize("section", [*CONTROL, *SECTIONS])
def test_a_section_that_is_a_list_is_one_line_through_the_cli(tmp_path, section):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, section: [1, 2]}))
    result = CliRunner().invoke(main, ["run", str(bad), "--runs", str(tmp_path / "runs")], catch_exceptions=False)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and "Traceback" not in result.stdout + result.stderr
    assert lines == [f"error: {bad}: {section} must be a mapping of keys to values, got a list"]
    assert not (tmp_path / "runs").exists()
