"""Caches of preprocessed data (experiments.cache): keyed by their source's fingerprint and
parameters, rebuilt when it changes, never left half-written; on the Criteo cache of dcn and
the BPE caches of transformer and llama."""

import json
import multiprocessing
import os
import time

import numpy as np
import pytest

from experiments import cache
from experiments.dcn import criteo
from experiments.llama import data as llama_data
from experiments.llama import generated
from experiments.transformer import data as td


def criteo_lines(n: int) -> str:
    """n Criteo rows: label alternating, I1 = row index, the rest blank or one category."""
    return "".join("\t".join([str(k % 2), str(k)] + [""] * 12 + ["aa"] * 26) + "\n"
                   for k in range(n))


@pytest.fixture
def tsv(tmp_path):
    pytest.importorskip("pandas")
    path = tmp_path / "train.txt"
    path.write_text(criteo_lines(100))
    return path


def test_a_grown_criteo_file_is_parsed_again(tsv):
    assert len(criteo.load_criteo(tsv.parent, min_count=1)["label"]) == 100
    tsv.write_text(criteo_lines(1000))
    assert len(criteo.load_criteo(tsv.parent, min_count=1)["label"]) == 1000
    assert cache.read_key(tsv.parent / "train_dcn_min1")["source"]["size"] == tsv.stat().st_size


def test_an_edit_that_keeps_the_size_is_parsed_again(tsv):
    criteo.load_criteo(tsv.parent, min_count=1)
    text = tsv.read_text()
    tsv.write_text("1" + text[1:])  # row 0's label 0 -> 1, same size
    assert criteo.load_criteo(tsv.parent, min_count=1)["label"][0] == 1


def test_a_touched_file_counts_as_changed(tmp_path):
    # The rule: mtime is part of the fingerprint, since an edit in the middle of a large file
    # keeps its size and both hashed ends.
    src = tmp_path / "src.txt"
    src.write_text("x" * 10)
    builds = []
    key = lambda: {"source": cache.fingerprint(src)}  # noqa: E731
    cache.cached_build(tmp_path / "c", key(), builds.append)
    cache.cached_build(tmp_path / "c", key(), builds.append)
    assert len(builds) == 1
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    cache.cached_build(tmp_path / "c", key(), builds.append)
    assert len(builds) == 2


def test_the_fingerprint_sees_both_ends_of_a_large_file(tmp_path):
    src = tmp_path / "big.bin"
    body = bytearray(3 * cache.SAMPLE_BYTES)
    src.write_bytes(body)
    st = src.stat()
    before = cache.fingerprint(src)
    body[-1] = 1
    src.write_bytes(body)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and time: only the hash
    assert cache.fingerprint(src)["blake2b_head_tail"] != before["blake2b_head_tail"]


def test_a_changed_parameter_rebuilds(tsv):
    criteo.load_criteo(tsv.parent, min_count=1)
    other = tsv.parent / "elsewhere"
    assert criteo.load_criteo(tsv.parent, min_count=1, cache_dir=other)["cardinality"]["C1"] == 2
    assert cache.read_key(other / "train_dcn_min1")["min_count"] == 1
    # a cache written without a key (older versions wrote the path in `done`) is rebuilt
    old = tsv.parent / "train_dcn_min3"
    old.mkdir()
    (old / "done").write_text(f"{tsv}\n")
    criteo.load_criteo(tsv.parent, min_count=3)
    assert cache.read_key(old)["min_count"] == 3


def test_a_preprocess_killed_midway_leaves_no_done_and_the_next_run_rebuilds(tsv, monkeypatch):
    saves, real_save = [], np.save

    def dying_save(path, array):
        saves.append(path)
        if len(saves) == 3:
            raise KeyboardInterrupt  # killed while writing the third array
        real_save(path, array)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        criteo.load_criteo(tsv.parent, min_count=1)
    monkeypatch.undo()
    folder = tsv.parent / "train_dcn_min1"
    assert not folder.exists()  # nothing under the cache's name: no done, no partial arrays
    assert not [p for p in tsv.parent.iterdir() if p.name.startswith(".train_dcn_min1.tmp")]
    assert len(criteo.load_criteo(tsv.parent, min_count=1)["label"]) == 100
    assert cache.read_key(folder)["source"] == cache.fingerprint(tsv)


def test_a_failed_rebuild_keeps_no_stale_folder_usable(tmp_path):
    cache.cached_build(tmp_path / "c", {"v": 1}, lambda out: (out / "x").write_text("1"))

    def fail(out):
        (out / "x").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.cached_build(tmp_path / "c", {"v": 2}, fail)
    assert cache.read_key(tmp_path / "c") == {"v": 1}  # the old key: never taken for v2
    cache.cached_build(tmp_path / "c", {"v": 2}, lambda out: (out / "x").write_text("2"))
    assert (tmp_path / "c" / "x").read_text() == "2"


def _slow_build(folder, tag, started):
    def build(out):
        started.append(tag)
        for name in ("a", "b"):
            (out / name).write_text(tag)
            time.sleep(0.3)

    cache.cached_build(folder, {"source": "same"}, build)


def _builder(folder, tag, queue):
    started = []
    _slow_build(folder, tag, started)
    queue.put(started)


@pytest.mark.parametrize("locks", [True, False], ids=["flock", "no-flock"])
def test_two_concurrent_builders_leave_one_whole_cache(tmp_path, monkeypatch, locks):
    if not locks:  # a file system without flock: both build, the first rename wins
        monkeypatch.setattr(cache.fcntl, "flock", lambda *a: (_ for _ in ()).throw(OSError()))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_builder, args=(tmp_path / "c", tag, queue)) for tag in "xy"]
    for p in procs:
        p.start()
    started = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    folder = tmp_path / "c"
    assert cache.read_key(folder) == {"source": "same"}
    a, b = (folder / "a").read_text(), (folder / "b").read_text()
    assert a == b and a in "xy"  # both files from one builder
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.lock", "c"]  # no tmp left over
    if locks:
        assert sum(len(s) for s in started) == 1  # the second waited and reused it


def test_the_transformer_bpe_is_cached_by_content(tmp_path):
    pairs = td.synthetic(50, 0, 0)["train"]
    tok = td.train_bpe(pairs, 40, tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("bpe-40-")]
    assert cache.read_key(folder)["vocab_size"] == 40
    assert td.train_bpe(pairs, 40, tmp_path).to_str() == tok.to_str()
    td.train_bpe(pairs + [("a b", "b a")], 40, tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("bpe-40-")]) == 2


def test_the_llama_tokenizer_is_rebuilt_when_its_texts_or_size_change(tmp_path):
    train, _ = generated.generate(64, 6)
    texts = [llama_data.format_prompt(ex) + ex["output"] for ex in train]
    small = llama_data.train_tokenizer(texts, 300, tmp_path / "tok")
    assert len(llama_data.train_tokenizer(texts, 300, tmp_path / "tok")) == len(small)
    bigger = llama_data.train_tokenizer(texts, 400, tmp_path / "tok")
    assert len(bigger) > len(small)
    assert json.loads((tmp_path / "tok" / "done").read_text())["vocab_size"] == 400
