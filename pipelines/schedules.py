"""Scheduled deletions on a KFP endpoint: recurring runs of the pipeline, unique by name.

Scheduling again under the same name never adds a second schedule: the same settings keep the
one there (its fingerprint, in its description, says so); new settings replace it, the old one
paused first and deleted only once the new one exists (if creating fails, the old one is resumed).
KFP has no update call for a recurring run, so a replacement gets a new id."""

from __future__ import annotations

from rfau.errors import RfauError, UsageError
from rfau.kfp_client import KfpApi, fingerprint

SCHEDULE_NAME = "rfau-deletion-batch-schedule"  # the pipeline's name + "-schedule"
MARK = "rfau schedule "  # the description's prefix; the fingerprint follows


def _row(run: dict) -> dict:
    trigger = run.get("trigger") or {}
    cron = (trigger.get("cron_schedule") or {}).get("cron")
    every = (trigger.get("periodic_schedule") or {}).get("interval_second")
    return {
        "name": run.get("display_name"),
        "recurring_run_id": run.get("recurring_run_id"),
        "cron": cron or (f"every {every} s" if every else None),
        "enabled": run.get("mode", "ENABLE") == "ENABLE" and run.get("status") != "DISABLED",
        "experiment_id": run.get("experiment_id"),
        "created_at": run.get("created_at"),
        "by_rfau": str(run.get("description") or "").startswith(MARK),
    }


def list_schedules(api: KfpApi) -> list[dict]:
    """Every recurring run, by name then creation time (the API's own order is not stable)."""
    return sorted(
        (_row(r) for r in api.recurring_runs()), key=lambda r: (r["name"] or "", r["created_at"] or "")
    )


def _named(api: KfpApi, name: str) -> list[dict]:
    return [r for r in api.recurring_runs() if r.get("display_name") == name]


def ensure_schedule(
    api: KfpApi,
    name: str,
    cron: str,
    arguments: dict,
    spec: dict,
    experiment: str,
    service_account: str | None,
) -> dict:
    """The recurring run ``name`` as these settings make it: kept when it is already so, else
    created or replaced -> {"action": "kept" | "created" | "replaced", the schedule's row}."""
    mark = MARK + fingerprint(cron, arguments, spec, experiment, service_account)
    same = _named(api, name)
    if len(same) == 1 and same[0].get("description") == mark:
        return {"action": "kept", **_row(same[0])}
    paused = [r["recurring_run_id"] for r in same if _row(r)["enabled"]]
    for rid in paused:  # never two schedules of one name running at once
        api.set_enabled(rid, False)
    try:
        created = api.create_recurring_run(
            {
                "display_name": name,
                "description": mark,
                "experiment_id": api.experiment_id(experiment),
                "mode": "ENABLE",
                "pipeline_spec": spec,
                "runtime_config": {"parameters": arguments},
                "trigger": {"cron_schedule": {"cron": cron}},
                # one batch at a time (two never claim requests at once), no catch-up after a pause
                "max_concurrency": "1",
                "no_catchup": True,
                "service_account": service_account,
            }
        )
    except RfauError as e:
        for rid in paused:  # the old schedule goes on as it was
            api.set_enabled(rid, True)
        raise RfauError(f"{e} (the schedule {name!r} is unchanged)") from None
    for r in same:
        api.delete_recurring_run(r["recurring_run_id"])
    return {"action": "replaced" if same else "created", **_row(created)}


def _one(api: KfpApi, name: str) -> list[dict]:
    found = _named(api, name)
    if not found:
        raise UsageError(
            f"no schedule named {name!r} at {api.endpoint}"
            + (f" in namespace {api.namespace}" if api.namespace else "")
            + " (see `rfau pipeline schedule list`)"
        )
    return found


def set_schedule_enabled(api: KfpApi, name: str, enabled: bool) -> list[dict]:
    """Pause or resume the schedule ``name`` (every recurring run of that name) -> their rows."""
    found = _one(api, name)
    for r in found:
        api.set_enabled(r["recurring_run_id"], enabled)
    return [{**_row(r), "enabled": enabled} for r in found]


def delete_schedule(api: KfpApi, name: str) -> list[dict]:
    found = _one(api, name)
    for r in found:
        api.delete_recurring_run(r["recurring_run_id"])
    return [_row(r) for r in found]
