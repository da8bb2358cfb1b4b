"""Folders on local disk or on object storage (s3://, gs://), through pyarrow filesystems.

`location(uri)` gives a `Location`: a pyarrow filesystem and a path in it. Local paths use the local
filesystem; `s3://bucket/prefix` uses S3 (or any S3 API: MinIO, Ceph, moto) with the endpoint and
credentials of the standard variables (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION, else ~/.aws and the
instance's role); `gs://` uses Google Cloud Storage with its default credentials.

Object stores have no folders and no rename: a folder is a key prefix, and a folder is complete when
its marker file (written last) exists. `check(location, flag)` tries a write before any work and turns
a missing bucket, refused credentials or an unreachable endpoint into one line.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from .errors import UserError
from .io import atomic_dir, atomic_path

SCHEMES = ("s3", "gs")
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 60


def is_remote(uri: str | os.PathLike | None) -> bool:
    """Whether `uri` names object storage (s3://, gs://) rather than a local path."""
    return isinstance(uri, str) and "://" in uri and uri.split("://", 1)[0].lower() in SCHEMES


def s3_endpoint() -> str | None:
    """The S3 API endpoint of the standard variables (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3(attempts: int = 3):

    endpoint = s3_endpoint()
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options["endpoint_override"] = host.rstrip("/") if host else scheme
        options["scheme"] = scheme if host else "https"
        # self-hosted S3 APIs (MinIO, Ceph, moto) address buckets by path, not by host name
        options["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**options)


@dataclass(frozen=True)
class Location:
    """A folder: `fs` (a pyarrow FileSystem) and `path` in it; `uri` is how the user wrote it."""

    uri: str
    path: str
    fs: Any = field(compare=False, repr=False)

    @property
    def remote(self) -> bool:

        return not isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def bucket(self) -> str | None:
        return self.path.split("/", 1)[0] if self.remote else None

    def __str__(self) -> str:
        return self.uri

    def __truediv__(self, name: str) -> Location:
        name = str(name).strip("/")
        if self.remote:
            return Location(f"{self.uri.rstrip('/')}/{name}", f"{self.path.rstrip('/')}/{name}", self.fs)
        return Location(str(Path(self.uri) / name), str(Path(self.path) / name), self.fs)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def local(self) -> Path:
        """The local path (only for a local location)."""
        if self.remote:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.path)

    def _info(self):
        return self.fs.get_file_info(self.path)

    def is_file(self) -> bool:

        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        """A local folder, or a prefix holding at least one object."""

        if not self.remote:
            return self._info().type == pafs.FileType.Directory
        return bool(self.files(limit=1))

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def files(self, limit: int | None = None) -> list[str]:
        """Paths (relative to this folder, '/'-separated) of every file under it."""

        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                out.append(
                    posixpath.relpath(info.path, self.path.rstrip("/"))
                    if self.remote
                    else os.path.relpath(info.path, self.path).replace(os.sep, "/")
                )
                if limit and len(out) >= limit:
                    break
        return sorted(out)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the file whole: a local file by rename, an object in one request."""
        if not self.remote:
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(data)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def mkdir(self) -> None:
        if not self.remote:
            Path(self.path).mkdir(parents=True, exist_ok=True)

    def delete(self) -> None:
        """Remove the folder (or file) and everything under it; nothing if it is not there."""

        info = self._info()
        if info.type == pafs.FileType.File:
            self.fs.delete_file(self.path)
        elif self.remote or info.type == pafs.FileType.Directory:
            try:
                self.fs.delete_dir(self.path)
            except (FileNotFoundError, OSError):
                if self.is_dir():
                    raise

    def upload(self, folder: str | os.PathLike) -> None:
        """Copy the local `folder`'s files into this location (overwriting files of the same name)."""

        if not self.remote and Path(self.path).resolve() == Path(folder).resolve():
            return
        self.mkdir()
        pafs.copy_files(
            str(folder), self.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
        )

    def download(self, folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> None:
        """Copy this location's files into the local `folder`, leaving out those under the `skip` prefixes."""

        local = pafs.LocalFileSystem()
        for name in self.files():
            if any(name == s or name.startswith(s.rstrip("/") + "/") for s in skip):
                continue
            target = Path(folder) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(
                f"{self.path.rstrip('/')}/{name}", str(target), source_filesystem=self.fs, destination_filesystem=local
            )


@contextlib.contextmanager
def atomic_folder(loc: Location) -> Iterator[Location]:
    """Yield where to write the folder `loc` so that it appears only if the block succeeds: a local
    folder is written beside it and renamed into place (io.atomic_dir); on object storage, where there
    is no rename, what was at `loc` is deleted first, the block writes into `loc` itself (its marker
    file last: see the module's docstring), and a block that fails deletes what it wrote."""
    if not loc.remote:
        with atomic_dir(loc.path) as tmp:
            yield location(tmp)
        return
    loc.delete()
    try:
        yield loc
    except BaseException:
        loc.delete()
        raise


def of_filesystem(fs, path: str) -> Location:
    """The Location of `path` in the pyarrow filesystem `fs` (e.g. a Tune trial's storage)."""

    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        return location(path)
    return Location(f"{fs.type_name}://{path}".replace("gcs://", "gs://"), path, fs)


def location(uri: str | os.PathLike, flag: str = "path") -> Location:
    """The Location of a local path or an s3:// / gs:// URI; UserError (naming `flag`) for another scheme."""
    text = str(uri)
    if "://" not in text:
        return Location(text, str(Path(text).expanduser().absolute()), pafs.LocalFileSystem())
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise UserError(
            f"{flag} {text}: unsupported storage scheme {scheme}://; use a local path, "
            f"s3://bucket/prefix or gs://bucket/prefix"
        )
    rest = rest.strip("/")
    if not rest:
        raise UserError(f"{flag} {text}: no bucket named; use {scheme}://bucket/prefix")
    if scheme == "s3":
        fs = _s3()
    else:
        fs = pafs.GcsFileSystem()
    return Location(f"{scheme}://{rest}", rest, fs)


def as_location(where: str | os.PathLike | Location, flag: str = "path") -> Location:
    """`where` as a Location: itself if it is one, else location(where, flag)."""
    return where if isinstance(where, Location) else location(str(where), flag)


def check(loc: Location, flag: str, write: bool = True) -> None:
    """Write and delete one small object under `loc` (write=False: list it): a missing bucket, refused
    credentials or an unreachable endpoint become one UserError line naming `flag`. Local paths:
    nothing (callers check local folders themselves)."""
    if not loc.remote:
        return

    probe = loc / f".auttention-probe-{uuid.uuid4().hex}"
    fs = _s3(attempts=1) if loc.uri.startswith("s3://") else loc.fs
    where = s3_endpoint() or ("AWS S3" if loc.uri.startswith("s3://") else "Google Cloud Storage")
    try:
        if write:
            with fs.open_output_stream(probe.path) as f:
                f.write(b"ok")
            fs.delete_file(probe.path)
        else:
            bucket = fs.get_file_info(loc.bucket)
            if bucket.type == pafs.FileType.NotFound:
                raise OSError("NoSuchBucket")
            fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag} {loc.uri}: {_storage_problem(exc, loc, where)}") from None


def _storage_problem(exc: BaseException, loc: Location, where: str) -> str:
    text = " ".join(str(exc).split())
    low = text.lower()
    found = re.search(r"AWS Error \w+[^:]*: ?([^.]*)", text) or re.search(r"AWS Error \w+", text)
    if found:  # pyarrow prefixes the request it was making; the service's own words are enough
        text = found.group(0)
    if (
        "nosuchbucket" in low
        or "no_such_bucket" in low
        or "bucket does not exist" in low
        or "the specified bucket does not exist" in low
    ):
        return f"bucket {loc.bucket} does not exist at {where}; create it, or name another bucket"
    if any(
        k in low
        for k in (
            "access_denied",
            "accessdenied",
            "invalidaccesskeyid",
            "invalid_access_key",
            "signaturedoesnotmatch",
            "signature_does_not_match",
            "forbidden",
            "403",
            "credentials",
            "unauthorized",
            "401",
        )
    ):
        return (
            f"{where} refused the credentials ({text[:160]}); check AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or the instance's role)"
        )
    if any(
        k in low
        for k in (
            "network_connection",
            "couldn't connect",
            "could not connect",
            "connection refused",
            "timed out",
            "timeout",
            "resolve host",
            "curl",
            "unreachable",
        )
    ):
        return f"cannot reach {where} ({text[:160]}); check AWS_ENDPOINT_URL and the network"
    return f"cannot write there ({text[:200]})"


def check_writable(folder: Path, flag: str) -> None:
    """Fail before any work, creating nothing, when `folder` could not be written or its disk is
    nearly full (below $AUTTENTION_MIN_FREE_MB, default 200 MiB)."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file is in the way")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{folder}: cannot write here ({exc.strerror}); choose another {flag}") from None
    need = int(os.environ.get("AUTTENTION_MIN_FREE_MB", "200"))
    free = shutil.disk_usage(existing).free // 2**20
    if free < need:
        raise UserError(
            f"{folder}: only {free} MiB free on this disk (a search needs {need}); free space or choose another {flag}"
        )
