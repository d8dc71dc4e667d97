"""The MLflow client of one tracking store (``Registry``): runs (one parent run per pipeline run
with a nested run per stage), versions, their tags and the aliases, and each version's deletion
frontier. Registering a version is ``rfau.tracking.versions``; moving the champion by hand and
listing versions, ``rfau.tracking.aliases``.

Aliases: ``champion`` (served), ``previous`` (the champion before it; ``rfau rollback`` restores
it), ``candidate`` (the newest version that failed a gate).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from rfau.errors import RfauError, UsageError
from rfau.io import atomic_dir
from rfau.models.card import CARD, WEIGHTS, verify_weights
from rfau.records import VersionRef
from rfau.tracking.settings import TrackingSettings
from rfau.tracking.tags import PREFIX, VersionTags, tag_key

CHAMPION, PREVIOUS, CANDIDATE = "champion", "previous", "candidate"


def _tag_request_ids(value: str | None) -> set[str]:
    return {r for r in (value or "").split(",") if r}


def frontier_of(tags: dict[int, dict], version: int) -> set[str]:
    """The requests whose data ``version`` no longer holds: its ``rfau.frontier`` tag, or for a
    version registered before the tag existed, derived from its lineage (its own requests when it
    passed its gates, plus its parent's frontier; the bootstrap original holds everything)."""
    out: set[str] = set()
    seen: set[int] = set()
    by_weights = {t.get(VersionTags.WEIGHTS): v for v, t in tags.items()}
    v: int | None = version
    while v is not None and v not in seen and v in tags:
        seen.add(v)
        t = tags[v]
        if VersionTags.FRONTIER in t:
            try:
                return out | set(json.loads(t[VersionTags.FRONTIER]))
            except (ValueError, TypeError):
                raise RfauError(f"version {v}'s {VersionTags.FRONTIER} tag is not a JSON list") from None
        if t.get(VersionTags.REGIME) == "none":
            return out
        if t.get(VersionTags.GATES_PASSED) == "true":
            out |= _tag_request_ids(t.get(VersionTags.REQUEST_IDS))
        base = t.get(VersionTags.BASE_VERSION)
        v = int(base) if base and base.isdigit() else by_weights.get(t.get(VersionTags.PARENT) or None)
    return out


def frontier_value(ids) -> str:
    value = json.dumps(sorted(set(ids)), separators=(",", ":"))
    if len(value) > VersionTags.MAX_VALUE:
        raise RfauError(
            f"the deletion frontier ({len(set(ids))} requests) no longer fits one version tag "
            f"({VersionTags.MAX_VALUE} characters)"
        )
    return value


def mlflow_module():
    """mlflow, imported where first used (it takes seconds)."""
    import mlflow

    return mlflow


def service_errors() -> tuple[type[BaseException], ...]:
    """What a failing tracking store raises: MLflow's own errors and the HTTP client's."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException)


def _is_missing(e: BaseException) -> bool:
    """An MLflow answer that means "no such model / version / alias" (not a broken store)."""
    from mlflow.exceptions import MlflowException

    codes = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # a missing alias is the latter
    return isinstance(e, MlflowException) and e.error_code in codes


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__


class Registry:
    """One MLflow client for one tracking store, model name and experiment.

    Creating it connects once (health check, experiment lookup); a caller keeps it for all its
    registry work (a batch, an audit) instead of reconnecting per call.
    """

    def __init__(self, settings: TrackingSettings):
        self.settings = settings
        self.name = settings.model_name
        self.client, self.experiment_id = _connect(settings)

    def failure(self, what: str, e: BaseException) -> RfauError:
        return RfauError(f"{what} at {self.settings.redacted_uri()}: {_first_line(e)}")

    # --- runs ------------------------------------------------------------------------------------
    @contextmanager
    def run(self, name: str, tags: dict | None = None, nested: bool | None = None):
        """A run in this store's experiment; nested under the active run when there is one."""
        mlflow = mlflow_module()
        if nested is None:
            nested = mlflow.active_run() is not None
        tags = {tag_key(k): str(v) for k, v in (tags or {}).items()}
        r = mlflow.start_run(run_name=name, nested=nested, experiment_id=self.experiment_id, tags=tags)
        try:
            yield r
        except BaseException:
            # the caller must see what failed; a server that is down cannot close the run either
            # (mlflow pops the run before it calls the server, so this process is left clean)
            with suppress(*service_errors()):
                mlflow.end_run("FAILED")
            raise
        try:
            mlflow.end_run()
        except service_errors() as e:
            raise self.failure(f"cannot close the MLflow run {name!r}", e) from None

    def log_stage(
        self,
        name: str,
        params: dict | None = None,
        metrics: dict | None = None,
        artifacts: list[Path] | None = None,
        tags: dict | None = None,
        history: list[dict] | None = None,
    ) -> str:
        """A nested run for one finished stage (inside ``run``); ``history`` rows (with an ``epoch``
        key) become per-epoch metric steps. The one place stage runs are written."""
        mlflow = mlflow_module()
        with self.run(name, nested=True) as run:
            for row in history or []:
                mlflow.log_metrics(
                    {PREFIX + k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
                )
            if params:
                mlflow.log_params({PREFIX + k: _short(v) for k, v in params.items()})
            if metrics:
                mlflow.log_metrics(prefixed_numbers(metrics))
            if tags:
                mlflow.set_tags({tag_key(k): _short(v) for k, v in tags.items()})
            for a in artifacts or []:
                if a.is_dir():
                    mlflow.log_artifacts(str(a), artifact_path=a.name)
                elif a.exists():
                    mlflow.log_artifact(str(a))
            return run.info.run_id

    @staticmethod
    def active_run_id() -> str | None:
        run = mlflow_module().active_run()
        return run.info.run_id if run else None

    def log_files(self, run_name: str, tags: dict, dicts: dict[str, object], files: dict[str, Path]) -> None:
        """A run holding JSON documents (``artifact path -> value``) and files (``folder -> file``)."""
        mlflow = mlflow_module()
        with self.run(run_name, tags=tags):
            for where, value in dicts.items():
                mlflow.log_dict(value, where)
            for folder, f in files.items():
                mlflow.log_artifact(str(f), artifact_path=folder)

    # --- versions and aliases --------------------------------------------------------------------
    def find_version(self, key: str):
        """The version registered for a batch key, or None."""
        try:
            found = self.client.search_model_versions(f"name='{self.name}' and tags.`rfau.batch_key`='{key}'")
        except service_errors() as e:
            if _is_missing(e):
                return None  # no such registered model yet
            raise self.failure("cannot search model versions", e) from None
        return found[0] if found else None

    def alias_version(self, alias: str):
        """The version an alias points at, or None when the alias (or the model) does not exist."""
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except service_errors() as e:
            if _is_missing(e):
                return None
            raise self.failure(f"cannot read alias {alias!r}", e) from None

    def version(self, version: int | str):
        try:
            return self.client.get_model_version(self.name, str(version))
        except service_errors() as e:
            if _is_missing(e):
                raise UsageError(f"model {self.name!r} has no version {version}") from None
            raise self.failure(f"cannot read version {version}", e) from None

    def versions(self) -> list:
        """Every version of the model ([] when it is not registered yet)."""
        try:
            return list(self.client.search_model_versions(f"name='{self.name}'"))
        except service_errors() as e:
            if _is_missing(e):
                return []
            raise self.failure("cannot list model versions", e) from None

    def aliases(self) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(self.name).aliases)
        except service_errors() as e:
            if _is_missing(e):
                return {}
            raise self.failure("cannot read the model's aliases", e) from None

    def move_champion(self, version) -> None:
        current = self.alias_version(CHAMPION)
        if current is not None and str(current.version) != str(version):
            self.client.set_registered_model_alias(self.name, PREVIOUS, current.version)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)

    def champion(self) -> VersionRef | None:
        """The served version, or None when there is none."""
        mv = self.alias_version(CHAMPION)
        if mv is None:
            return None
        return VersionRef(version=int(mv.version), weights_sha256=mv.tags.get(VersionTags.WEIGHTS, ""))

    def fetch_version(self, version: int, out_dir: str | Path) -> Path:
        """Download a version's weights and card into ``out_dir`` (atomically); check their hash."""
        name = self.name
        mv = self.version(version)
        failing: tuple[type[BaseException], ...] = (*service_errors(), OSError)
        with tempfile.TemporaryDirectory() as dl, atomic_dir(out_dir, "registry download") as tmp:
            try:
                local = mlflow_module().artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}",
                    dst_path=dl,
                    tracking_uri=self.settings.uri(),
                    registry_uri=self.settings.uri(),
                )
            except failing as e:
                raise RfauError(f"cannot download {name} version {version}: {_first_line(e)}") from None
            found = sorted(Path(local).rglob(WEIGHTS))
            if not found:
                raise RfauError(f"{name} version {version} has no {WEIGHTS} artifact")
            for f in (WEIGHTS, CARD):
                (tmp / f).write_bytes((found[0].parent / f).read_bytes())
            digest = verify_weights(tmp)
            tagged = mv.tags.get(VersionTags.WEIGHTS)
            if tagged and tagged != digest:
                raise RfauError(
                    f"{name} version {version}: weights hash {digest[:12]} differs from its tag {tagged[:12]}"
                )
        return Path(out_dir)

    def version_tags(self) -> dict[int, dict]:
        """Every version's tags, by version number."""
        return {int(v.version): dict(v.tags) for v in self.versions()}

    def set_version_tags(self, version: int, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, str(version), tag_key(k), tag_value(tag_key(k), v))

    def frontier(self, version: int) -> set[str]:
        """The requests whose data ``version`` no longer holds (see ``frontier_of``)."""
        return frontier_of(self.version_tags(), version)


