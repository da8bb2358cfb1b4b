import numpy as np
import pandas as pd
import pytest

from auttention.config import ScoringConfig
from auttention.errors import UserError
from auttention.evaluation import evaluate
from auttention.features import feature_frame, fuse
from auttention.metric import spearman
from auttention.predictions import score_predictions
from auttention.svr import postprocess
from auttention.validation import FIT_ONLY, cross_validate


def devel_choice(x_train, y_train, x_devel, y_devel, cfg):
    """C chosen on devel (scoring.validation devel): the SVR fit on train for the grid, devel held out."""
    folds = np.r_[np.full(len(y_train), FIT_ONLY), np.zeros(len(y_devel), int)]
    return cross_validate(np.vstack([x_train, x_devel]), np.concatenate([y_train, y_devel]), folds, cfg)


def test_spearman_hand_computed_and_constant():
    # ranks of pred: 1,3,2,4 vs truth 1,2,3,4: d^2 = 0+1+1+0 = 2 -> 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0


def test_postprocess_round_clip():
    cfg = ScoringConfig()
    assert postprocess(np.array([-3.0, 1.4, 4.6, 12.0]), cfg).tolist() == [1, 1, 5, 9]


def _frame(seed=0, n=30, name="a"):
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 10, size=3 * n).astype(float)
    x = np.c_[y + rng.normal(0, 1.0, 3 * n), rng.normal(size=(3 * n, 3))]
    parts = ["train"] * n + ["devel"] * n + ["test"] * n
    names = [f"{p}_{i:04d}.wav" for i, p in enumerate(parts)]
    return feature_frame(names, parts, y, x, name)


def test_devel_choice_matches_manual_grid():
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import LinearSVR
    frame = _frame()
    cfg = ScoringConfig(complexities=[1e-3, 1.0])
    tr, dv = frame[frame.partition == "train"], frame[frame.partition == "devel"]
    cols = [c for c in frame.columns if c.startswith("a_")]
    chosen = devel_choice(tr[cols].to_numpy(), tr.label.to_numpy(), dv[cols].to_numpy(), dv.label.to_numpy(), cfg)
    for c in cfg.complexities:
        scaler = MinMaxScaler().fit(tr[cols])
        svr = LinearSVR(C=c, random_state=0, max_iter=10000).fit(scaler.transform(tr[cols]), tr.label)
        pred = np.clip(np.round(svr.predict(scaler.transform(dv[cols]))), 1, 9)
        assert chosen.score_per_c[c] == pytest.approx(spearman(dv.label, pred))
    assert chosen.c == max(chosen.score_per_c, key=chosen.score_per_c.get)
    assert chosen.score > 0.5


def test_evaluate_refits_on_train_and_devel():
    ev = evaluate(_frame(), ScoringConfig())
    assert len(ev.test) == 30 and ev.test.prediction.between(1, 9).all()
    assert ev.test_rho is not None and ev.test_rho > 0.5
    frame = _frame()
    frame.loc[frame.partition == "test", "label"] = np.nan
    assert evaluate(frame, ScoringConfig()).test_rho is None


def test_metrics_count_the_clips_the_test_model_was_fit_on():
    frame = _frame()
    frame = frame[~frame.file_name.isin(frame[frame.partition == "train"].file_name[:5])]  # 25 train, 30 devel
    metrics = evaluate(frame, ScoringConfig()).metrics()
    assert metrics["n_train_devel"] == 25 + 30 and metrics["n_test"] == 30


def test_fusion_joins_on_file_name_not_row_order():
    a, b = _frame(0, name="a"), _frame(0, name="b")
    b_shuffled = b.sample(frac=1.0, random_state=3).reset_index(drop=True)
    fused = fuse([a, b_shuffled])
    for _, row in fused.iterrows():
        assert row["a_0000"] == pytest.approx(row["b_0000"])
    assert fused.shape[1] == 3 + 4 + 4


def test_fusion_refuses_different_files_or_labels():
    a, b = _frame(0, name="a"), _frame(0, name="b")
    with pytest.raises(UserError, match="does not cover the same files"):
        fuse([a, b.iloc[1:]])
    b2 = b.copy()
    b2.loc[0, "label"] = b2.loc[0, "label"] + 1
    with pytest.raises(UserError, match="other labels"):
        fuse([a, b2])
    with pytest.raises(UserError, match="feature columns"):
        fuse([a, a.copy()])


def test_score_predictions():
    preds = pd.DataFrame({"file_name": ["x", "y", "z"], "prediction": [1, 2, 3]})
    labels = pd.DataFrame({"file_name": ["x", "y", "z"], "label": [1.0, 3.0, 2.0]})
    rho, n, ci, resampled = score_predictions(preds, labels)
    assert n == 3 and rho == pytest.approx(0.5) and resampled == "clips" and ci[0] <= rho <= ci[1]
    with pytest.raises(UserError, match="labels as '\\?'"):
        score_predictions(preds, labels.assign(label=np.nan))


