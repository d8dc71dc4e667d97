"""One small key/value interface over a local folder and an S3 bucket.

Keys are ``/``-separated paths relative to the store root (``requests/r1/request.json``); keys
with ``..``/``.`` segments, a leading ``/``, backslashes or empty segments are refused.

Guarantees, on both back ends:
- ``put_bytes`` is atomic: a reader sees the old object or the whole new one.
- ``put_bytes(..., exclusive=True)`` creates the key only if it does not exist yet, in one atomic
  step, and raises :class:`AlreadyExists` otherwise. Locally: the content goes to a temp file that
  is hard-linked to the final name (``link`` fails if the name exists). On S3: one conditional
  ``PutObject`` with ``If-None-Match: *`` (honoured by AWS S3 since 2024-08 and by moto >= 5;
  an S3-compatible server that silently ignores the header gives no exclusivity).

``open_store("s3://bucket/prefix")`` gives an :class:`S3Store`; ``file:///abs/path`` or a plain
path gives a :class:`LocalStore` (the folder is created on the first write). The S3 endpoint comes
from boto3's own settings (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` / AWS config), else from
``MLFLOW_S3_ENDPOINT_URL``; the region defaults to us-east-1. botocore failures become
:class:`RfauError` naming the ``s3://`` uri: missing bucket, access denied / bad credentials,
unreachable endpoint (short connect timeout and two attempts, so this takes seconds).
"""

from __future__ import annotations

import os
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import unquote, urlparse

from rfau.errors import RfauError

_TMP_SUFFIX = ".rfau-tmp"


class NotFound(RfauError):
    """The key does not exist in the store."""


class AlreadyExists(RfauError):
    """An exclusive create found the key already there."""


