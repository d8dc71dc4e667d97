"""MLflow tracking and the model registry: one parent run per pipeline run with a nested run per
stage, versions with lineage tags, and the ``champion`` alias moved only when every gate passes.

Aliases: ``champion`` (served), ``previous`` (the champion before it; ``rfau rollback`` restores
it), ``candidate`` (the newest version that failed a gate). A batch is identified by the new
weights' sha256 and the forget set's hash: registering it again returns the same version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from rfau.errors import RfauError, UsageError
from rfau.gates import Gates, check_gates, regime_of
from rfau.models.checkpoint import CARD, WEIGHTS, read_card
from rfau.records import (
    ChampionMove,
    Evaluation,
    Registration,
    UnlearnInfo,
    VersionRef,
    VersionRow,
)
from rfau.tracking.served_model import log_served_model
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


def _mlflow():
    import mlflow

    return mlflow


def _service_errors() -> tuple[type[BaseException], ...]:
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

    def _fail(self, what: str, e: BaseException) -> RfauError:
        return RfauError(f"{what} at {self.settings.redacted_uri()}: {_first_line(e)}")

    # --- runs ------------------------------------------------------------------------------------
    @contextmanager
    def run(self, name: str, tags: dict | None = None, nested: bool | None = None):
        """A run in this store's experiment; nested under the active run when there is one."""
        mlflow = _mlflow()
        if nested is None:
            nested = mlflow.active_run() is not None
        tags = {tag_key(k): str(v) for k, v in (tags or {}).items()}
        r = mlflow.start_run(run_name=name, nested=nested, experiment_id=self.experiment_id, tags=tags)
        try:
            yield r
        except BaseException:
            # the caller must see what failed; a server that is down cannot close the run either
            # (mlflow pops the run before it calls the server, so this process is left clean)
            with suppress(*_service_errors()):
                mlflow.end_run("FAILED")
            raise
        try:
            mlflow.end_run()
        except _service_errors() as e:
            raise self._fail(f"cannot close the MLflow run {name!r}", e) from None

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
        mlflow = _mlflow()
        with self.run(name, nested=True) as run:
            for row in history or []:
                mlflow.log_metrics(
                    {PREFIX + k: float(v) for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
                )
            if params:
                mlflow.log_params({PREFIX + k: _short(v) for k, v in params.items()})
            if metrics:
                mlflow.log_metrics(_numbers(metrics))
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
        run = _mlflow().active_run()
        return run.info.run_id if run else None

    def log_files(self, run_name: str, tags: dict, dicts: dict[str, object], files: dict[str, Path]) -> None:
        """A run holding JSON documents (``artifact path -> value``) and files (``folder -> file``)."""
        mlflow = _mlflow()
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
        except _service_errors() as e:
            if _is_missing(e):
                return None  # no such registered model yet
            raise self._fail("cannot search model versions", e) from None
        return found[0] if found else None

    def alias_version(self, alias: str):
        """The version an alias points at, or None when the alias (or the model) does not exist."""
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except _service_errors() as e:
            if _is_missing(e):
                return None
            raise self._fail(f"cannot read alias {alias!r}", e) from None

    def version(self, version: int | str):
        try:
            return self.client.get_model_version(self.name, str(version))
        except _service_errors() as e:
            if _is_missing(e):
                raise UsageError(f"model {self.name!r} has no version {version}") from None
            raise self._fail(f"cannot read version {version}", e) from None

    def versions(self) -> list:
        """Every version of the model ([] when it is not registered yet)."""
        try:
            return list(self.client.search_model_versions(f"name='{self.name}'"))
        except _service_errors() as e:
            if _is_missing(e):
                return []
            raise self._fail("cannot list model versions", e) from None

    def aliases(self) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(self.name).aliases)
        except _service_errors() as e:
            if _is_missing(e):
                return {}
            raise self._fail("cannot read the model's aliases", e) from None

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
        from rfau.io import atomic_dir
        from rfau.models.checkpoint import verify_weights

        name = self.name
        mv = self.version(version)
        with tempfile.TemporaryDirectory() as dl, atomic_dir(out_dir, "registry download") as tmp:
            try:
                local = _mlflow().artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}",
                    dst_path=dl,
                    tracking_uri=self.settings.uri(),
                    registry_uri=self.settings.uri(),
                )
            except (*_service_errors(), OSError) as e:
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
            self.client.set_model_version_tag(self.name, str(version), tag_key(k), _tag_value(tag_key(k), v))

    def frontier(self, version: int) -> set[str]:
        """The requests whose data ``version`` no longer holds (see ``frontier_of``)."""
        return frontier_of(self.version_tags(), version)


def _numbers(metrics: dict) -> dict[str, float]:
    """The finite-or-not numeric entries (NaN left out), with the ``rfau.`` prefix."""
    return {PREFIX + k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v}