def prefixed_numbers(metrics: dict) -> dict[str, float]:
    """The finite-or-not numeric entries (NaN left out), with the ``rfau.`` prefix."""
    return {PREFIX + k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v}


def _connect(settings: TrackingSettings):
    """Check that the store answers and has the experiment -> (client, experiment id)."""
    # MLflow's client retries a failing request for minutes by default; a deletion run should
    # fail in seconds with the reason (a user's own setting wins)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow = mlflow_module()
    from mlflow.tracking import MlflowClient

    uri = settings.uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri, settings.redacted_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    try:
        exp = client.get_experiment_by_name(settings.experiment)
        if exp is None:
            exp_id = client.create_experiment(
                settings.experiment, artifact_location=settings.artifact_location()
            )
        elif exp.lifecycle_stage == "deleted":  # no run can start in it: fail before any work
            raise RfauError(
                f"the MLflow experiment {settings.experiment!r} (id {exp.experiment_id}) at "
                f"{settings.redacted_uri()} is deleted; restore it (`mlflow experiments restore "
                f"--experiment-id {exp.experiment_id}`) or delete it for good"
            )
        else:
            exp_id = exp.experiment_id
    except service_errors() as e:
        raise RfauError(
            f"cannot use the MLflow tracking store at {settings.redacted_uri()}: {_first_line(e)}"
        ) from None
    return client, exp_id


def connect(settings: TrackingSettings):
    """Connect and check the store -> its MLflow client (prefer holding a ``Registry``)."""
    return Registry(settings).client


def _check_server(uri: str, shown: str) -> None:
    """Fail fast (MLflow's client would retry for minutes) when the server does not answer."""
    import requests

    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=5)
    except requests.RequestException as e:
        raise RfauError(f"MLflow tracking server {shown} is unreachable: {type(e).__name__}") from None
    if r.status_code != 200:
        raise RfauError(f"MLflow tracking server {shown} answered {r.status_code} on /health")


@contextmanager
def pipeline_run(settings: TrackingSettings, name: str, tags: dict | None = None):
    """The parent run of one pipeline run -> its Registry; stages log into nested runs under it."""
    reg = Registry(settings)
    with reg.run(name, tags=tags, nested=False):
        yield reg


def tag_value(key: str, v) -> str:
    return v if key == VersionTags.FRONTIER else _short(v)


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 500 else s[:497] + "..."