def check_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a clean relative ``/``-separated path, else raise RfauError.

    With ``prefix=True`` the empty string and a trailing ``/`` are allowed (listing prefixes).
    """
    if not isinstance(key, str):
        raise RfauError(f"store key must be a string, got {type(key).__name__}")
    if prefix and key == "":
        return key
    problem = None
    body = key[:-1] if prefix and key.endswith("/") else key
    if not body:
        problem = "empty key"
    elif body.startswith("/") or (len(body) > 1 and body[1] == ":" and body[0].isalpha()):
        problem = "absolute path"
    elif "\\" in body or "\x00" in body:
        problem = "backslash or NUL character"
    elif any(p in ("..", ".") for p in body.split("/")):
        problem = "'.' or '..' path segment"
    elif any(p == "" for p in body.split("/")):
        problem = "empty path segment"
    if problem:
        raise RfauError(f"invalid store key {key!r}: {problem}")
    return key


class Store(ABC):
    """Keys -> bytes. See the module docstring for the guarantees."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix, as in S3), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the key; removing a missing key is not an error."""

    def where(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def open_store(uri: str | Path) -> Store:
    """``s3://bucket[/prefix]`` -> S3Store; ``file:///abs`` or a plain path -> LocalStore."""
    if isinstance(uri, Path):
        return LocalStore(uri)
    text = str(uri)
    if "://" not in text:
        if not text:
            raise RfauError("empty store location")
        return LocalStore(text)
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        return S3Store(parsed.netloc, parsed.path)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise RfauError(f"{text}: file:// URIs must be local (file:///absolute/path)")
        return LocalStore(unquote(parsed.path))
    raise RfauError(f"unsupported store location {text!r}: give s3://bucket/prefix, file:///path or a path")


class LocalStore(Store):
    """A folder; keys are files below it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                if not exclusive:
                    os.replace(tmp, path)
                    return
                try:
                    os.link(tmp, path)  # atomic, and fails if the name exists
                except FileExistsError:
                    raise AlreadyExists(f"{self.where(key)} already exists") from None
                except OSError:
                    # no hard links on this filesystem: O_EXCL still makes the create exclusive,
                    # but a reader may briefly see a partly written file
                    self._create_excl(path, key, data)
            finally:
                tmp.unlink(missing_ok=True)
        except RfauError:
            raise
        except OSError as e:
            raise RfauError(f"cannot write {self.where(key)}: {e.strerror or e}") from None

    def _create_excl(self, path: Path, key: str, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise AlreadyExists(f"{self.where(key)} already exists") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"{self.where(key)} does not exist") from None
        except OSError as e:
            raise RfauError(f"cannot read {self.where(key)}: {e.strerror or e}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        check_key(prefix, prefix=True)
        # walk only the folder that holds the prefix: "a/b/c" -> a/b, entries starting with "c"
        folder, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [
                d
                for d in dirnames
                if prefix.startswith(f"{rel_dir}{d}/") or f"{rel_dir}{d}/".startswith(prefix)
            ]
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                key = rel_dir + name
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise RfauError(f"cannot delete {self.where(key)}: {e.strerror or e}") from None
        parent = path.parent  # drop folders left empty, up to the root
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


_ACCESS_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
    "Forbidden",
}


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``; one boto3 client per store (thread-safe)."""

    def __init__(self, bucket: str, prefix: str = "", client=None):
        if not bucket:
            raise RfauError("s3:// location without a bucket name (give s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client or _make_client()
        self._bucket_ok = False

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        full = self._full(key)
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        for attempt in range(4):
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
                return
            except Exception as e:
                code = _code(e)
                if exclusive and code in ("PreconditionFailed", "412"):
                    raise AlreadyExists(f"{self.where(key)} already exists") from None
                if exclusive and code == "ConditionalRequestConflict" and attempt < 3:
                    time.sleep(0.2 * (attempt + 1))  # a concurrent conditional write: retry, S3 decides
                    continue
                if exclusive and code in ("NotImplemented", "501"):
                    raise RfauError(
                        f"{self.endpoint} does not support conditional writes (If-None-Match), "
                        f"needed to create {self.where(key)} exclusively"
                    ) from None
                raise self._error(e, "write", key) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()
        except Exception as e:
            raise self._error(e, "read", key) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except Exception as e:
            err = self._error(e, "check", key)
            if isinstance(err, NotFound):
                self._check_bucket()  # HEAD says 404 for a missing bucket too
                return False
            raise err from None

    def list(self, prefix: str = "") -> list[str]:
        check_key(prefix, prefix=True)
        root = f"{self.prefix}/" if self.prefix else ""
        out: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix
            ):
                out.extend(obj["Key"][len(root) :] for obj in page.get("Contents", []))
        except Exception as e:
            raise self._error(e, "list", prefix) from None
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as e:
            err = self._error(e, "delete", key)
            if not isinstance(err, NotFound):
                raise err from None

    def _check_bucket(self) -> None:
        if self._bucket_ok:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            if _code(e) in ("404", "NoSuchBucket", "NotFound"):
                raise RfauError(
                    f"{self.uri}: S3 bucket {self.bucket!r} does not exist (endpoint {self.endpoint})"
                ) from None
            raise self._error(e, "check", "") from None
        self._bucket_ok = True

    def _error(self, e: Exception, op: str, key: str) -> RfauError:
        """Turn a botocore exception into an RfauError with a message a person can act on."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        where = self.where(key) if key else self.uri
        if isinstance(e, RfauError):
            return e
        if isinstance(e, ClientError):
            code = _code(e)
            msg = e.response.get("Error", {}).get("Message", "") or str(e)
            if code == "NoSuchBucket":
                return RfauError(
                    f"{where}: S3 bucket {self.bucket!r} does not exist (endpoint {self.endpoint})"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{where} does not exist")
            if code in _ACCESS_CODES:
                return RfauError(
                    f"cannot {op} {where}: access denied ({code}: {msg}); check the AWS "
                    "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or profile) and "
                    "the bucket policy"
                )
            return RfauError(f"cannot {op} {where}: S3 error {code}: {msg}")
        if isinstance(
            e, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)
        ):
            return RfauError(
                f"cannot {op} {where}: S3 endpoint {self.endpoint} unreachable ({e}); check "
                "AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL and the network"
            )
        if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
            return RfauError(
                f"cannot {op} {where}: no usable AWS credentials ({e}); set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if isinstance(e, BotoCoreError):
            return RfauError(f"cannot {op} {where}: {e}")
        raise e


def _code(e: Exception) -> str:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _make_client():
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    kwargs = {}
    # boto3 itself honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; MLflow's variable is the fallback
    if not (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")):
        mlflow_endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        if mlflow_endpoint:
            kwargs["endpoint_url"] = mlflow_endpoint
    config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})
    try:
        return session.client("s3", region_name=session.region_name or "us-east-1", config=config, **kwargs)
    except Exception as e:
        raise RfauError(f"cannot set up the S3 client: {e}") from None
