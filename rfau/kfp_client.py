"""The few calls rfau makes to a KFP API server, over its v2beta1 REST API: the server's version
(healthz), experiments by name, one run, and recurring runs kept unique by name (list, create,
enable, disable, delete).

The version matters: the pipeline's exit handler (components/cleanup.py) takes
``dsl.PipelineTaskFinalStatus``, which KFP's backend runs from release 2.14.0 on
(kubeflow/pipelines#11953); older servers refuse the pipeline when it runs ("task final status not
supported yet"), so rfau refuses them before submitting anything."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from rfau.errors import RfauError, UsageError

MIN_KFP_VERSION = (2, 14, 0)
MIN_KFP = ".".join(map(str, MIN_KFP_VERSION))
API = "/apis/v2beta1"
# where KFP mounts a pod's service-account token for its API (multi-user KFP), as kfp.Client reads it
SA_TOKEN = "/var/run/secrets/kubeflow/pipelines/token"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(tag: str) -> tuple[int, int, int] | None:
    """A KFP release tag ("2.14.3", "v2.5.0", "2.15.0-rc.1") -> (2, 14, 3); None when the server
    does not say ("unknown": a build without TAG_NAME)."""
    m = _VERSION.match(tag.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


class KfpApi:
    """One KFP endpoint, e.g. http://localhost:8080 (a port-forward of ml-pipeline-ui) or a
    Kubeflow gateway's http(s)://host/pipeline; the bearer token: --token, else a pod's KFP token."""

    def __init__(self, endpoint: str, token: str | None = None, namespace: str | None = None):
        import requests

        if not re.match(r"^https?://[^/\s]+", endpoint or ""):
            raise UsageError(f"--endpoint {endpoint!r} is not an http:// or https:// URL of a KFP API")
        self.endpoint = endpoint.rstrip("/")
        self.namespace = namespace
        self.session = requests.Session()
        token = token or _pod_token()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, body: dict | None = None, **params: Any) -> dict:
        import requests

        url = self.endpoint + API + path
        query = {k: v for k, v in params.items() if v not in (None, "")}
        try:
            r = self.session.request(method, url, json=body, params=query, timeout=60)
        except requests.RequestException as e:
            raise RfauError(
                f"the KFP endpoint {self.endpoint} does not answer: {str(e).splitlines()[0][:300]}"
            ) from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("message") or r.json().get("error") or r.text
            except ValueError:
                detail = r.text
            detail = " ".join(str(detail).split())[:300]
            raise RfauError(f"KFP {method} {API}{path} at {self.endpoint}: HTTP {r.status_code}: {detail}")
        try:
            return r.json() if r.content.strip() else {}
        except ValueError:
            raise RfauError(
                f"the KFP endpoint {self.endpoint} answered {API}{path} with no JSON: is it a KFP API?"
            ) from None

    # --- the server ----------------------------------------------------------------------------

    def server_version(self) -> str:
        """The server's release tag, checked against MIN_KFP: an older server is refused (exit 2:
        point rfau at a newer KFP); a server that does not say ("unknown") is let through."""
        try:
            health = self._call("GET", "/healthz")
        except RfauError as e:
            if "HTTP 404" in str(e):  # KFP 1.x serves no v2beta1 API
                raise UsageError(
                    f"the KFP endpoint {self.endpoint} serves no v2beta1 API (KFP 1.x?); "
                    f"rfau's pipeline needs KFP {MIN_KFP} or later"
                ) from None
            raise
        tag = str(health.get("tag_name") or "unknown")
        version = parse_version(tag)
        if version is not None and version < MIN_KFP_VERSION:
            raise UsageError(
                f"the KFP endpoint {self.endpoint} runs KFP {tag}; rfau's pipeline needs KFP {MIN_KFP} or "
                "later (its exit handler takes PipelineTaskFinalStatus, which older backends refuse)"
            )
        return tag

    # --- experiments and runs ------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """The experiment called ``name`` in this namespace, created when missing."""
        flt = json.dumps(
            {"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]}
        )
        found = self._call("GET", "/experiments", filter=flt, namespace=self.namespace).get("experiments")
        if found:
            return found[0]["experiment_id"]
        body = {"display_name": name, "namespace": self.namespace}
        return self._call("POST", "/experiments", {k: v for k, v in body.items() if v})["experiment_id"]

    def create_run(self, name: str, experiment_id: str, spec: dict, arguments: dict, sa: str | None) -> str:
        body = {
            "display_name": name,
            "experiment_id": experiment_id,
            "pipeline_spec": spec,
            "runtime_config": {"parameters": arguments},
            "service_account": sa,
        }
        return self._call("POST", "/runs", _drop_none(body))["run_id"]

    # --- recurring runs ------------------------------------------------------------------------

    def recurring_runs(self) -> list[dict]:
        """Every recurring run of this namespace (all pages)."""
        runs: list[dict] = []
        token = ""
        while True:
            page = self._call(
                "GET", "/recurringruns", page_size=100, page_token=token, namespace=self.namespace
            )
            # KFP's gateway names the list recurringRuns (kfp_server_api reads that key)
            runs += page.get("recurringRuns") or page.get("recurring_runs") or []
            token = page.get("next_page_token") or ""
            if not token:
                return runs

    def create_recurring_run(self, body: dict) -> dict:
        return self._call("POST", "/recurringruns", _drop_none(body))

    def set_enabled(self, recurring_run_id: str, enabled: bool) -> None:
        self._call("POST", f"/recurringruns/{recurring_run_id}:{'enable' if enabled else 'disable'}")

    def delete_recurring_run(self, recurring_run_id: str) -> None:
        self._call("DELETE", f"/recurringruns/{recurring_run_id}")


def _pod_token() -> str | None:
    path = Path(os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", SA_TOKEN))
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def pipeline_spec(package: str | Path) -> dict:
    """A compiled pipeline YAML as KFP's API takes it inline (as kfp.Client sends it): the pipeline
    spec, with the platform spec (Kubernetes settings: GPU node selector, secrets) beside it when
    there is one; both parsed strictly first, so a foreign YAML fails here with its problem."""
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        docs = [d for d in yaml.safe_load_all(Path(package).read_text()) if d]
        spec = json_format.MessageToDict(json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec()))
        platform: dict = {}
        for d in docs[1:]:
            platform.update(d)
        platform = json_format.MessageToDict(
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
        )
    except (OSError, IndexError, yaml.YAMLError, json_format.ParseError) as e:
        raise UsageError(f"--package {str(package)!r} is not a compiled KFP pipeline: {e}") from None
    return {"pipeline_spec": spec, "platform_spec": platform} if platform else spec


def fingerprint(*parts: Any) -> str:
    """A short hash of what a schedule runs (cron, arguments, pipeline, account): the same settings
    give the same fingerprint, so scheduling twice keeps the schedule instead of replacing it."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
