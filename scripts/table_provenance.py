"""How far a cell of claims.md can be trusted to be the current code's result: marks for records
from a dirty tree, stale records (the code they ran differs from the current tree's in a file
that affects their task), cells whose seeds ran on different machines or kernels, records that
do not name their code; and the beta1 each record ran with.

The current tree's code is what `make tables` reads (experiments.provenance.code_files): on a
clean tree that is HEAD, so tables made just before a commit stay right after it.
"""

import json

from experiments import provenance
from scripts.table_render import cpu_model

# Per mark: the footnote that explains it.
FOOTNOTES = {
    "dirty": "dirty: records made from a working tree with uncommitted changes to the code "
             "(provenance.git_dirty); the code they ran is not a commit.",
    "stale": "stale: the code these records ran differs from the current tree's in a file that "
             "affects their task (provenance.code_files against the current files); rerun them.",
    "mixed": "mixed: the cell's seeds ran on different hardware or steps (CPU model, CPU "
             "threads, GPU or kernel, as named): the differences between its seeds include "
             "that one.",
    "unknown": "unknown: provenance unknown, records made before records named their code "
               "(no provenance.code_files): whether they are stale cannot be told.",
    "beta1": "inferred: the record does not say the beta1 it ran with (older records); shown is "
             "the run's beta1 override, else its recipe's, else the preset's default.",
}
# What "mixed" compares, as (label, how to read it from a record).
MIXED_FIELDS = (
    ("CPU", lambda r: cpu_model(r["provenance"].get("cpu"))),
    ("threads", lambda r: r["provenance"].get("cpu_threads")),
    ("GPU", lambda r: r["provenance"].get("gpu")),
    ("kernel", lambda r: json.dumps(r["provenance"].get("kernel"), sort_keys=True)),
)


def note(key):
    """A GitHub footnote reference to FOOTNOTES[key]."""
    return f"[^{key}]"


class Marks:
    """Provenance marks of cells; the current tree's code files are read once, when a record
    that names its code first needs them."""

    def __init__(self, current_files=None):
        self._current = current_files

    def current(self):
        if self._current is None:
            self._current = provenance.code_files()
        return self._current

    def stale(self, rec):
        """The files that make ``rec`` stale ([] when none); None when it names no code."""
        files = provenance.stale_files(rec, self.current()) if self._names_code(rec) else None
        return files  # provenance.affects: the tables' own configuration makes none stale

    @staticmethod
    def _names_code(rec):
        return isinstance(rec["provenance"].get("code_files"), dict)

    def of(self, recs):
        """[(footnote key, text)] of the marks the records of one cell earn, in a fixed order."""
        n = len(recs)
        out = []
        dirty = sum(r["provenance"].get("git_dirty") is True for r in recs)
        if dirty:
            out.append(("dirty", f"dirty {dirty}/{n}"))
        stale = [self.stale(r) for r in recs]
        if any(stale):
            out.append(("stale", f"stale {sum(bool(s) for s in stale)}/{n}"))
        mixed = [label for label, get in MIXED_FIELDS if len({get(r) for r in recs}) > 1]
        if mixed:
            out.append(("mixed", f"mixed {'+'.join(mixed)}"))
        unknown = sum(s is None for s in stale)
        if unknown:
            out.append(("unknown", f"unknown {unknown}/{n}"))
        return out


def marks_text(marks):
    """'dirty 3/3[^dirty], unknown 3/3[^unknown]'; '' for none."""
    return ", ".join(f"{text}{note(key)}" for key, text in marks)


def beta1(rec):
    """(beta1 values the record's optimizer ran with, inferred?): from its ``optimizer``
    section when it has one; else inferred: the run's beta1 override, the recipe's beta1, or
    the preset's default (SOLO's rule for the SOLO presets). Empty when none can be told."""
    opt = rec.get("optimizer") or {}
    groups = [opt] if "betas" in opt else opt.get("groups") or []
    ran = {float(g["betas"][0]) for g in groups if isinstance(g.get("betas"), list)}
    if ran:
        return frozenset(ran), False
    cfg = rec.get("config") or {}
    recipe = (cfg.get("scale") or {}).get("betas") if isinstance(cfg.get("scale"), dict) else None
    for value in (cfg.get("beta1"), recipe[0] if isinstance(recipe, list) and recipe else None):
        if value is not None:
            return frozenset({float(value)}), True
    from experiments.optimizers import OPTIMIZERS

    preset = OPTIMIZERS.get(rec["optim"])
    return (frozenset({preset.default_beta1()}) if preset else frozenset()), True


def fmt_beta(value):
    return f"{value:.3f}".rstrip("0").rstrip(".")


def beta1_text(recs):
    """('0.818' or '0.9+0.818' when seeds differ, '?' for none; the set of values; whether any
    value is inferred)."""
    values, inferred = set(), False
    for rec in recs:
        v, guessed = beta1(rec)
        values |= v
        inferred |= guessed
    return "+".join(fmt_beta(v) for v in sorted(values)) or "?", values, inferred
