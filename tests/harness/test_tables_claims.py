"""claims.md: the pre-registered claims of conf/claims.yaml, their verdicts on records made to
order, beta1 of both sides, provenance marks, the summary lines and the README block."""

import json

import pytest
import yaml
from harness_utils import ROOT
from tables_utils import (
    PAPER,
    claims_spec,
    claims_table,
    generate,
    medium,
    mt,
    record,
    table_provenance,
    write,
)

from solo import presets

# Columns of a claims.md row.
TASK, METRIC, MARGIN, BETA1, BASE, COMP, PAIRS, DIFF, TOST, VERDICT, HARDWARE = range(11)
# What a record has that is not a quality metric (no margin needed).
NOT_QUALITY = {"train_loss", "copy_bleu", "bleu_sentences", "heldout_chance", "best_step",
               *(f"{k}_n" for k in ("mmlu", "arc_e", "arc_c", "obqa", "siqa"))}


def rows(text, claim, compared):
    """{(task, metric): cells} of the rows comparing `compared` in the section of `claim`."""
    part = text.split(f"## {claim}")[1].split("\n## ")[0]
    (sub,) = [s for s in part.split("\n### ") if f"(`{compared}`) against" in s.split("\n")[0]]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in sub.splitlines()
             if ln.startswith("| ") and not ln.startswith("| task")]
    return {(c[TASK], c[METRIC]): c for c in cells}


def summary(text, claim, compared):
    part = text.split(f"## {claim}")[1].split("\n## ")[0]
    (sub,) = [s for s in part.split("\n### ") if f"(`{compared}`) against" in s.split("\n")[0]]
    return sub.split("Summary: ")[1].split("\n")[0].rstrip(".")


# ----------------------------------------------------------------------------- the file


def test_claims_file_is_pre_registered_with_fixed_margins():
    text = claims_spec.CLAIMS_FILE.read_text()
    assert "fixed on 2026-12-02, after the runs committed by then and before their" in text
    spec = claims_spec.load_spec()
    assert spec.fixed_on.startswith("2026-12-02") and "2026-12-03" in spec.fixed_on
    assert [c.id for c in spec.claims] == ["a", "b", "c", "d", "e", "f", "g", "baselines"]
    for claim in spec.claims:
        for cell in claim.cells:
            for m in cell.setting.metrics:
                assert m.margin > 0 and m.reason and m.better in ("higher", "lower"), m
    (f,) = [c for c in spec.claims if c.id == "f"]
    assert [c.task for c in f.cells] == ["swin", "transformer", "dcn", "glue", "hstu", "llama"]
    # the baseline runs at the beta1 SOLO's rule gives the compared preset
    for comparison in f.comparisons:
        beta = presets.default_beta1(comparison.compared)
        assert comparison.baseline == "adamw32"
        assert comparison.baseline_variant == f"beta1={beta:g}", comparison


def test_every_quality_metric_the_committed_records_have_has_a_margin():
    spec = claims_spec.load_spec()
    runs = ROOT / "results" / "runs"
    for claim in spec.claims:
        for cell in claim.cells:
            folder = runs / cell.scale / cell.task
            names = {k for p in folder.glob("*/seed*.json")
                     for k in json.loads(p.read_text())["metrics"]} - NOT_QUALITY
            have = {m.name for m in cell.setting.metrics}
            assert names <= have, (claim.id, cell.setting.key, names - have)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["settings"]["small/dcn"]["metrics"]["auc"].update(margin=-1),
     "settings.small/dcn.metrics.auc.margin must be > 0"),
    (lambda c: c["settings"]["small/dcn"]["metrics"]["auc"].update(better="up"),
     "better must be higher or lower"),
    (lambda c: c["claims"][0]["comparisons"][0].update(compared="solo_9bit"),
     "claims[0].comparisons[0].compared: unknown optimizer 'solo_9bit'"),
    (lambda c: c["claims"][3]["cells"][0].update(task="llama"), "no margin set 'small/llama'"),
    (lambda c: c["settings"]["small/dcn"]["metrics"]["auc"].pop("reason"), "missing key 'reason'"),
])
def test_a_bad_claims_file_is_refused_naming_the_key(tmp_path, capsys, edit, message):
    raw = yaml.safe_load(claims_spec.CLAIMS_FILE.read_text())
    edit(raw)
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump(raw))
    args = ["--records", str(tmp_path / "none"), "--paper", str(PAPER), "--out",
            str(tmp_path / "out"), "--readme", "", "--claims", str(bad)]
    assert mt.main(args) == 2
    err = capsys.readouterr().err
    assert f"bad claims file: {bad}" in err and message in err