def _per_c_reference(x_train, y_train, x_devel, y_devel, cfg):
    """select_c as the paper's code does it: a fresh scaler + liblinear LinearSVR per C, from zero."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.svm import LinearSVR

    rhos = {}
    for c in cfg.complexities:
        scaler = MinMaxScaler().fit(x_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svr = LinearSVR(C=c, random_state=0, max_iter=cfg.max_iter).fit(scaler.transform(x_train), y_train)
        rhos[c] = spearman(y_devel, postprocess(svr.predict(scaler.transform(x_devel)), cfg))
    best = max(rhos, key=rhos.get)  # the first of the best on ties, as the devel choice
    return best, rhos[best]


def _tone_functionals(root, n_per_part):
    """Real audio features of a tone corpus whose pitch cue is blurred: per mel band, the mean, spread
    and 10th / 90th percentiles of the clip's dB spectrogram over time."""
    from auttention.audio import load_audio
    from auttention.config import SpectrogramConfig
    from auttention.corpus import read_corpus
    from auttention.spectrogram import mel_spectrogram
    from tests.conftest import write_tone_corpus

    cfg = SpectrogramConfig(n_fft=512, hop_length=256, n_mels=24)
    corpus = read_corpus(write_tone_corpus(root, n_per_part=n_per_part, seconds=0.3, pitch_noise=60.0))
    corpus = corpus[corpus["partition"] != "test"]
    spectrograms = [mel_spectrogram(load_audio(p, cfg.sample_rate), cfg) for p in corpus["path"]]
    x = np.stack([np.r_[s.mean(0), s.std(0), np.percentile(s, [10, 90], axis=0).ravel()] for s in spectrograms])
    y, part = corpus["label"].to_numpy(float), corpus["partition"].to_numpy()
    return x[part == "train"], y[part == "train"], x[part == "devel"], y[part == "devel"]


def _latent_features(n, d, seed=0):
    """Features as an autoencoder's: tanh of a few correlated factors, one of them the label's, n >> d."""
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 10, size=2 * n).astype(float)
    factors = np.c_[(y - 5) / 3 + rng.normal(0, 1.2, 2 * n), rng.normal(size=(2 * n, 5))]
    x = np.tanh(factors @ rng.normal(size=(6, d)) / 2 + rng.normal(0, 0.3, (2 * n, d))).astype(np.float32)
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.parametrize("data", ["tones", "latent"])
def test_devel_choice_same_choice_as_per_c_liblinear(tmp_path, data):
    # tones: 40 clips x 96 spectrogram functionals (fewer clips than features); latent: 400 x 32 (n >> d)
    sets = _tone_functionals(tmp_path / "corpus", 40) if data == "tones" else _latent_features(400, 32)
    cfg = ScoringConfig()
    c, rho = _per_c_reference(*sets, cfg)
    chosen = devel_choice(*sets, cfg)
    assert chosen.c == c
    assert chosen.score == pytest.approx(rho, abs=0.01)
    assert rho > 0.2  # the features carry the label: the comparison is not between two zeros


def test_evaluate_gives_intervals_resampling_speakers_where_known():
    from auttention.confidence import rho_interval

    frame = _frame()
    ev = evaluate(frame, ScoringConfig())
    assert ev.resampled == "clips" and ev.devel_ci[0] < ev.devel_rho < ev.devel_ci[1]
    assert ev.test_ci[0] < ev.test_rho < ev.test_ci[1]
    speaker = [f"{p}{i % 5}" for i, p in enumerate(frame["partition"])]  # 5 speakers per partition
    with_speakers = feature_frame(frame.file_name, frame.partition, frame.label,
                                  frame[[c for c in frame.columns if c.startswith("a_")]].to_numpy(), "a", speaker)
    ev_s = evaluate(with_speakers, ScoringConfig())
    assert ev_s.devel_rho == ev.devel_rho and ev_s.test_rho == ev.test_rho  # the speaker column is no feature
    devel = with_speakers[with_speakers.partition == "devel"].sort_values("file_name")
    assert ev_s.resampled == "speakers" and ev_s.devel_ci == rho_interval(
        devel.label.to_numpy(), ev_s.devel.prediction.to_numpy(), devel.speaker.to_numpy())
    assert evaluate(frame, ScoringConfig(), intervals=False).devel_ci is None
    metrics = ev_s.metrics()
    assert metrics["devel_rho_ci"] == list(ev_s.devel_ci) and metrics["resampled"] == "speakers"
    frame.loc[frame.partition == "test", "label"] = np.nan
    assert evaluate(frame, ScoringConfig()).metrics()["test_rho_ci"] is None


def test_format_rho_ci():
    from auttention.formatting import RHO_UNDEFINED, format_rho_ci

    assert format_rho_ci(0.5771, (0.409, 0.7249)) == "0.577 [0.41, 0.72]"
    assert format_rho_ci(-0.05, [-0.21, 0.1]) == "-0.050 [-0.21, 0.10]"
    assert format_rho_ci(0.5, None) == "0.500" and format_rho_ci(0.5, (float("nan"), float("nan"))) == "0.500"
    assert format_rho_ci(float("nan"), None) == RHO_UNDEFINED and format_rho_ci(None, None, missing="-") == "-"


