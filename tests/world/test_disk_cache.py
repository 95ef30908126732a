import gzip

import pytest

import world.disk_cache as disk_cache
import world.exam as exam
from world.exam import build_bank


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", str(tmp_path))
    build_bank.cache_clear()
    yield tmp_path
    build_bank.cache_clear()


def test_the_bank_is_read_back_from_disk_unchanged(cache_dir, monkeypatch):
    built = build_bank(5, 200)
    assert len(list(cache_dir.glob("exam-bank-*.json.gz"))) == 1
    build_bank.cache_clear()
    monkeypatch.setattr(exam, "iter_bank", lambda *a: pytest.fail("the cached bank was rebuilt"))
    assert build_bank(5, 200) == built


def test_other_arguments_or_other_world_code_are_other_entries(cache_dir, monkeypatch):
    build_bank(5, 200)
    build_bank(5, 201)
    monkeypatch.setattr(disk_cache, "world_source_digest", lambda: "changed code")
    build_bank.cache_clear()
    build_bank(5, 200)
    assert len(list(cache_dir.glob("exam-bank-*.json.gz"))) == 3


def test_an_unreadable_entry_is_rebuilt(cache_dir):
    built = build_bank(5, 200)
    (entry,) = cache_dir.glob("exam-bank-*.json.gz")
    entry.write_bytes(gzip.compress(b'[["not a question"]]'))
    build_bank.cache_clear()
    with pytest.warns(UserWarning, match="rebuilding unreadable cache entry"):
        assert build_bank(5, 200) == built
    build_bank.cache_clear()
    assert build_bank(5, 200) == built  # and rewritten


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMDP_CACHE_DIR", "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    build_bank.cache_clear()
    build_bank(5, 50)
    build_bank.cache_clear()
    assert not any(tmp_path.rglob("*.json.gz"))