# ----------------------------------------------------------------------------- verdicts


@pytest.fixture
def claims(tmp_path):
    records = tmp_path / "records"

    def small(optim, seed, task, **metrics):
        write(records, record("small", task, optim, seed, metrics))

    for seed in range(3):
        auc, logloss = 78.0 + 0.2 * seed, 0.50 + 0.01 * seed
        small("adamw32", seed, "dcn", auc=auc, logloss=logloss)
        small("solo_4_2bit", seed, "dcn", auc=auc + 0.1 + 0.01 * seed, logloss=logloss + 0.0001)
        small("solo_2bit", seed, "dcn", auc=auc - 1.0 - 0.01 * seed, logloss=logloss - 0.02 * seed)
    small("adamw32", 0, "swin", top1=96.0, top5=99.0)
    small("adamw32", 1, "swin", top1=97.0, top5=99.0)
    small("solo_4_2bit", 0, "swin", top1=96.5, top5=99.0)
    small("adamw4bit", 0, "swin", top1=12.0, top5=50.0)  # under the divergence floor (20)
    small("adamw4bit", 1, "swin", top1=97.0, top5=99.0)
    write(records, record("small", "swin", "adamw2bit", 0, {}), crash=True)
    return generate(tmp_path, records=records)["claims.md"]


def test_claims_verdicts_margins_and_pairs(claims):
    a = rows(claims, "(a)", "solo_4_2bit")
    auc = a["dcn (small)", "auc"]
    assert auc[MARGIN] == "±0.64"
    assert auc[BASE].startswith("78.20 ± 0.20 (n=3)") and auc[COMP].startswith("78.31 ± 0.21")
    assert auc[PAIRS] == "3" and auc[DIFF] == "+0.11 [+0.09, +0.13]"
    assert auc[VERDICT] == "**equivalent**" and auc[TOST] == "<0.001"
    assert a["dcn (small)", "logloss (lower is better)"][VERDICT] == "**equivalent**"
    top1 = a["swin (small)", "top1"]
    assert top1[PAIRS] == "1 (1 dropped)" and top1[VERDICT] == "**n<2**" and top1[TOST] == "—"
    assert ("swin (small)", "top1_best") not in a  # no record has it
    assert ("transformer (small)", "—") in a  # no runs: one row with the commands
    assert "no records: `python run.py task=transformer optim=adamw32 scale=small seed=0`" in (
        a["transformer (small)", "—"][BASE])
    b = rows(claims, "(b)", "solo_2bit")
    assert b["dcn (small)", "auc"][VERDICT] == "**worse**"
    # lower is better: logloss differences 0, -0.02, -0.04 with margin 0.0028: CI overlaps it
    assert b["dcn (small)", "logloss (lower is better)"][VERDICT] == "**inconclusive**"
    assert "seed spread" not in claims


def test_claims_count_diverged_and_crashed_seeds(claims):
    c4 = rows(claims, "(c)", "adamw4bit")
    assert c4["swin (small)", "top1"][VERDICT] == (
        "**crashed** (compared 1 of 2 seeds, baseline 0 of 2)")
    assert c4["swin (small)", "top5"][VERDICT].startswith("**crashed**")  # the seed, not a metric
    c2 = rows(claims, "(c)", "adamw2bit")
    assert c2["swin (small)", "top1"][COMP] == "no records, 1 crashed"
    assert c2["swin (small)", "top1"][VERDICT] == (
        "**crashed** (compared 1 of 1 seeds, baseline 0 of 2)")
    assert summary(claims, "(c)", "adamw2bit").endswith(
        "the claim holds on 2, fails on 0, open on 0")


def test_summary_line_per_comparison(claims):
    assert summary(claims, "(b)", "solo_2bit") == (
        "equivalent on 0 of 2 metrics, worse on dcn auc, inconclusive on dcn logloss, "
        "no records on swin (small), transformer (small), glue (small), hstu (small), "
        "llama (medium), "
        "margin below the 5-seed MDD on 1; the claim holds on 0, fails on 1, open on 1")
    assert summary(claims, "(a)", "solo_4_2bit").startswith(
        "equivalent on 2 of 4 metrics, n<2 on swin top1, swin top5, no records on")


