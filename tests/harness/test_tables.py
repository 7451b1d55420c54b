"""`make tables`: paper numbers as data, fixture records -> golden markdown/LaTeX, bad records,
the medium-scale section of table2a.md and claims.md's verdicts.

Regenerate the golden files after an intended layout change with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/harness/test_tables.py
and review the diff.
"""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_tables.py"
PAPER = ROOT / "results" / "paper"
HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "records"
GOLDEN = HERE / "golden"
# The label printed in the tables; fixed so the golden files do not depend on where tests run.
FIXTURES_LABEL = "tests/harness/fixtures/records"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mt = _load_script()


def _csv(name):
    with open(PAPER / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def _by(rows, key, value):
    (row,) = [r for r in rows if r[key] == value]
    return row


# ----------------------------------------------------------------------------- paper data


def test_paper_csvs_exist_and_have_an_optim_column():
    names = {p.stem for p in PAPER.glob("*.csv")}
    assert {
        "solo_table1",
        "solo_table2a",
        "solo_table2b",
        "solo_larger_llama",
        "solo_adabelief",
        "solo_ablation_vquant_block",
        "li_table2",
        "li_table3",
        "li_table4",
        "li_table6",
    } <= names
    assert (PAPER / "README.md").read_text().count("not ours") >= 1
    for name in names - {"li_table6"}:  # Li Table 6 rows are quantizer choices, not presets
        assert "optim" in _csv(name)[0], name


def test_paper_csv_cells_as_printed():
    t1 = _csv("solo_table1")
    rows = mt.table_rows(mt.TABLE1, mt.load_paper(PAPER, "solo_table1"), {})
    assert [(r["optim"], r["optimizer"]) for r in t1] == rows
    assert _by(t1, "optim", "adamw32")["swin_top1"] == "81.16"
    assert _by(t1, "optim", "adamw4bit")["swin_top1"] == "Crash"
    assert _by(t1, "optim", "adamw2bit")["transformer_bleu"] == "Crash"
    assert _by(t1, "optim", "solo_4_2bit")["dcn_logloss"] == "0.43825"
    assert _by(t1, "optim", "solo_2bit")["hstu_ndcg"] == "18.20"  # trailing zero kept

    t2a = _csv("solo_table2a")
    assert _by(t2a, "optimizer", "pretrained")["mmlu"] == "35.34"
    assert _by(t2a, "optim", "adamw32")["state_memory_gb"] == "50.24"
    assert _by(t2a, "optim", "solo_4_2bit")["state_memory_gb"] == "5.18"
    assert _by(t2a, "optim", "adamw8bit")["time_h"] == "9.3"

    assert _by(_csv("solo_table2b"), "optim", "adamw2bit")["scienceqa"] == "28.93"
    assert _by(_csv("solo_larger_llama"), "optim", "adamw32")["llama33b_arc_e"] == "86.30"
    assert _by(_csv("solo_adabelief"), "optim", "adabelief_solo_4_2bit")["arc_c"] == "45.88"
    assert _by(_csv("solo_ablation_vquant_block"), "v_quantizer", "DE")["b128_siqa"] == "32.91"

    li2 = _by(_csv("li_table2"), "optimizer", "32-bit AdamW")
    assert (li2["mt_mean"], li2["mt_std"]) == ("26.61", "0.08")
    assert _by(_csv("li_table3"), "optimizer", "4-bit AdamW")["hellaswag"] == "74.7"
    roberta4 = [r for r in _csv("li_table4") if r["task"] == "RoBERTa-L"][2]
    assert (roberta4["time"], roberta4["time_unit"], roberta4["total_memory_gb"]) == (
        "5.59",
        "min",
        "3.02",
    )
    assert _by(_csv("li_table6"), "v", "rank-1/linear")["top1_mean"] == "80.8"


# ----------------------------------------------------------------------------- golden


def _generate(tmp_path, records=FIXTURES, label=FIXTURES_LABEL):
    return mt.make_tables(records, PAPER, tmp_path / "tables", records_label=label)


def test_fixture_tables_match_golden(tmp_path):
    texts = _generate(tmp_path)
    assert set(texts) == {
        "table1.md", "table1.tex", "table2a.md", "table2a.tex", "memory.md", "claims.md"
    }
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        for name, text in texts.items():
            (GOLDEN / name).write_text(text)
    for name, text in texts.items():
        assert (tmp_path / "tables" / name).read_text() == text
        golden = GOLDEN / name
        assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
        assert text == golden.read_text(), f"{name} differs from {golden} (UPDATE_GOLDEN=1?)"


def test_output_is_deterministic(tmp_path):
    assert _generate(tmp_path / "a") == _generate(tmp_path / "b")


def test_cells_show_paper_and_ours(tmp_path):
    t1 = _generate(tmp_path)["table1.md"]
    assert "Paper values are the papers' numbers as printed; ours come from records in" in t1
    # two seeds: mean ± sample std; one seed: n=1 and no ±
    # no Δ beside small-scale values: only paper-scale runs are comparable with the paper
    assert "| 81.16 | 41.00 ± 0.35 (n=2, small, cpu) |" in t1
    assert "| 80.86 | 40.50 (n=1, small, cpu) |" in t1
    # a missing cell shows the exact command that fills it
    assert "`python run.py task=swin optim=adamw4bit scale=small seed=0`" in t1
    assert "`python run.py task=transformer optim=solo_4_2bit scale=small seed=0`" in t1
    # only scales with records get a section (llama is smoke-only in the fixtures)
    assert "## scale: small" in t1 and "## scale: smoke" not in t1
    t2a = _generate(tmp_path / "2")["table2a.md"]
    assert "5.18 GB | 5.50 GB (n=1, smoke, H100)" in t2a


def test_no_records_still_lists_commands(tmp_path):
    texts = _generate(tmp_path, records=tmp_path / "nothing", label="results/runs")
    for name in ("table1.md", "table2a.md", "memory.md"):
        assert "## scale: small" in texts[name]
        assert "(n=" not in texts[name]
    assert "`python run.py task=dcn optim=solo_2bit scale=small seed=0`" in texts["table1.md"]
    assert "`python run.py task=llama optim=adabelief32 scale=small seed=0`" in texts["table2a.md"]
    # the medium section is there from the start, each row with the command that fills it
    medium = texts["table2a.md"].split(MEDIUM_TITLE)[1]
    assert "No medium records yet" in medium
    assert "`python run.py task=llama optim=adamw32 scale=medium scale.epochs=0 seed=0`" in medium
    assert "`python run.py task=llama optim=adabelief_solo_4_2bit scale=medium seed=0`" in medium
    assert "| no records |" in texts["claims.md"] and "(n=" not in texts["claims.md"]


def test_scales_are_ordered(tmp_path):
    records = tmp_path / "records"
    for scale in ("paper", "smoke", "small"):
        src = FIXTURES / "small" / "swin" / "adamw32" / "seed0.json"
        rec = json.loads(src.read_text())
        rec["scale"] = scale
        dst = records / scale / "swin" / "adamw32" / "seed0.json"
        dst.parent.mkdir(parents=True)
        dst.write_text(json.dumps(rec))
    t1 = _generate(tmp_path, records=records)["table1.md"]
    positions = [t1.index(f"## scale: {s}") for s in ("smoke", "small", "paper")]
    assert positions == sorted(positions)
    paper_part = t1[positions[2]:]
    assert "(n=1, paper, cpu) Δ " in paper_part and " Δ " not in t1[positions[1]:positions[2]]


# ----------------------------------------------------------------------------- bad records


def _copy_fixtures(tmp_path):
    records = tmp_path / "records"
    shutil.copytree(FIXTURES, records)
    return records


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"task": "swin"}), "missing key(s)"),
        ("BAD_METRIC", "metrics.top1 must be a finite number"),
        ("WRONG_PLACE", "lies at"),
    ],
)
def test_malformed_record_names_the_file(tmp_path, content, message):
    records = _copy_fixtures(tmp_path)
    bad = records / "small" / "swin" / "adamw32" / "seed1.json"
    if content == "BAD_METRIC":
        rec = json.loads(bad.read_text())
        rec["metrics"]["top1"] = "81.2%"
        content = json.dumps(rec)
    elif content == "WRONG_PLACE":
        rec = json.loads(bad.read_text())
        rec["optim"] = "solo_2bit"
        content = json.dumps(rec)
    bad.write_text(content)
    with pytest.raises(mt.RecordError) as err:
        _generate(tmp_path, records=records)
    assert str(bad) in str(err.value) and message in str(err.value)


