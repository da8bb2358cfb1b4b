"""The search's extraction (Ray Data: map_batches, Parquet parts written by the workers, settings.json
last) and the two ways trials get the spectrograms once per node (search.sources)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import captured_log, write_tone_corpus

from auttention import spectrogram as spectro
from auttention.config import SpectrogramConfig, build
from auttention.corpus import read_corpus

SETTINGS = {"n_fft": 256, "hop_length": 128, "n_mels": 16, "frames": 20}


@pytest.fixture(scope="module")
def ray_two_cpus(tmp_path_factory):
    """Ray on 2 CPUs; its workers keep node copies in a folder of this module's (yielded)."""
    import os

    import ray

    from search.sources import NODE_COPIES

    copies = tmp_path_factory.mktemp("node-copies")
    before = os.environ.get(NODE_COPIES)
    os.environ[NODE_COPIES] = str(copies)  # the workers inherit the driver's environment
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield copies
    ray.shutdown()
    if before is None:
        os.environ.pop(NODE_COPIES)
    else:
        os.environ[NODE_COPIES] = before


@pytest.fixture
def corpus(tmp_path):
    return read_corpus(write_tone_corpus(tmp_path / "corpus", n_per_part=12, seconds=0.4))


def test_ray_data_extraction_matches_the_in_process_one(ray_two_cpus, corpus, tmp_path):
    """Several Parquet parts written by the workers, settings.json beside them, nothing else left
    (no temporary folder); the rows are exactly what the process pool computes, and both record the
    same corpus fingerprint (the corpus as given)."""
    from auttention.corpus import fingerprint
    from auttention.extraction import ProcessPool, extract
    from search.extract import MIN_CHUNK, ensure_spectrograms

    with captured_log() as lines:
        folders = ensure_spectrograms(corpus, [SETTINGS], tmp_path / "cache")
    folder = next(iter(folders.values()))
    parts = sorted((folder.local / spectro.PARQUET).glob("*.parquet"))
    assert len(parts) == -(-len(corpus) // MIN_CHUNK) > 1  # one part per block, written by its task
    assert sorted(p.name for p in folder.local.parent.iterdir()) == [folder.name]  # no .tmp folder beside it
    assert any("with Ray Data" in line for line in lines)
    cfg = build(SpectrogramConfig, SETTINGS, "spectrogram")
    ours = spectro.read(folder)
    theirs = spectro.read(extract(corpus, cfg, tmp_path / "in-process", ProcessPool(1)))
    assert list(ours.file_name) == list(theirs.file_name)
    np.testing.assert_array_equal(ours.x, theirs.x)
    np.testing.assert_array_equal(ours.length, theirs.length)
    assert spectro.made_from(folder)["corpus"] == spectro.made_from(tmp_path / "in-process")["corpus"] \
        == fingerprint(corpus) == folder.local.parent.name
    # reused, not extracted again
    with captured_log() as again:
        ensure_spectrograms(corpus, [SETTINGS], tmp_path / "cache")
    assert again == [f"spectrograms: reusing {folder}"]


def test_two_settings_without_ray_datas_cpu_false_alarm(ray_two_cpus, corpus, tmp_path, capfd):
    """Two settings back to back (a demo search): Ray Data's "does not have any available CPUs" warning,
    which its stale view of the cluster gives right after a short extraction, reaches neither stderr nor
    a handler of its logger."""
    import logging

    from ray.util.debug import reset_log_once

    from search.extract import ensure_spectrograms

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ray.data.dataset")
    logger.addHandler(handler)
    try:
        for round_ in range(2):  # a fresh cache each round: the second setting's extraction is the short one
            reset_log_once("cpu_warning")  # Ray says it once per process: let it speak in this test
            settings = [SETTINGS, {**SETTINGS, "n_fft": 512}]
            ensure_spectrograms(corpus, settings, tmp_path / f"cache{round_}")
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    assert "available CPUs" not in err, err
    assert not [line for line in seen if "available CPUs" in line]


def _in_a_task():
    """A Ray task (defined here, so shipped by value: the workers cannot import the tests) returning what a
    trial sees of its spectrograms: shape, sum, labels, whether x is a read-only view."""
    import ray

    def look(source):
        spec = source.get()
        x = spec.x
        return {"shape": x.shape, "sum": float(np.sum(x, dtype=np.float64)), "label": spec.label.tolist(),
                "writeable": x.flags.writeable, "owndata": x.flags.owndata}

    return ray.remote(num_cpus=1)(look)


def test_node_copy_is_made_once_per_node_and_mapped(ray_two_cpus, corpus, tmp_path):
    """Two tasks at once on this node: one Arrow copy of the cache, made under the lock, read-only views
    of it in both; the labels are the corpus' (joined by file name), not those at extraction."""
    import ray

    from search.extract import ensure_spectrograms
    from search.sources import NODE_COPY, spectrogram_sources

    copies = ray_two_cpus
    folders = ensure_spectrograms(corpus, [SETTINGS], tmp_path / "cache")
    relabelled = corpus.assign(label=corpus["label"] + 100.0)
    with captured_log() as lines:
        sources = spectrogram_sources(folders, relabelled, NODE_COPY)
    source = next(iter(sources.values()))
    assert source.delivery == NODE_COPY and "memory-mapped copy of the cache per node" in lines[0]
    task = _in_a_task()
    seen = ray.get([task.remote(source), task.remote(source)])
    made = list(copies.glob("*.arrow"))
    assert len(made) == 1
    mtime = made[0].stat().st_mtime_ns
    expected = spectro.read(next(iter(folders.values()))).with_labels(relabelled)
    for view in seen:
        assert view["shape"] == expected.x.shape
        assert view["sum"] == pytest.approx(float(np.sum(expected.x, dtype=np.float64)))
        assert view["label"] == expected.label.tolist()
        assert not view["writeable"] and not view["owndata"]  # a view of the mapped file, not a copy
    ray.get(task.remote(source))
    assert made[0].stat().st_mtime_ns == mtime  # later trials map it, nobody writes it again


def test_object_store_source_is_read_by_a_task_not_the_driver(ray_two_cpus, corpus, tmp_path):
    """auto on a small corpus: the object store; the spectrograms are read by a Ray task (the driver
    holds a reference), and a trial gets the labelled rows."""
    import ray

    from search.extract import ensure_spectrograms
    from search.sources import AUTO, OBJECT_STORE, spectrogram_sources

    folders = ensure_spectrograms(corpus, [SETTINGS], tmp_path / "cache")
    with captured_log() as lines:
        sources = spectrogram_sources(folders, corpus, AUTO)
    source = next(iter(sources.values()))
    assert source.delivery == OBJECT_STORE and "through Ray's object store" in lines[0]
    assert isinstance(source.ref, ray.ObjectRef)
    view = ray.get(_in_a_task().remote(source))
    expected = spectro.read(next(iter(folders.values()))).with_labels(corpus)
    assert view["shape"] == expected.x.shape and view["label"] == expected.label.tolist()
    assert not view["writeable"]  # zero-copy from the object store
