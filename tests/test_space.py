import optuna
import pytest
import yaml

from auttention.errors import UserError
from search.space import load_space, parse_space

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
        config = {}
        for k, v in {**params, **fixed}.items():
            s, key = k.split("/")
            config.setdefault(s, {})[key] = v
        cfg = space.trial_config(config)
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


def test_points_to_evaluate_are_checked():
    data = _with("searcher", "points_to_evaluate", [{"seq2seq": {"units": 12}}])
    data["seq2seq"]["units"] = {"choice": [8, 16]}
    with pytest.raises(UserError, match="not one of the choices"):
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
