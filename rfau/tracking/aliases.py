"""The champion alias moved by hand (``promote``, ``rollback``) and the versions as ``rfau models``
lists them."""

from __future__ import annotations

from rfau.errors import RfauError
from rfau.records import ChampionMove, VersionRow
from rfau.tracking.registry import CHAMPION, PREVIOUS, Registry
from rfau.tracking.settings import TrackingSettings
from rfau.tracking.tags import VersionTags


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
