"""The headroom table: 32-bit AdamW's room per task and metric, the minimum detectable
difference of five paired seeds, the claims rows it flags and the recipe blocks it writes."""

import math

import pytest
import yaml
from tables_utils import claims_spec, generate, record, write

from scripts import headroom

CLAIMS = """\
fixed_on: "2026-12-03"
fraction: 0.023
settings:
  small/dcn:
    trivial: "AUC 50"
    metrics:
      auc: {better: higher, trivial: 50, ceiling: 100, margin: 0.5, decimals: 2, reason: r}
      logloss: {better: lower, trivial: 0.69, ceiling: 0, margin: 0.1, decimals: 3, reason: r}
claims:
  - {id: a, title: "(a) t", test: equivalence,
     comparisons: [{baseline: adamw32, compared: solo_2bit}],
     cells: [{scale: small, task: dcn}]}
"""


def test_mdd_is_the_power_formula_with_the_t_quantiles():
    # t(0.975, 4) = 2.7764, t(0.8, 4) = 0.9410 (tables); sd of a paired difference sqrt(2) sd
    assert headroom.detectable(1.0) == pytest.approx((2.7764 + 0.9410) * math.sqrt(2 / 5),
                                                     abs=2e-4)
    assert headroom.detectable(0.5, n=10) < headroom.detectable(0.5, n=5)
    assert headroom.detectable(0.0) == 0.0


@pytest.fixture
def fixture(tmp_path):
    claims = tmp_path / "claims.yaml"
    claims.write_text(CLAIMS)
    records = tmp_path / "records"
    aucs, losses = [70.0, 71.0, 72.0, 71.0, 71.0], [0.5, 0.5, 0.5, 0.5, 0.5]
    for seed, (auc, loss) in enumerate(zip(aucs, losses)):
        for optim in ("adamw32", "solo_2bit"):
            write(records, record("small", "dcn", optim, seed, {"auc": auc, "logloss": loss}))
    recipes = tmp_path / "recipe"
    recipes.mkdir()
    (recipes / "dcn_small.yaml").write_text("# dcn\nlr: 1.0e-3  # tuned\n")
    return claims, records, recipes


def test_rows_flag_a_margin_the_seeds_cannot_decide(fixture, tmp_path):
    claims, records, recipes = fixture
    texts = generate(tmp_path, records=records, claims=claims, recipes=recipes)
    sd = math.sqrt(0.5)  # of 70, 71, 72, 71, 71
    mdd = headroom.detectable(sd)
    assert 1.6 < mdd < 1.7
    room = texts["headroom.md"]
    assert f"| auc | 71.00 ± {sd:.2f} (n=5) | 21.00 | 29.00 | {mdd:.2f} | ±0.50 | margin below" \
        in room
    assert "| logloss | 0.500 ± 0.000 (n=5) | 0.190 | 0.500 | 0.000 | ±0.100 | the margin can " \
        "decide |" in room
    claims_md = texts["claims.md"]
    assert f"±0.50 < MDD {mdd:.2f}[^mdd]" in claims_md and "[^mdd]: margin below" in claims_md
    assert "| ±0.100 |" in claims_md  # logloss: decidable, no mark
    assert "margin below the 5-seed MDD on 1" in claims_md


def test_the_recipe_block_is_comments_only_and_rewritten_in_place(fixture, tmp_path):
    claims, records, recipes = fixture
    recipe = recipes / "dcn_small.yaml"
    before = recipe.read_text()
    generate(tmp_path, records=records, claims=claims, recipes=recipes)
    once = recipe.read_text()
    assert once.startswith(before) and headroom.BEGIN in once and once.endswith(
        headroom.END + "\n")
    assert "#   auc: 71.00 ± 0.71 (n=5) | 21.00 | 29.00 | 1.66 | ±0.50 (cannot decide)" in once
    assert yaml.safe_load(once) == yaml.safe_load(before)  # the runs stay current
    write(records, record("small", "dcn", "adamw32", 5, {"auc": 90.0, "logloss": 0.5}))
    generate(tmp_path, records=records, claims=claims, recipes=recipes)
    twice = recipe.read_text()
    assert twice.count(headroom.BEGIN) == 1 and "(n=6)" in twice and "(n=5)" not in twice
    # records moved away (superseded): the block says so instead of keeping their numbers
    import shutil

    shutil.rmtree(records / "small" / "dcn" / "adamw32")
    generate(tmp_path, records=records, claims=claims, recipes=recipes)
    gone = recipe.read_text()
    assert gone.count(headroom.BEGIN) == 1 and "(n=6)" not in gone
    assert "No committed records of 32-bit AdamW" in gone and gone.startswith(before)


def test_trivial_and_ceiling_must_be_numbers(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text(CLAIMS.replace("trivial: 50,", "trivial: fifty,"))
    with pytest.raises(claims_spec.ClaimsError, match="trivial must be a number"):
        claims_spec.load_spec(bad)