def _connect(settings: TrackingSettings):
    """Check that the store answers and has the experiment -> (client, experiment id)."""
    # MLflow's client retries a failing request for minutes by default; a deletion run should
    # fail in seconds with the reason (a user's own setting wins)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow = _mlflow()
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
    except _service_errors() as e:
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


def batch_key(model_dir: Path) -> str:
    card = read_card(model_dir)
    forget = card.lineage.get("forget_sha256", "")
    return hashlib.sha256(f"{card.weights_sha256}:{forget}".encode()).hexdigest()[:32]


@contextmanager
def pipeline_run(settings: TrackingSettings, name: str, tags: dict | None = None):
    """The parent run of one pipeline run -> its Registry; stages log into nested runs under it."""
    reg = Registry(settings)
    with reg.run(name, tags=tags, nested=False):
        yield reg


def _tag_value(key: str, v) -> str:
    return v if key == VersionTags.FRONTIER else _short(v)


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 500 else s[:497] + "..."


def register(
    model_dir: str | Path,
    metrics_path: str | Path,
    settings: TrackingSettings,
    gates: Gates | None = None,
    baseline_metrics_path: str | Path | None = None,
    bootstrap: bool = False,
    promote: bool = True,
    batch_tags: dict[str, str] | None = None,
) -> Registration:
    """Register an unlearned model as a new version; promote it to champion when the gates pass.
    ``bootstrap``: the original model (nothing forgotten, no gates); it becomes champion only
    where the registry has none. ``promote=False``: leave the champion alias alone (a deletion
    batch moves it only after its ledger record exists, see ``rfau.batch.register``).
    ``batch_tags``: the batch that registers it (``rfau.``-prefixed version tags, set at creation).

    The verdict is always computed from the metrics, never read back from a tag, and the
    version is created with its tags in one call; registering the same model again completes
    the tags of a version whose tagging was interrupted and returns it.

    Everything is validated before the registry changes; a failure after the version is created
    deletes it again, so no half-registered version remains."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)  # validates the folder
    for f in (model_dir / WEIGHTS, Path(metrics_path)):
        if not f.is_file():
            raise RfauError(f"cannot register: {f} is missing")
    metrics = Evaluation.read(metrics_path)
    if metrics.model_weights_sha256 and metrics.model_weights_sha256 != card.weights_sha256:
        raise RfauError(f"{metrics_path} evaluates other weights than {model_dir}")
    baseline = Evaluation.read(baseline_metrics_path) if baseline_metrics_path else None
    info = UnlearnInfo.read(model_dir / "unlearn.json") if (model_dir / "unlearn.json").exists() else None
    regime = "none" if bootstrap else regime_of(metrics.model_dump())  # from the split, every method
    gates = gates or Gates()
    champ_metrics = baseline.model_dump() if baseline else None
    results = [] if bootstrap else check_gates(metrics.model_dump(), champ_metrics, regime, gates)
    passed = all(r.passed for r in results)

    reg = Registry(settings)
    client, name = reg.client, reg.name
    key = batch_key(model_dir)
    tags = {
        VersionTags.BATCH_KEY: key,
        VersionTags.WEIGHTS: card.weights_sha256,
        VersionTags.FORGET: card.lineage.get("forget_sha256", ""),
        VersionTags.PARENT: card.lineage.get("parent_weights_sha256", ""),
        VersionTags.REQUEST_IDS: ",".join(card.lineage.get("request_ids", [])),
        VersionTags.METHOD: card.lineage.get("method", card.lineage.get("kind", "")),
        VersionTags.REGIME: regime,
        **{tag_key(k): v for k, v in (batch_tags or {}).items()},  # on the version from its creation
        VersionTags.GATES_PASSED: str(passed).lower(),
        VersionTags.GATE_FAILURES: "; ".join(
            f"{r.name}={r.value} > {r.bound} ({r.detail})" for r in results if not r.passed
        )
        or "none",
    }
    if not bootstrap and VersionTags.FRONTIER not in tags:
        tags[VersionTags.FRONTIER] = _frontier_for(reg, card, tags, passed)
    elif bootstrap:
        tags.setdefault(VersionTags.FRONTIER, "[]")
    existing = reg.find_version(key)
    if existing is not None:
        if VersionTags.FRONTIER in existing.tags:  # requests added to it since are kept
            had = frontier_of({int(existing.version): dict(existing.tags)}, int(existing.version))
            tags[VersionTags.FRONTIER] = frontier_value(had | set(json.loads(tags[VersionTags.FRONTIER])))
        for k, v in tags.items():  # a registration interrupted while tagging is completed here
            if existing.tags.get(k) != _tag_value(k, v):
                client.set_model_version_tag(name, existing.version, k, _tag_value(k, v))
        if VersionTags.ABANDONED in existing.tags:  # the same weights, registered again by a live batch
            client.delete_model_version_tag(name, existing.version, VersionTags.ABANDONED)
        champ = reg.alias_version(CHAMPION)
        return Registration(
            model=name,
            version=int(existing.version),
            new=False,
            champion=int(champ.version) if champ else None,
            gates_passed=passed,
            gates=results,
        )

    mlflow = _mlflow()
    version = None
    try:
        with reg.run("register") as run:
            mlflow.log_params(
                {
                    VersionTags.METHOD: info.method if info else card.lineage.get("kind", ""),
                    VersionTags.REGIME: regime,
                    **{f"rfau.gate.{k}": v for k, v in gates.model_dump().items()},
                }
            )
            mlflow.log_metrics(_numbers(metrics.model_dump()))
            mlflow.log_dict(metrics.model_dump(), "evaluation.json")
            mlflow.log_dict([r.model_dump() for r in results], "gates.json")
            if (model_dir / "adapter").is_dir():
                mlflow.log_artifacts(str(model_dir / "adapter"), artifact_path="adapter")
            logged = log_served_model(model_dir)
            tags[VersionTags.RUN_ID] = run.info.run_id
            # created with its tags in one call: a server that dies here leaves no untagged version
            mv = mlflow.register_model(
                logged.model_uri,
                name,
                await_registration_for=60,
                tags={k: _tag_value(k, v) for k, v in tags.items()},
            )
            version = mv.version
        if bootstrap:
            if reg.alias_version(CHAMPION) is None:
                client.set_registered_model_alias(name, CHAMPION, version)
        elif not passed:
            client.set_registered_model_alias(name, CANDIDATE, version)
        elif promote:
            reg.move_champion(version)
    except BaseException as e:
        if version is not None:  # no half-registered version, whatever stopped us
            try:
                client.delete_model_version(name, version)
            except _service_errors():
                pass  # the store is what failed; the version's tags say it never passed
        if isinstance(e, (*_service_errors(), OSError)):
            raise reg._fail("registration failed", e) from None
        raise
    champ = reg.alias_version(CHAMPION)
    return Registration(
        model=name,
        version=int(version),
        new=True,
        gates_passed=passed,
        gates=results,
        champion=int(champ.version) if champ else None,
    )


def _frontier_for(reg: Registry, card, tags: dict, passed: bool) -> str:
    """A new version's frontier: its base's (the ``rfau.base_version`` a batch names, else the
    version with its parent's weights) plus its own requests when it passed its gates."""
    all_tags = reg.version_tags()
    base = tags.get(VersionTags.BASE_VERSION)
    if base is None:
        parent = card.lineage.get("parent_weights_sha256")
        base = next((v for v, t in all_tags.items() if parent and t.get(VersionTags.WEIGHTS) == parent), None)
    ids = frontier_of(all_tags, int(base)) if base is not None else set()
    if passed:
        ids |= set(card.lineage.get("request_ids", []))
    return frontier_value(ids)


def promote(settings: TrackingSettings, version: int) -> ChampionMove:
    """Make a version champion by hand (the old champion becomes ``previous``)."""
    reg = Registry(settings)
    reg.version(version)  # exists?
    reg.move_champion(str(version))
    return ChampionMove(model=reg.name, champion=int(version))


def rollback(settings: TrackingSettings) -> ChampionMove:
    """Give ``champion`` back to the ``previous`` version."""
    reg = Registry(settings)
    name = reg.name
    prev = reg.alias_version(PREVIOUS)
    if prev is None:
        raise RfauError(f"model {name!r} has no 'previous' version to roll back to")
    cur = reg.alias_version(CHAMPION)
    reg.client.set_registered_model_alias(name, CHAMPION, prev.version)
    reg.client.delete_registered_model_alias(name, PREVIOUS)
    if cur is not None:
        reg.client.set_model_version_tag(name, cur.version, VersionTags.ROLLED_BACK, "true")
    return ChampionMove(model=name, champion=int(prev.version), rolled_back=int(cur.version) if cur else None)


def list_versions(settings: TrackingSettings) -> list[VersionRow]:
    reg = Registry(settings)
    versions = reg.versions()
    by_version: dict[str, list[str]] = {}
    for alias, v in (reg.aliases() if versions else {}).items():
        by_version.setdefault(str(v), []).append(alias)
    return sorted(
        (
            VersionRow(
                version=int(v.version),
                aliases=sorted(by_version.get(str(v.version), [])),
                gates_passed=v.tags.get(VersionTags.GATES_PASSED),
                gate_failures=v.tags.get(VersionTags.GATE_FAILURES),
                method=v.tags.get(VersionTags.METHOD),
                requests=v.tags.get(VersionTags.REQUEST_IDS),
                created=v.creation_timestamp,
            )
            for v in versions
        ),
        key=lambda row: row.version,
    )
