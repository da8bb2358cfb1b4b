"""Runs and corpora on object storage, against a real S3 API on 127.0.0.1 (moto's server, with
authentication on): a tiny search with --runs and --cache in a bucket, interrupted and resumed, its
report rewritten from the bucket; and the one line a missing bucket, refused credentials or an
unreachable endpoint give before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, run_until

pytestmark = pytest.mark.timeout(900)

BUCKET = "auttention-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with authentication on, one bucket, and a user allowed everything:
    {AWS_* variables of that user}."""
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    # the first 4 requests (creating the user, its policy and key, the bucket) go unauthenticated; then
    # every request must be signed with a key the server issued
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:  # bounded by the module's timeout; the server answers once it listens
            if server.poll() is not None:
                pytest.fail(f"moto server exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="searcher")
        iam.put_user_policy(UserName="searcher", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="searcher")["AccessKey"]
        creds = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                 "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=BUCKET)
        yield creds
    finally:
        server.terminate()
        server.wait(timeout=30)


def _client(creds: dict):
    import boto3

    return boto3.client("s3", endpoint_url=creds["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])


def _upload(creds: dict, folder: Path, prefix: str) -> None:
    client = _client(creds)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _keys(creds: dict, prefix: str) -> list[str]:
    client = _client(creds)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_search_with_corpus_runs_and_cache_in_a_bucket_resumes(s3, tiny, tmp_path):
    """The corpus, the run folder and the spectrogram cache in the bucket; on local disk only the driver's
    mirror of the run folder. The first run hands the trials the spectrograms through the object store,
    the resumed one through node copies of the cache in the bucket."""
    import yaml
    from conftest import TINY_SPACE

    root, corpus, _ = tiny
    space = tmp_path / "bucketed.yaml"  # 2 trials, no confirmation seeds: the storage is under test here
    space.write_text(yaml.safe_dump({**TINY_SPACE, "experiment": {**TINY_SPACE["experiment"], "num_samples": 2,
                                                                   "confirm_top": 0}}))
    _upload(s3, corpus, "corpus")
    copies = tmp_path / "node-copies"
    env = {**os.environ, **s3, "AUTTENTION_CACHE": str(tmp_path / "local-cache"), "AUTTENTION_NODE_COPIES": str(copies)}
    runs, cache = f"s3://{BUCKET}/runs", f"s3://{BUCKET}/cache"
    cmd = [sys.executable, "-m", "search.cli", "run", str(space), "--data", f"s3://{BUCKET}/corpus", "--runs", runs,
           "--cache", cache, "--name", "bucketed", "--no-dashboard"]
    # interrupt the driver once a trial has completed: the experiment so far is in the bucket only
    seen = run_until(cmd, "completed after", env)
    assert any("completed after" in line for line in seen), "".join(seen[-30:])
    assert not _keys(s3, "runs/bucketed/trials.csv")
    assert any(k.startswith("runs/bucketed/tune/") for k in _keys(s3, "runs/bucketed/"))
    assert any("through Ray's object store" in line for line in seen), "".join(seen[-30:])
    cached = _keys(s3, "cache/spectrograms/")
    parts = [k for k in cached if k.endswith(".parquet") and "/parquet/" in k]
    assert parts and any(k.endswith("/settings.json") for k in cached), cached
    assert not (tmp_path / "local-cache" / "spectrograms").exists()
    assert not copies.exists()

    out = subprocess.run(cmd + ["--resume", "--delivery", "node-copy"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming" in out.stdout
    assert f"spectrograms: reusing s3://{BUCKET}/cache/spectrograms/" in out.stdout
    assert "memory-mapped copy of the cache per node" in out.stdout
    assert len(list(copies.glob("*.arrow"))) == 1  # one copy on this node, whatever the trials
    assert _keys(s3, "cache/spectrograms/") == cached  # the cache was reused, not rewritten
    keys = _keys(s3, "")
    for key in ("runs/bucketed/trials.csv", "runs/bucketed/best/predictions.test.csv",
                "runs/bucketed/best/config.yaml", "runs/bucketed/best/metrics.json", "runs/bucketed/optuna.db",
                "runs/bucketed/space.yaml", "runs/bucketed/report/index.html"):
        assert key in keys, f"{key} not in the bucket: {sorted(keys)[:40]}"
    # every trial's checkpoints went to the bucket (one kept per ended trial), none to a local run folder
    checkpoints = {k.split("/")[3] for k in keys if k.startswith("runs/bucketed/tune/trial_") and "/checkpoint_" in k}
    assert len(checkpoints) == 2
    assert not (Path("runs") / "bucketed").exists()
    assert "corpus: 30 clips" in out.stdout

    import io

    import pandas as pd

    body = _client(s3).get_object(Bucket=BUCKET, Key="runs/bucketed/trials.csv")["Body"].read()
    trials = pd.read_csv(io.BytesIO(body))
    assert len(trials) == 2 and trials["trial_id"].is_unique

    # the report, rewritten from the bucket alone (a fresh mirror)
    env2 = {**env, "AUTTENTION_CACHE": str(tmp_path / "other-machine")}
    before = _keys(s3, "runs/bucketed/report/index.html")
    rep = _cli("report", f"{runs}/bucketed", env=env2)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert f"{runs}/bucketed/report/index.html" in rep.stdout
    assert before and _keys(s3, "runs/bucketed/report/index.html")


def test_extract_out_to_a_bucket_like_the_cache(s3, tmp_path):
    """`extract --out s3://...`: the folder written into the bucket (parts, then settings.json), read back from
    there, reused by a second call; a missing bucket is one line before any work."""
    from conftest import write_tone_corpus

    corpus = write_tone_corpus(tmp_path / "c", n_per_part=3, seconds=0.3)
    env = {**os.environ, **s3}
    args = ["extract", "--data", str(corpus), "--n-fft", "256", "--hop-length", "128", "--n-mels", "16",
            "--frames", "20", "--jobs", "2"]
    out = _cli(*args, "--out", f"s3://{BUCKET}/spec/one", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"spectrograms: 9 clips x 20 frames x 16 bands -> s3://{BUCKET}/spec/one" in out.stdout
    keys = _keys(s3, "spec/one/")
    assert "spec/one/settings.json" in keys and any(k.startswith("spec/one/parquet/") for k in keys), keys
    again = _cli(*args, "--out", f"s3://{BUCKET}/spec/one", env=env)
    assert again.returncode == 0 and f"spectrograms: reusing s3://{BUCKET}/spec/one" in again.stdout, again.stderr
    # the same objects (the --out check's probe may leave pyarrow's empty marker of the prefix itself)
    assert [k for k in _keys(s3, "spec/one/") if k != "spec/one/"] == keys
    missing = _cli(*args, "--out", "s3://no-such-bucket/spec", env=env, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: --out s3://no-such-bucket/spec: bucket "
                                                                 "no-such-bucket does not exist"), missing.stderr


@pytest.mark.parametrize("case, flag, expected", [
    ("bucket", "--runs", "bucket no-such-bucket does not exist"),
    ("cache-bucket", "--cache", "bucket no-such-bucket does not exist"),
    ("credentials", "--runs", "refused the credentials"),
    ("endpoint", "--runs", "cannot reach http://127.0.0.1:"),
])
def test_storage_problems_are_one_line_before_any_work(s3, tiny, tmp_path, case, flag, expected):
    root, corpus, space = tiny
    env = {**os.environ, **s3, "AUTTENTION_CACHE": str(tmp_path / "local-cache")}
    runs, cache = f"s3://{BUCKET}/runs", f"s3://{BUCKET}/cache"
    if case == "bucket":
        runs = "s3://no-such-bucket/runs"
    elif case == "cache-bucket":
        cache = "s3://no-such-bucket/cache"
    elif case == "credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    else:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    out = _cli("run", str(space), "--data", str(corpus), "--runs", runs, "--cache", cache, "--name", f"bad-{case}",
               "--no-dashboard", env=env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} ") and expected in lines[0], out.stderr
    assert not _keys(s3, f"runs/bad-{case}")
    assert "Traceback" not in out.stdout + out.stderr
    assert "ray" not in out.stdout.lower()  # nothing started
    assert not (tmp_path / "local-cache" / "spectrograms").exists()



def test_unknown_storage_scheme_is_one_line(tiny, tmp_path):
    root, corpus, space = tiny
    out = _cli("run", str(space), "--data", str(corpus), "--runs", "ftp://host/runs", "--no-dashboard",
               env={**os.environ, "AUTTENTION_CACHE": str(tmp_path)}, timeout=120)
    assert out.returncode == 2 and "unsupported storage scheme ftp://" in out.stderr, out.stderr


def test_a_corpus_in_a_bucket_gets_the_same_checks(s3, tmp_path, monkeypatch):
    """A ComParE prefix in a bucket is read as a folder is: URIs for paths, the same one-line refusals."""
    from conftest import write_tone_corpus

    from auttention.corpus import fingerprint, read_corpus
    from auttention.errors import UserError

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    corpus = write_tone_corpus(tmp_path / "c", n_per_part=2)
    _upload(s3, corpus, "checked")
    table = read_corpus(f"s3://{BUCKET}/checked")
    assert len(table) == 6 and all(p.startswith(f"s3://{BUCKET}/checked/wav/") for p in table["path"])
    assert fingerprint(table) == fingerprint(table) and len(fingerprint(table)) == 16
    labels = (corpus / "lab" / "labels.csv").read_text()
    for bad, expected in ((labels + "../escape.wav,3\n", "points outside the corpus folder"),
                          (labels + "train_9999.wav,3\n", "audio file s3://"),
                          ("file_name\ntrain_0001.wav\n", "missing column(s) label")):
        _client(s3).put_object(Bucket=BUCKET, Key="checked/lab/labels.csv", Body=bad.encode())
        with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            read_corpus(f"s3://{BUCKET}/checked")
    with pytest.raises(UserError, match="label file not found"):
        read_corpus(f"s3://{BUCKET}/nothing-here")
    with pytest.raises(UserError, match="bucket no-such-bucket does not exist"):
        read_corpus("s3://no-such-bucket/corpus")