def test_a_variant_cell_reads_its_override_folder_and_a_baseline_variant_its_own(tmp_path):
    records = tmp_path / "records"
    hard = "epochs=10,lr=8.0e-3,warmup_steps=0"
    for seed in (0, 1):
        write(records, record("small", "swin", "adamw32", seed, dict(top1=97.0 + seed)))
        write(records, record("small", "swin", "adamw32", seed, dict(top1=33.0 + seed), hard))
        write(records, record("small", "swin", "adamw4bit", seed, dict(top1=24.0 + seed), hard))
        write(records, record("small", "swin", "adamw32", seed, dict(top1=90.0 + seed),
                              "beta1=0.818", config={"beta1": 0.818}))
        write(records, record("small", "swin", "solo_4_2bit", seed, dict(top1=90.1 + seed)))
    # the shipped claims name no variant cell: one added to a copy, with its margin set
    spec = yaml.safe_load(claims_spec.CLAIMS_FILE.read_text())
    for variant in ("epochs=10", hard):
        spec["settings"][f"small/swin/{variant}"] = spec["settings"]["small/swin"]
        spec["claims"][2]["cells"].append({"scale": "small", "task": "swin", "variant": variant})
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(spec))
    text = generate(tmp_path, records=records, claims=tmp_path / "claims.yaml")["claims.md"]
    c = rows(text, "(c)", "adamw4bit")
    assert c[f"swin (small, {hard})", "top1"][BASE].startswith("33.50 ± 0.71 (n=2)")
    assert c[f"swin (small, {hard})", "top1"][VERDICT] == "**worse**"
    assert c["swin (small)", "—"][COMP] == "no records: `python run.py task=swin optim=adamw4bit " \
                                          "scale=small seed=0`"
    assert c["swin (small, epochs=10)", "—"][BASE] == "no records (variant epochs=10)"
    f = rows(text, "(f)", "solo_4_2bit")
    assert f["swin (small)", "top1"][BASE].startswith("90.50 ± 0.71 (n=2)")
    assert f["swin (small)", "top1"][VERDICT] == "**equivalent**"
    assert f["swin (small)", "top1"][BETA1] == "0.818 / 0.818, inferred[^beta1]"  # no "differ"
    assert rows(text, "(a)", "solo_4_2bit")["swin (small)", "top1"][BETA1] == (
        "0.9 / 0.818, inferred[^beta1]; **differ**")


def test_beta1_comes_from_the_optimizer_section_when_the_record_has_one(tmp_path):
    records = tmp_path / "records"
    for seed in (0, 1):
        for optim in ("adamw32", "solo_2bit"):
            rec = record("small", "dcn", optim, seed, dict(auc=78.0 + seed))
            rec["optimizer"] = {"class": "solo.AdamW", "betas": [0.525, 0.999], "groups": [{}]}
            write(records, rec)
    b = rows(generate(tmp_path, records=records)["claims.md"], "(b)", "solo_2bit")
    assert b["dcn (small)", "auc"][BETA1] == "0.525 / 0.525"


def test_a_claim_with_its_own_baseline_compares_with_that_baseline_only(tmp_path):
    records = tmp_path / "records"
    for seed, acc in enumerate([90.0, 92.0]):
        write(records, medium("adabelief32", seed, mmlu=25.0, acc=acc))
        write(records, medium("adamw32", seed, mmlu=30.0, acc=50.0))  # not the baseline here
        write(records, medium("adabelief_solo_4_2bit", seed, mmlu=26.0, acc=acc + 1.0))
    text = generate(tmp_path, records=records)["claims.md"]
    assert "### SOLO 4/2-bit AdaBelief (`adabelief_solo_4_2bit`) against 32-bit AdaBelief " \
           "(`adabelief32`)" in text
    e = rows(text, "(e)", "adabelief_solo_4_2bit")
    assert e["llama (medium)", "arc_e"][BASE].startswith("91.00 ± 1.41 (n=2)")
    assert e["llama (medium)", "mmlu"][VERDICT] == "**better**"  # +1.00 exactly, margin 0.67
    assert rows(text, "(a)", "solo_4_2bit")["llama (medium)", "—"][BASE] == "2 seeds"


# ----------------------------------------------------------------------------- provenance


def _marked(tmp_path, edit, marks):
    records = tmp_path / "records"
    for seed in (0, 1):
        for optim in ("adamw32", "solo_4_2bit"):
            rec = record("small", "dcn", optim, seed, dict(auc=78.0 + seed))
            edit(rec, optim, seed)
            write(records, rec)
    text = generate(tmp_path, records=records, marks=marks)["claims.md"]
    return text, rows(text, "(a)", "solo_4_2bit")["dcn (small)", "auc"]


