"""A registered model's files on this machine, fetched from its MLflow server once.

MLflow hands a local store's artifacts back in place, but from a tracking server it downloads
them into a new temporary directory at every call, which nothing removes: `tokenmdp serve`
fetched a `models:/` policy twice (the driver's check, then the replica), and every `evaluate`,
`compare` or `exam` of one left another copy in /tmp. A copy fetched from a server is kept in
the project's cache (`TOKENMDP_CACHE_DIR`, default `~/.cache/tokenmdp`, `off` disables it) under
the server, the concrete version (an alias or stage resolved first, so a moved alias fetches its
new version) and the version's creation time (a version deleted and registered again is new).
It is moved into place whole, so a fetch killed midway never leaves a half copy to be read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from pipelines.tracking import is_server
from world.disk_cache import cache_dir

Download = Callable[[str, str | None], str]  # (artifact URI, destination or None) -> local path
Key = Callable[[str, str], str]  # (artifact URI, tracking URI) -> the cached copy's folder name


def registered_version(client, model_uri: str) -> tuple[str, str] | None:
    """(name, version) a `models:/` URI names, an alias (`@champion`), stage or `latest` resolved to the version
    it points at now; None for a logged model's id (`models:/m-...`), which names no registered version."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    resolved = get_model_name_and_version(client, model_uri)  # (name, version) or (logged model id,)
    return (resolved[0], str(resolved[1])) if len(resolved) == 2 else None


def version_key(model_uri: str, tracking_uri: str) -> str:
    """The immutable identity of what a `models:/` or `runs:/` URI names on this server, as a folder name."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if model_uri.startswith("models:/"):
        version = registered_version(client, model_uri)
        if version is None:
            identity = f"logged-{model_uri.removeprefix('models:/')}"
        else:
            created = client.get_model_version(*version).creation_timestamp
            identity = f"{version[0]}-v{version[1]}-{created}"
    else:
        identity = f"run-{model_uri.removeprefix('runs:/')}"  # a run's artifacts do not change once logged
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", identity)[:80]
    digest = hashlib.sha256(f"{tracking_uri}\0{identity}".encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def mlflow_download(artifact_uri: str, dst_path: str | None) -> str:
    """MLflow's own fetch: into `dst_path`, else in place (a local store) or a new temporary folder (a server)."""
    import mlflow

    return mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst_path)


def fetch(model_uri: str, tracking_uri: str, download: Download = mlflow_download, key: Key = version_key) -> Path:
    """A local path holding `model_uri`'s artifacts: in place for a local store, else the cached copy."""
    root = cache_dir()
    if not is_server(tracking_uri) or root is None:  # a local store's artifacts are read in place
        return Path(download(model_uri, None))
    target = root / "models" / key(model_uri, tracking_uri)
    if target.is_dir():
        return fetched_path(target)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    partial.mkdir(parents=True)
    try:
        download(model_uri, str(partial))
        (partial / ".uri").write_text(model_uri + "\n")
        try:
            os.replace(partial, target)
        except OSError:  # another process put its copy there first: read that one
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return fetched_path(target)


def fetched_path(copy: Path) -> Path:
    """The fetched artifact inside its cached copy: the file itself when the URI named one file."""
    entries = [p for p in copy.iterdir() if p.name != ".uri"]
    return entries[0] if len(entries) == 1 and entries[0].is_file() else copy
