"""The model a batch starts from: the registry's champion, its lineage, the bootstrap."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from rfau.batch.context import BatchContext
from rfau.config import TrainConfig
from rfau.data.base import Dataset
from rfau.data.split import HOLDOUT_FRACTION, make_split, write_split
from rfau.errors import RfauError
from rfau.models.card import read_card
from rfau.models.importer import fetch_model_folder, import_model_folder, model_identities, weights_identity
from rfau.records import BaseVersion, GateReport, Registration, VersionRef
from rfau.stages import evaluate_stage, train_stage
from rfau.tracking import registry
from rfau.tracking.settings import TrackingSettings
from rfau.tracking.tags import VersionTags
from rfau.tracking.versions import register


def bootstrap(
    ds: Dataset,
    work_dir: Path,
    settings: TrackingSettings,
    train: dict | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    original: Path | None = None,
) -> Registration:
    """Register the original model as the bootstrap champion of a registry that has none:
    ``original`` when given, else one trained in ``work_dir`` (the dataset's preset recipe with
    ``train`` on top); its metrics on the empty split are its baseline. ``work_dir`` is removed."""

    model = original or work_dir / "model"
    if original is None:
        train_stage(
            ds, model, TrainConfig.preset(ds.kind, **(train or {})), holdout_fraction=holdout_fraction
        )
    write_split(make_split(ds, [], holdout_fraction), work_dir / "split")
    evaluation = evaluate_stage(model, ds, work_dir / "split", work_dir / "metrics.json")
    # an imported model's version names what it was imported from: a later base_model_uri is
    # checked against it (see champion_lineage)
    source = read_card(model).lineage.get("source_sha256")
    tags = {VersionTags.SOURCE: weights_identity(source)} if source else None
    reg = register(registry.Registry(settings), model, evaluation, GateReport.original(), tags)
    shutil.rmtree(work_dir)
    return reg


def champion_lineage(ctx: BatchContext) -> tuple[VersionRef, list[str]] | None:
    """The champion and the sha256 of its lineage: its weights, each ancestor's back to the
    bootstrap version, and what that version was imported from. None: no champion."""
    if not ctx.has_registry():
        return None
    reg = ctx.registry
    champ = reg.champion()
    if champ is None:
        return None
    tags = reg.version_tags()
    by_weights = {t.get(VersionTags.WEIGHTS): v for v, t in tags.items()}
    chain: list[int] = []
    version: int | None = champ.version
    while version is not None and version not in chain:
        chain.append(version)
        parent = tags[version].get(VersionTags.PARENT)
        version = by_weights.get(parent) if parent else None
    hashes = [tags[v].get(VersionTags.WEIGHTS, "") for v in chain]
    source = _imported_from(ctx, chain[-1], tags[chain[-1]])
    return champ, [h for h in (*hashes, source) if h]


def _imported_from(ctx: BatchContext, version: int, tags: dict) -> str:
    """What a bootstrap version was imported from: its tag, or for a version registered before
    the tag existed, its model card's lineage."""
    import tempfile

    if tags.get(VersionTags.SOURCE):
        return tags[VersionTags.SOURCE]
    if tags.get(VersionTags.METHOD) != "imported":
        return ""
    with tempfile.TemporaryDirectory(prefix="rfau-lineage-") as tmp:
        card = read_card(ctx.registry.fetch_version(version, Path(tmp) / "model"))
    source = card.lineage.get("source_sha256")
    return weights_identity(source) if source else ""


@contextlib.contextmanager
def staged_base_model(
    uri: str, ds: Dataset, ctx: BatchContext, holdout_fraction: float = HOLDOUT_FRACTION
) -> Iterator[Path | None]:
    """The model a base_model_uri names, checked before a batch claims anything: where the
    registry has no champion, imported (labels vs classes, safetensors only, a card with its
    sha256) into a temporary folder that the bootstrap registers; where it has one, the URI's
    weights must be in the champion's lineage (a champion is never replaced silently), and
    nothing is imported. Yields the imported folder, or None."""
    import tempfile

    if not uri:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="rfau-base-model-") as tmp:
        folder = fetch_model_folder(uri, Path(tmp) / "source")
        lineage = champion_lineage(ctx)
        if lineage is not None:
            _check_in_lineage(uri, model_identities(folder), *lineage, ctx.settings)
            yield None
            return
        import_model_folder(folder, ds, Path(tmp) / "model", holdout_fraction, uri)
        yield Path(tmp) / "model"


def _check_in_lineage(
    uri: str, identities: set[str], champ: VersionRef, lineage: list[str], settings: TrackingSettings
) -> None:
    if identities & set(lineage):
        return
    given = ", ".join(sorted(identities)) or "no .safetensors weights"
    raise RfauError(
        f"base_model_uri {uri!r} (weights sha256 {given}) is not the model the registry's champion "
        f"comes from ({settings.model_name} version {champ.version}, weights sha256 "
        f"{champ.weights_sha256}, lineage back to sha256 {lineage[-1]}); a registry that has a "
        "champion never takes another base model: unset base_model_uri, or register your model "
        "under another RFAU_MODEL_NAME"
    )


def base_frontier(ctx: BatchContext) -> tuple[VersionRef | None, set[str]]:
    """The champion a batch starts from and its deletion frontier (the requests whose data it no
    longer holds). (None, {}) where the registry has no version yet (the bootstrap comes); a
    registry with versions but no champion (its version deleted) is an error naming the way out."""
    if not ctx.has_registry():
        return None, set()
    reg = ctx.registry
    champ = reg.champion()
    if champ is None:
        versions = sorted(reg.version_tags())
        if versions:
            raise RfauError(
                f"model {ctx.settings.model_name!r} has versions {versions} but no champion (was its "
                "version deleted?): choose one with `rfau promote VERSION` (the ledger records it)"
            )
        return None, set()
    return champ, reg.frontier(champ.version)


def ensure_base(
    ds: Dataset,
    out_dir: Path,
    ctx: BatchContext,
    train: dict | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    original: Path | None = None,
    version: int | None = None,
) -> BaseVersion:
    """The model this batch starts from: the registry's champion, downloaded into ``out_dir``.
    Where the registry has none (the first batch), ``original`` (an imported model), else one
    trained here, is registered as the bootstrap champion. ``version``: the champion the batch's
    split was made for (its frontier), fetched even if the alias moved meanwhile."""
    reg, settings = ctx.registry, ctx.settings
    champ = reg.champion()
    if version is not None:
        champ = VersionRef(
            version=version, weights_sha256=reg.version(version).tags.get(VersionTags.WEIGHTS, "")
        )
    if champ is None:
        work = out_dir.with_name(out_dir.name + ".bootstrap")
        bootstrap(ds, work, settings, train, holdout_fraction, original)
        champ = reg.champion()
    if champ is None:
        raise RfauError(f"the registry at {settings.redacted_uri()} has no champion after the bootstrap")
    reg.fetch_version(champ.version, out_dir)
    return BaseVersion(
        model=settings.model_name, version=champ.version, weights_sha256=read_card(out_dir).weights_sha256
    )
