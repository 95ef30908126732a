"""A registered model fetched from a tracking server is kept once per server and concrete version."""

from pathlib import Path

import mlflow
import pytest

from pipelines.model_fetch import fetch, version_key

SERVER = "http://127.0.0.1:5000"


class Downloads:
    """Stands in for MLflow's download: writes a checkpoint where asked and counts the calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.fail = fail

    def __call__(self, uri: str, dst: str | None) -> str:
        self.calls.append((uri, dst))
        if dst is None:
            return "/store/in/place"
        (Path(dst) / "artifacts").mkdir()
        (Path(dst) / "artifacts" / "policy.pt").write_bytes(b"weights")
        if self.fail:
            raise ConnectionError("the server went away midway")
        return dst


def key(uri: str, tracking: str) -> str:
    return f"{uri.split('/')[-1]}@{tracking.rsplit(':', 1)[-1]}"


def test_a_local_store_is_read_in_place_and_nothing_is_copied(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", str(tmp_path))
    downloads = Downloads()
    assert fetch("models:/m/1", f"sqlite:///{tmp_path / 'db'}", downloads, key) == Path("/store/in/place")
    assert downloads.calls == [("models:/m/1", None)] and not any(tmp_path.iterdir())


def test_a_server_s_model_is_fetched_once_and_read_from_the_cache_after(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", str(tmp_path))
    downloads = Downloads()
    first = fetch("models:/m/1", SERVER, downloads, key)
    again = fetch("models:/m/1", SERVER, downloads, key)
    assert first == again == tmp_path / "models" / "1@5000"
    assert (first / "artifacts" / "policy.pt").read_bytes() == b"weights"
    assert len(downloads.calls) == 1  # the second reader (serve's replica after its driver) fetched nothing
    assert (first / ".uri").read_text() == "models:/m/1\n"
    fetch("models:/m/2", SERVER, downloads, key)
    fetch("models:/m/1", "http://127.0.0.1:6000", downloads, key)  # another server's version 1 is another model
    assert len(downloads.calls) == 3
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["1@5000", "1@6000", "2@5000"]


def test_a_fetch_that_fails_midway_leaves_nothing_to_be_read(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConnectionError):
        fetch("models:/m/1", SERVER, Downloads(fail=True), key)
    assert list((tmp_path / "models").iterdir()) == []  # no half copy, no partial folder
    downloads = Downloads()
    assert (fetch("models:/m/1", SERVER, downloads, key) / "artifacts" / "policy.pt").is_file()
    assert len(downloads.calls) == 1


def test_a_copy_another_process_put_in_place_first_is_the_one_read(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", str(tmp_path))
    theirs = tmp_path / "models" / "1@5000"

    def racing(uri: str, dst: str | None) -> str:
        Downloads()(uri, dst)
        theirs.mkdir()  # they finish first
        Downloads()(uri, str(theirs))
        (theirs / ".uri").write_text("theirs")
        return str(dst)

    assert fetch("models:/m/1", SERVER, racing, key) == theirs
    assert (theirs / ".uri").read_text() == "theirs" and [p.name for p in theirs.parent.iterdir()] == ["1@5000"]


def test_a_single_file_is_handed_back_as_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", str(tmp_path))

    def one_file(uri: str, dst: str | None) -> str:
        (Path(str(dst)) / "iteration-00002.pt").write_bytes(b"snapshot")
        return str(Path(str(dst)) / "iteration-00002.pt")

    uri = "runs:/abc/snapshots/iteration-00002.pt"
    assert fetch(uri, SERVER, one_file, key).read_bytes() == b"snapshot"


def test_with_the_cache_off_every_fetch_is_mlflow_s_own(monkeypatch):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", "off")
    downloads = Downloads()
    fetch("models:/m/1", SERVER, downloads, key)
    assert downloads.calls == [("models:/m/1", None)]


def test_the_key_names_the_concrete_version_so_a_moved_alias_fetches_anew(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_registered_model("policy")
    for _ in range(2):
        client.create_model_version("policy", source=str(tmp_path))
    client.set_registered_model_alias("policy", "champion", "1")
    assert version_key("models:/policy@champion", uri) == version_key("models:/policy/1", uri)
    client.set_registered_model_alias("policy", "champion", "2")
    assert version_key("models:/policy@champion", uri) == version_key("models:/policy/2", uri)
    assert version_key("models:/policy/1", uri) != version_key("models:/policy/2", uri)
    assert version_key("models:/policy/1", uri).startswith("policy-v1-")
    client.delete_model_version("policy", "1")
    with pytest.raises(mlflow.exceptions.MlflowException):
        version_key("models:/policy/1", uri)  # resolve_model turns this into "no such version" with the hint
    assert version_key("runs:/abc/x.pt", uri) != version_key("runs:/abc/x.pt", "http://elsewhere:5000")