def test_a_preset_without_a_paper_row_gets_a_row_once_it_has_records(tmp_path):
    records = tmp_path / "records"
    for optim in ("solo_3bit", "adabelief32"):
        rec = json.loads((FIXTURES / "smoke" / "llama" / "solo_4_2bit" / "seed0.json").read_text())
        rec["optim"] = optim
        dst = records / "smoke" / "llama" / optim / "seed0.json"
        dst.parent.mkdir(parents=True)
        dst.write_text(json.dumps(rec))
    t2a = _generate(tmp_path, records=records)["table2a.md"]
    main, adabelief = t2a.split("AdaBelief on LLaMA-7B")
    # its label from the registry, no paper value, in the table of its optimizer family only
    assert "| SOLO 3-bit AdamW | `solo_3bit` | — | 25.50 (n=1, smoke, H100) |" in main
    assert "solo_3bit" not in adabelief and "| 32-bit AdaBelief | `adabelief32` | 40.78 |" in adabelief
    assert "solo_3bit" not in _generate(tmp_path / "none")["table2a.md"]


def test_cli_reports_bad_record_and_imports_neither_hydra_nor_omegaconf(tmp_path):
    records = _copy_fixtures(tmp_path)
    out = tmp_path / "out"
    # runpy in a fresh interpreter so sys.modules shows what the script itself imported
    probe = (
        "import runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf'))\n"
        "print('IMPORTED', bad); sys.exit(code)\n"
    )
    cmd = [
        sys.executable,
        "-c",
        probe,
        "make_tables.py",
        "--records",
        str(records),
        "--paper",
        str(PAPER),
        "--out",
        str(out),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "IMPORTED []" in ok.stdout
    assert (out / "table1.md").exists() and (out / "memory.md").exists()



def test_cli_exits_nonzero_naming_a_bad_record(tmp_path, capsys):
    records = _copy_fixtures(tmp_path)
    bad = records / "small" / "dcn" / "solo_4_2bit" / "seed0.json"
    bad.write_text("[]")
    args = ["--records", str(records), "--paper", str(PAPER), "--out", str(tmp_path / "out")]
    assert mt.main(args) == 2
    assert f"bad record: {bad}: top level must be a JSON object" in capsys.readouterr().err


# ----------------------------------------------------------------------------- helpers

MEDIUM_TITLE = (
    "## scale: medium — SmolLM2-135M-Instruct fine-tuning (not comparable with the paper's LLaMA-7B)"
)
MEDIUM_SCALE_CFG = {
    "name": "medium",
    "pretrained": "data/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "n_train": 2000,
    "epochs": 1,
    "batch_size": 8,
    "max_len": 256,
    "lr": 1e-5,
}


def _record(scale, task, optim, seed, metrics, variant=None, state=4096, steps=300,
            config=None):
    """A valid record (the smoke llama fixture's schema) with the given cell and values."""
    rec = json.loads((FIXTURES / "smoke" / "llama" / "solo_4_2bit" / "seed0.json").read_text())
    rec.update(scale=scale, task=task, optim=optim, seed=seed, variant=variant, metrics=metrics)
    rec["memory"]["state_bytes"] = {"quantized": 0, "full_precision": state, "total": state}
    rec["time"].update(steps=steps, wall_s=600.0 + seed)
    rec["provenance"]["gpu"] = None
    rec["config"].update(config or {})
    return rec


def _write(records, rec, crash=False):
    """Write `rec` where load_records looks for it; `crash`: as a crash note instead."""
    cell = records / rec["scale"] / rec["task"] / rec["optim"] / (rec["variant"] or "")
    cell.mkdir(parents=True, exist_ok=True)
    if crash:
        note = {k: rec[k] for k in ("task", "optim", "scale", "seed", "variant", "provenance",
                                    "config")}
        note.update(crashed_at_step=7, loss="nan")
        (cell / f"crash-seed{rec['seed']}.json").write_text(json.dumps(note))
    else:
        (cell / f"seed{rec['seed']}.json").write_text(json.dumps(rec))


def _medium(optim, seed, mmlu, acc, variant=None, state=4096, steps=300):
    metrics = dict(heldout_acc=acc, heldout_chance=25.0, heldout_acc_add=acc + 1,
                   heldout_acc_compare=acc + 2, heldout_acc_reverse=acc + 3,
                   heldout_acc_capital=acc + 4, mmlu=mmlu, mmlu_n=570, heldout_loss=2.0)
    rec = _record("medium", "llama", optim, seed, metrics, variant, state, steps,
                  config={"scale": MEDIUM_SCALE_CFG})
    rec["memory"]["params"] = 134_515_008
    return rec


def _row(text, label):
    """The cells of the markdown row whose first cell is `label`."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {label} |")]
    return [c.strip() for c in line.strip("|").split("|")]


# ----------------------------------------------------------------------------- medium scale


@pytest.fixture
def medium_tables(tmp_path):
    records = tmp_path / "records"
    _write(records, _medium("adamw32", 0, mmlu=30.0, acc=40.0, variant="epochs=0", state=0,
                            steps=0))
    _write(records, _medium("adamw32", 0, mmlu=32.0, acc=60.0))
    _write(records, _medium("adamw32", 1, mmlu=34.0, acc=62.0))
    _write(records, _medium("solo_4_2bit", 0, mmlu=33.0, acc=61.0, state=1024))
    return _generate(tmp_path, records=records)


def test_medium_section_has_its_own_header(medium_tables):
    t2a = medium_tables["table2a.md"]
    medium = t2a.split(MEDIUM_TITLE)[1]
    header = medium.strip().split("\n\n")[0]
    for fact in ("Model: SmolLM2-135M-Instruct.Q4_1.gguf", "Data: 2000 generated Alpaca-format",
                 "Fine-tuning: 300 steps, batch size 8", "Hardware: cpu (Fixture CPU)",
                 "a fixed 570-question 0-shot subset", "chance 25.0"):
        assert fact in header, fact
    assert "| state memory, 134.5M params (ours) | state memory, LLaMA-7B (paper) |" in medium


def test_medium_pretrained_row_comes_from_the_epochs0_variant(medium_tables):
    medium = medium_tables["table2a.md"].split(MEDIUM_TITLE)[1]
    labels = [ln.split("|")[1].strip() for ln in medium.splitlines() if ln.startswith("| ")][1:]
    assert labels[:3] == ["pretrained", "32-bit AdamW", "16-bit AdamW"]
    assert labels[-2:] == ["32-bit AdaBelief", "SOLO 4/2-bit AdaBelief"]
    pretrained = _row(medium, "pretrained")
    assert pretrained[:4] == ["pretrained", "—", "30.00 (n=1)", "40.00"]
    assert pretrained[8:10] == ["—", "—"]  # no optimizer state; the paper has no number either
    # the fine-tuned adamw32 cell holds its two seeds only, never the pretrained run
    adamw = _row(medium, "32-bit AdamW")
    assert adamw[1:4] == ["`adamw32`", "33.00 ± 1.41 (n=2)", "61.00 ± 1.41"]
    assert adamw[4:10] == ["62.00 ± 1.41", "63.00 ± 1.41", "64.00 ± 1.41", "65.00 ± 1.41",
                           "4.00 KB", "50.24 GB"]
    assert _row(medium, "SOLO 4/2-bit AdamW")[8] == "1.00 KB"
    assert "`python run.py task=llama optim=adamw8bit scale=medium seed=0`" in medium
    assert "scale.epochs=0" not in medium  # the pretrained record exists: no command for it


def test_medium_records_make_no_paper_layout_section(medium_tables):
    t2a = medium_tables["table2a.md"]
    sections = [ln for ln in t2a.splitlines() if "scale: " in ln and ln.startswith("#")]
    # the paper layout falls back to the default scale's commands: medium has none of its own
    assert sections == ["## scale: small", "### scale: small", MEDIUM_TITLE]
    assert "scale=medium" not in t2a.split(MEDIUM_TITLE)[0]
    assert "medium" not in medium_tables["table2a.tex"]
    assert "medium" not in medium_tables["table1.md"]
    memory = medium_tables["memory.md"].split("## scale: medium")[1]
    tasks = {ln.split("|")[1].strip() for ln in memory.splitlines() if ln.startswith("| ")}
    assert tasks == {"task", "llama"}  # medium exists for llama only: no other commands


# ----------------------------------------------------------------------------- claims


def test_verdicts():
    assert mt.verdict([], [1.0, 2.0]) == "no records"
    assert mt.verdict([1.0], [1.0, 2.0]) == "n < 2: no spread"
    assert mt.verdict([1.0, 2.0], [1.5, 2.5]) == "within seed spread"
    assert mt.verdict([1.0, 1.2], [2.0, 2.2]) == "outside seed spread (better)"
    assert mt.verdict([1.0, 1.2], [2.0, 2.2], lower_is_better=True) == "outside seed spread (worse)"
    assert mt.verdict([1.0, 1.2], [0.0, 0.2], lower_is_better=True) == (
        "outside seed spread (better)")


def _claims_records(records):
    def small(optim, seed, task, **metrics):
        _write(records, _record("small", task, optim, seed, metrics))

    for seed, (auc, logloss) in enumerate([(78.0, 0.50), (78.2, 0.51), (78.4, 0.52)]):
        small("adamw32", seed, "dcn", auc=auc, logloss=logloss)
    for seed, (auc, logloss) in enumerate([(78.1, 0.505), (78.3, 0.515)]):
        small("solo_4_2bit", seed, "dcn", auc=auc, logloss=logloss)  # within the spread
    for seed, (auc, logloss) in enumerate([(77.0, 0.45), (77.1, 0.46)]):
        small("solo_2bit", seed, "dcn", auc=auc, logloss=logloss)  # worse auc, better logloss
    small("adamw32", 0, "swin", top1=96.0, top5=99.0)
    small("adamw32", 1, "swin", top1=97.0, top5=99.0)
    small("solo_4_2bit", 0, "swin", top1=96.5, top5=99.0)
    small("adamw4bit", 0, "swin", top1=12.0, top5=50.0)  # diverged
    small("adamw4bit", 1, "swin", top1=97.0, top5=99.0)
    _write(records, _record("small", "swin", "adamw2bit", 0, {}), crash=True)


@pytest.fixture
def claims(tmp_path):
    records = tmp_path / "records"
    _claims_records(records)
    return _generate(tmp_path, records=records)["claims.md"]


def _claim_rows(text, title_start):
    part = text.split(f"## {title_start}")[1].split("\n## ")[0]
    return [[c.strip() for c in ln.strip("|").split("|")]
            for ln in part.splitlines() if ln.startswith("| ") and not ln.startswith("| task")]


def test_claims_header_and_sections(claims):
    assert "scale and hardware come from the records" in claims
    assert "not comparable in absolute value with the paper" in claims
    for title in ("(a) SOLO 4/2-bit", "(b) SOLO 2-bit", "(c) naive 4-bit and 2-bit",
                  "(d) 2-bit AdamW crashes", "(e) SOLO 4/2-bit AdaBelief", "Baselines"):
        assert f"## {title}" in claims


def test_claims_verdicts(claims):
    a = {(r[0], r[2]): r for r in _claim_rows(claims, "(a)")}
    assert a["dcn", "auc"][4:8] == ["78.20 ± 0.20 (n=3)", "78.20 ± 0.14 (n=2)", "+0.00",
                                    "within seed spread"]
    assert a["dcn", "logloss (lower is better)"][7] == "within seed spread"
    assert a["swin", "top1"][4:8] == ["96.50 ± 0.71 (n=2)", "96.50 (n=1)", "+0.00",
                                      "n < 2: no spread"]
    assert a["transformer", "bleu"][4:8] == ["—", "—", "—", "no records"]
    assert a["llama", "mmlu"][1] == "medium" and a["llama", "mmlu"][7] == "no records"
    assert ("swin", "top1_best") not in a  # no record has it
    b = {(r[0], r[2]): r for r in _claim_rows(claims, "(b)")}
    assert b["dcn", "auc"][6:8] == ["-1.15", "outside seed spread (worse)"]
    # logloss: lower is better, so a lower mean outside the spread is better
    assert b["dcn", "logloss (lower is better)"][6:8] == ["-0.05500",
                                                          "outside seed spread (better)"]


def test_claims_flag_diverged_and_crashed_seeds(claims):
    c = {r[3]: r for r in _claim_rows(claims, "(c)") if r[1] == "small"}
    assert c["4-bit AdamW (`adamw4bit`)"][7] == "within seed spread; diverged: seed 0 below 20"
    crashed = c["2-bit AdamW (`adamw2bit`)"]
    assert crashed[5] == "—, 1 crashed"
    assert crashed[7] == "no records; crashed (NaN/inf loss) in 1 seed(s)"


def test_claims_read_a_variant_row_from_its_override_folder_only(tmp_path):
    records = tmp_path / "records"
    hard = "epochs=10,lr=8.0e-3,warmup_steps=0"
    for seed in (0, 1):
        _write(records, _record("small", "swin", "adamw32", seed, dict(top1=97.0 + seed)))
        _write(records, _record("small", "swin", "adamw32", seed, dict(top1=33.0 + seed), hard))
        _write(records, _record("small", "swin", "adamw4bit", seed, dict(top1=10.0), hard))
    rows = {r[1]: r for r in _claim_rows(_generate(tmp_path, records=records)["claims.md"], "(c)")
            if r[3] == "4-bit AdamW (`adamw4bit`)"}
    assert rows[f"small ({hard})"][4] == "33.50 ± 0.71 (n=2)"
    assert rows[f"small ({hard})"][7].startswith("outside seed spread (worse); diverged: seeds 0, 1")
    assert rows["small"][4] == "97.50 ± 0.71 (n=2)" and rows["small"][7] == "no records"
    assert rows["small (epochs=10)"][7] == "no records"


def test_claims_show_top1_best_once_a_record_has_it(tmp_path):
    records = tmp_path / "records"
    _write(records, _record("small", "swin", "adamw32", 0, dict(top1=96.0, top1_best=97.0)))
    _write(records, _record("small", "swin", "solo_2bit", 0, dict(top1=95.0)))
    claims = _generate(tmp_path, records=records)["claims.md"]
    b = {(r[0], r[2]): r for r in _claim_rows(claims, "(b)")}
    assert b["swin", "top1_best"][4:8] == ["97.00 (n=1)", "no value in records", "—",
                                           "no value in records"]


def test_a_claim_with_its_own_baseline_compares_with_that_baseline_only(tmp_path):
    records = tmp_path / "records"
    for seed, (acc, loss) in enumerate([(90.0, 0.10), (92.0, 0.12)]):
        _write(records, _medium("adabelief32", seed, mmlu=25.0, acc=acc))
        _write(records, _medium("adamw32", seed, mmlu=30.0, acc=50.0))  # not the baseline here
        rec = _medium("adabelief_solo_4_2bit", seed, mmlu=26.0, acc=acc + 1.0)
        rec["metrics"]["heldout_loss"] = loss
        _write(records, rec)
    claims = _generate(tmp_path, records=records)["claims.md"]
    assert "| 32-bit AdaBelief (`adabelief32`) | compared |" in claims
    e = {r[2]: r for r in _claim_rows(claims, "(e) SOLO 4/2-bit AdaBelief")}
    assert e["heldout_acc"][4:8] == ["91.00 ± 1.41 (n=2)", "92.00 ± 1.41 (n=2)", "+1.00",
                                     "within seed spread"]
    assert e["mmlu"][6:8] == ["+1.00", "outside seed spread (better)"]
    assert e["heldout_loss (lower is better)"][6:8] == ["-1.8900", "outside seed spread (better)"]
    # the other claims keep adamw32 as their baseline
    a = {(r[0], r[2]): r for r in _claim_rows(claims, "(a)")}
    assert a["llama", "heldout_acc"][4] == "50.00 ± 0.00 (n=2)"
