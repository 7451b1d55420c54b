"""The committed tables are what `make tables` makes of the committed records now: regenerated
into a scratch folder, every file of results/tables/, the README's claims block and the
recipes' headroom blocks must be unchanged. Provenance marks compare records with the current
tree, so a code change that makes a record stale also fails here until the tables are remade."""

import shutil

from harness_utils import ROOT
from tables_utils import PAPER, mt

TABLES = ROOT / "results" / "tables"
FIX = "results/tables/ is out of date: run make tables (scripts/make_tables.py) and commit it"


def test_committed_tables_are_the_committed_records_made_now(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    recipes = tmp_path / "recipe"
    shutil.copytree(ROOT / "conf" / "recipe", recipes)
    texts = mt.make_tables(ROOT / "results" / "runs", PAPER, tmp_path / "tables",
                           records_label="results/runs", readme=readme, recipes=recipes)
    committed = sorted(p.name for p in TABLES.iterdir() if p.is_file())
    assert committed == sorted(texts), f"{FIX}: files differ"
    for name, text in texts.items():
        assert (TABLES / name).read_text() == text, f"{FIX}: {name} differs"
    assert readme.read_text() == (ROOT / "README.md").read_text(), (
        f"{FIX}: the README's claims block differs")
    for recipe in sorted(recipes.iterdir()):
        assert recipe.read_text() == (ROOT / "conf" / "recipe" / recipe.name).read_text(), (
            f"{FIX}: the headroom block of conf/recipe/{recipe.name} differs")