def test_provenance_marks_and_their_footnotes(tmp_path):
    current = {"solo/a.py": "1" * 40, "conf/claims.yaml": "2" * 40}

    def edit(rec, optim, seed):
        rec["provenance"].update(git_dirty=seed == 0, cpu_threads=1 + seed)
        rec["provenance"]["code_files"] = dict(current)
        if optim == "solo_4_2bit" and seed == 1:
            rec["provenance"]["code_files"]["solo/a.py"] = "3" * 40
        if optim == "adamw32":  # tables-only file: not stale
            rec["provenance"]["code_files"]["conf/claims.yaml"] = "4" * 40

    text, auc = _marked(tmp_path, edit, table_provenance.Marks(current))
    assert auc[BASE].endswith("; dirty 1/2[^dirty], mixed threads[^mixed]")
    assert auc[COMP].endswith("; dirty 1/2[^dirty], stale 1/2[^stale], mixed threads[^mixed]")
    assert auc[HARDWARE] == "Fixture"
    for key in ("dirty", "stale", "mixed"):
        assert f"\n[^{key}]: {key}: " in text
    assert "[^unknown]:" not in text  # only the footnotes the cells use


def test_records_without_code_files_are_provenance_unknown(tmp_path):
    def edit(rec, optim, seed):
        rec["provenance"]["cpu"] = "AMD EPYC 7763 64-Core Processor" if seed else "Intel(R) Xeon(R)"

    text, auc = _marked(tmp_path, edit, table_provenance.Marks({}))
    assert auc[BASE].endswith("; mixed CPU[^mixed], unknown 2/2[^unknown]")
    assert auc[HARDWARE] == "AMD EPYC 7763+Intel Xeon"
    assert "\n[^unknown]: unknown: provenance unknown" in text


def test_stale_compares_with_the_current_tree():
    from experiments import provenance

    rec = {"task": "dcn", "provenance": {"code_files": provenance.code_files()}}
    assert table_provenance.Marks().stale(rec) == []
    rec["provenance"]["code_files"] = {**rec["provenance"]["code_files"],
                                       "solo/quantizers.py": "0" * 40}
    assert table_provenance.Marks().stale(rec) == ["solo/quantizers.py"]


# ----------------------------------------------------------------------------- README block


def test_the_summary_block_goes_between_the_readme_markers(tmp_path, capsys):
    begin, end = claims_table.README_BEGIN, claims_table.README_END
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\nbefore\n{begin}\nold verdicts\n{end}\nafter\n")
    texts = generate(tmp_path, readme=readme)
    text = readme.read_text()
    assert text.startswith(f"# R\n\nbefore\n{begin}\nGenerated by `make tables`")
    assert text.endswith(f"{end}\nafter\n") and "old verdicts" not in text
    assert "- (a) SOLO 4/2-bit AdamW matches 32-bit AdamW" in text
    assert "[claims.md](results/tables/claims.md)" in text
    block = text.split(begin)[1].split(end)[0]
    assert block.split("\n", 2)[2] in texts["claims_summary.md"]  # the same lines
    generate(tmp_path, readme=readme)
    assert readme.read_text() == text  # idempotent
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    generate(tmp_path, readme=plain)
    assert plain.read_text() == "no markers\n"
    assert "has no <!-- claims:begin --> marker" in capsys.readouterr().err
    assert claims_table.replace_block("x", "y") is None


def test_no_table_script_keeps_the_seed_spread_rule():
    for path in [*(ROOT / "scripts").glob("*table*.py"), *(ROOT / "scripts").glob("claim*.py"),
                 ROOT / "README.md"]:
        text = path.read_text()
        assert "seed spread" not in text and "std_a + std_b" not in text, path


def test_a_degradation_claim_is_judged_as_a_crash_claim():
    from types import SimpleNamespace

    for verdict, holds in (("worse", "holds"), ("equivalent", "fails"), ("better", "fails"),
                           ("inconclusive", "open")):
        cmp = SimpleNamespace(verdict=verdict, crashed=(0, 0))
        assert claims_table.outcome("degradation", cmp) == claims_table.outcome("crash", cmp) \
            == holds
    more = SimpleNamespace(verdict="crashed", crashed=(0, 2))
    assert claims_table.outcome("degradation", more) == "holds"
    assert claims_table.outcome("equivalence", more) == "fails"
