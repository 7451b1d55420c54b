"""The fused step's build folder is keyed by its source and flags (no build needed here)."""

import re
from pathlib import Path

from solo import fused

PATH = (Path(fused.__file__).with_name("csrc") / "fused_step.cpp").resolve()
SOURCE = PATH.read_bytes()


def test_build_name_follows_the_source_and_the_flags():
    """Checkouts or versions sharing torch's extensions folder keep one build each: the name
    changes with any byte of the source or any flag, and only then."""
    name = fused.build_name(SOURCE, fused._CFLAGS)
    assert re.fullmatch(r"solo_fused_step_[0-9a-f]{12}", name)
    assert fused.build_name(bytes(SOURCE), list(fused._CFLAGS)) == name
    assert fused.build_name(SOURCE + b"\n", fused._CFLAGS) != name
    mid = len(SOURCE) // 2
    edited = SOURCE[:mid] + bytes([SOURCE[mid] ^ 1]) + SOURCE[mid + 1:]
    assert fused.build_name(edited, fused._CFLAGS) != name
    assert fused.build_name(SOURCE, fused._CFLAGS[:-1]) != name
    assert fused.build_name(SOURCE, [*fused._CFLAGS, "-DNDEBUG"]) != name
    # flags are separated: moving a character between two flags changes the name
    assert fused.build_name(SOURCE, ["-O3", "-g"]) != fused.build_name(SOURCE, ["-O3-", "g"])


def test_two_checkouts_of_one_source_keep_two_builds():
    """torch's build file names the source by its path, so one build folder shared by two
    checkouts would recompile at every switch between them: the path is part of the key."""
    here = fused.build_name(SOURCE, fused._CFLAGS, "/a/solo/csrc/fused_step.cpp")
    assert fused.build_name(SOURCE, fused._CFLAGS, "/a/solo/csrc/fused_step.cpp") == here
    assert fused.build_name(SOURCE, fused._CFLAGS, "/b/solo/csrc/fused_step.cpp") != here


def test_the_loaded_extension_carries_that_name(monkeypatch):
    seen = {}

    def fake_load(name, **kw):
        seen["name"] = name
        return object()

    import torch.utils.cpp_extension

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    monkeypatch.setattr(fused, "_ext", None)
    monkeypatch.setattr(fused, "_failed", None)
    monkeypatch.delenv("SOLO_NO_FUSED", raising=False)
    assert fused.extension() is not None
    assert seen["name"] == fused.build_name(SOURCE, fused._CFLAGS, str(PATH))
