"""The pre-registered claims (conf/claims.yaml) as checked data: which runs each claim compares,
on which metrics, with which equivalence margins. The file's header says how the margins were
derived and when they were fixed; this module only reads and checks it.

Standard library and PyYAML only (no hydra, no omegaconf, no torch).
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_FILE = ROOT / "conf" / "claims.yaml"
TESTS = ("equivalence", "crash", "degradation")


class ClaimsError(ValueError):
    """conf/claims.yaml is not usable; the message names the file and the key."""


@dataclass(frozen=True)
class Metric:
    """A metric of a setting: better is "higher" or "lower"; margin in the metric's units;
    trivial and ceiling (optional, the metric's units): what a trivial model scores and the best
    score there is, for the headroom table."""

    name: str
    better: str
    margin: float
    decimals: int
    reason: str
    trivial: float | None = None
    ceiling: float | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"


@dataclass(frozen=True)
class Setting:
    """A margin set, "<scale>/<task>[/<variant>]": its metrics in file order, and the divergence
    floor ({metric, below, reason}) of the task, if it has one."""

    key: str
    trivial: str
    metrics: tuple
    diverged: dict | None


@dataclass(frozen=True)
class Cell:
    """Where a claim looks: scale, task, the variant (override folder) of both sides' runs."""

    scale: str
    task: str
    variant: str | None
    setting: Setting


@dataclass(frozen=True)
class Comparison:
    """A compared preset against a baseline preset (baseline_variant: the baseline's runs of
    that override folder whatever the cell's variant)."""

    baseline: str
    compared: str
    baseline_variant: str | None


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    test: str
    note: str
    comparisons: tuple
    cells: tuple


@dataclass(frozen=True)
class Spec:
    fixed_on: str
    fraction: float
    claims: tuple


def _need(obj, key, types, where):
    if not isinstance(obj, dict) or key not in obj:
        raise ClaimsError(f"{where}: missing key {key!r}")
    if not isinstance(obj[key], types) or isinstance(obj[key], bool):
        raise ClaimsError(f"{where}.{key}: unexpected value {obj[key]!r}")
    return obj[key]


def _metric(name, raw, where):
    better = _need(raw, "better", str, where)
    if better not in ("higher", "lower"):
        raise ClaimsError(f"{where}.better must be higher or lower, got {better!r}")
    margin = float(_need(raw, "margin", (int, float), where))
    if margin <= 0:
        raise ClaimsError(f"{where}.margin must be > 0, got {margin}")
    ends = [raw.get(k) for k in ("trivial", "ceiling")]
    for key, value in zip(("trivial", "ceiling"), ends):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ClaimsError(f"{where}.{key} must be a number, got {value!r}")
    return Metric(name, better, margin, _need(raw, "decimals", int, where),
                  _need(raw, "reason", str, where), *(None if v is None else float(v)
                                                      for v in ends))


def _setting(key, raw, where):
    metrics = _need(raw, "metrics", dict, where)
    diverged = raw.get("diverged")
    if diverged is not None:
        floor_of = _need(diverged, "metric", str, f"{where}.diverged")
        _need(diverged, "below", (int, float), f"{where}.diverged")
        if floor_of not in metrics:
            raise ClaimsError(f"{where}.diverged.metric {floor_of!r} is not a metric of {key}")
    return Setting(key, _need(raw, "trivial", str, where),
                   tuple(_metric(n, m, f"{where}.metrics.{n}") for n, m in metrics.items()),
                   diverged)


def _cell(raw, settings, where):
    scale, task = _need(raw, "scale", str, where), _need(raw, "task", str, where)
    variant = raw.get("variant")
    key = raw.get("margins") or "/".join([scale, task] + ([variant] if variant else []))
    if key not in settings:
        raise ClaimsError(f"{where}: no margin set {key!r} under settings")
    return Cell(scale, task, variant, settings[key])


def _claim(raw, settings, presets, where):
    test = _need(raw, "test", str, where)
    if test not in TESTS:
        raise ClaimsError(f"{where}.test must be one of {', '.join(TESTS)}, got {test!r}")
    comparisons = []
    for i, c in enumerate(_need(raw, "comparisons", list, where)):
        at = f"{where}.comparisons[{i}]"
        for key in ("baseline", "compared"):
            if _need(c, key, str, at) not in presets:
                raise ClaimsError(f"{at}.{key}: unknown optimizer {c[key]!r}")
        comparisons.append(Comparison(c["baseline"], c["compared"], c.get("baseline_variant")))
    cells = tuple(_cell(c, settings, f"{where}.cells[{i}]")
                  for i, c in enumerate(_need(raw, "cells", list, where)))
    if any(c.baseline_variant for c in comparisons) and any(c.variant for c in cells):
        raise ClaimsError(f"{where}: a baseline_variant and a cell variant cannot combine")
    return Claim(str(_need(raw, "id", (str, int), where)), _need(raw, "title", str, where),
                 test, raw.get("note", ""), tuple(comparisons), cells)


def load_spec(path=CLAIMS_FILE, presets=None) -> Spec:
    """The claims of ``path``, checked; ``presets``: the optimizer names a claim may use
    (default: every optimizer of the registry)."""
    path = Path(path)
    if presets is None:
        from experiments.optimizers import OPTIMIZERS as presets
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClaimsError(f"{path}: cannot be read ({e})") from None
    where = str(path)
    settings = {k: _setting(k, v, f"{where}: settings.{k}")
                for k, v in _need(raw, "settings", dict, where).items()}
    claims = tuple(_claim(c, settings, presets, f"{where}: claims[{i}]")
                   for i, c in enumerate(_need(raw, "claims", list, where)))
    return Spec(str(_need(raw, "fixed_on", str, where)),
                float(_need(raw, "fraction", (int, float), where)), claims)