def _spoken(seed=0, n=60, speakers=(12, 6, 6)):
    """_frame's clips with speakers: train, devel and test each their own, clips dealt round-robin."""
    frame = _frame(seed, n)
    owner = {"train": speakers[0], "devel": speakers[1], "test": speakers[2]}
    frame.insert(0, "speaker", [f"{p}{i % owner[p]}" for i, p in enumerate(frame["partition"])])
    return frame


def test_validation_folds_are_speaker_disjoint_balanced_and_deterministic():
    from auttention.validation import FIT_ONLY, validation_folds

    frame = _spoken()
    fit = frame[frame.partition != "test"]
    parts, groups = fit.partition.to_numpy(), fit.speaker.to_numpy(dtype=object)
    folds = validation_folds(parts, groups, ScoringConfig(validation="speaker_folds", folds=4))
    assert sorted(set(folds)) == [0, 1, 2, 3]
    per_speaker = pd.Series(folds).groupby(groups).nunique()
    assert (per_speaker == 1).all()  # no speaker in two folds
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= pd.Series(groups).value_counts().max()  # balanced to one speaker's clips
    again = validation_folds(parts[::-1], groups[::-1], ScoringConfig(validation="speaker_folds", folds=4))[::-1]
    assert (again == folds).all()  # by speaker, not by row order
    assert (validation_folds(parts, None, ScoringConfig()) == np.where(parts == "devel", 0, FIT_ONLY)).all()
    assert (validation_folds(parts, None, ScoringConfig(validation="swap")) == np.where(parts == "devel", 0, 1)).all()
    with pytest.raises(UserError, match="speaker_folds needs every clip's speaker"):
        validation_folds(parts, None, ScoringConfig(validation="speaker_folds"))
    with pytest.raises(UserError, match="scoring.folds: 30 speaker-disjoint folds need at least 30 speakers"):
        validation_folds(parts, groups, ScoringConfig(validation="speaker_folds", folds=30))


def test_swap_scores_both_directions_and_chooses_c_by_their_mean():
    from auttention.svr import fit_predict

    frame = _spoken()
    cfg = ScoringConfig(validation="swap", complexities=[1e-3, 1e-1, 1.0])
    ev = evaluate(frame, cfg)
    cols = [c for c in frame.columns if c.startswith("a_")]
    tr, dv = (frame[frame.partition == p].sort_values("file_name") for p in ("train", "devel"))
    for c in cfg.complexities:
        forward = spearman(dv.label, fit_predict(tr[cols].to_numpy(), tr.label.to_numpy(), dv[cols].to_numpy(), c, cfg))
        backward = spearman(tr.label, fit_predict(dv[cols].to_numpy(), dv.label.to_numpy(), tr[cols].to_numpy(), c, cfg))
        assert ev.score_per_c[c] == pytest.approx((forward + backward) / 2, abs=1e-9)
    assert ev.c == max(ev.score_per_c, key=ev.score_per_c.get) and ev.score == ev.score_per_c[ev.c]
    # devel as the paper scores it at that C, test from the refit on train+devel
    assert ev.devel_rho == pytest.approx(spearman(dv.label, fit_predict(tr[cols].to_numpy(), tr.label.to_numpy(),
                                                                        dv[cols].to_numpy(), ev.c, cfg)))
    assert ev.score_ci[0] <= ev.score <= ev.score_ci[1]
    assert ev.metrics()["validation"] == "swap" and ev.metrics()["score"] == ev.score
    assert set(ev.held_out["fold"]) == {0, 1} and len(ev.held_out) == len(tr) + len(dv)


def test_speaker_folds_hold_each_clip_out_once_and_devel_is_the_default_unchanged():
    frame = _spoken()
    ev = evaluate(frame, ScoringConfig(validation="speaker_folds", folds=3))
    assert len(ev.held_out) == (frame.partition != "test").sum() and ev.held_out["file_name"].is_unique
    assert ev.label == "3-fold" and np.isfinite(ev.score) and ev.score_ci[0] <= ev.score <= ev.score_ci[1]
    plain = evaluate(frame, ScoringConfig())  # devel: the score is devel's rho, C as the devel choice chooses it
    cols = [c for c in frame.columns if c.startswith("a_")]
    tr, dv = (frame[frame.partition == p].sort_values("file_name") for p in ("train", "devel"))
    chosen = devel_choice(tr[cols].to_numpy(), tr.label.to_numpy(), dv[cols].to_numpy(), dv.label.to_numpy(), ScoringConfig())
    assert plain.score == plain.devel_rho == chosen.score and plain.c == chosen.c and plain.score_ci == plain.devel_ci
    with pytest.raises(UserError, match="speaker_folds needs every clip's speaker"):
        evaluate(_frame(), ScoringConfig(validation="speaker_folds"))
