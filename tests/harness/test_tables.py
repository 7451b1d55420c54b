"""`make tables`: paper numbers as data, fixture records -> golden markdown/LaTeX, bad records.
The medium-scale section: test_tables_medium.py; claims.md: test_tables_claims.py; the committed
tables: test_tables_committed.py.

Regenerate the golden files after an intended layout change with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/harness/test_tables.py
and review the diff.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from tables_utils import FIXTURES, GOLDEN, MEDIUM_TITLE, PAPER, SCRIPT, generate, mt


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


def test_fixture_tables_match_golden(tmp_path):
    texts = generate(tmp_path)
    assert set(texts) == {"table1.md", "table1.tex", "table2a.md", "table2a.tex", "memory.md",
                          "claims.md", "claims_summary.md", "headroom.md"}
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
    assert generate(tmp_path / "a") == generate(tmp_path / "b")


def test_cells_show_paper_and_ours(tmp_path):
    t1 = generate(tmp_path)["table1.md"]
    assert "Paper values are the papers' numbers as printed; ours come from records in" in t1
    # two seeds: mean ± sample std; one seed: n=1 and no ±
    # no Δ beside small-scale values: only paper-scale runs are comparable with the paper
    assert "| 81.16 | 41.00 ± 0.35 (n=2, small, Fixture) |" in t1
    assert "| 80.86 | 40.50 (n=1, small, Fixture) |" in t1
    # a missing cell shows the exact command that fills it
    assert "`python run.py task=swin optim=adamw4bit scale=small seed=0`" in t1
    assert "`python run.py task=transformer optim=solo_4_2bit scale=small seed=0`" in t1
    # only scales with records get a section (llama is smoke-only in the fixtures)
    assert "## scale: small" in t1 and "## scale: smoke" not in t1
    t2a = generate(tmp_path / "2")["table2a.md"]
    assert "5.18 GB | 5.50 GB (n=1, smoke, H100)" in t2a


def test_no_records_still_lists_commands(tmp_path):
    texts = generate(tmp_path, records=tmp_path / "nothing", label="results/runs")
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
    assert "no records: `python run.py task=dcn optim=solo_2bit scale=small seed=0`" in (
        texts["claims.md"])
    assert "(n=" not in texts["claims.md"]


def test_scales_are_ordered(tmp_path):
    records = tmp_path / "records"
    for scale in ("paper", "smoke", "small"):
        src = FIXTURES / "small" / "swin" / "adamw32" / "seed0.json"
        rec = json.loads(src.read_text())
        rec["scale"] = scale
        dst = records / scale / "swin" / "adamw32" / "seed0.json"
        dst.parent.mkdir(parents=True)
        dst.write_text(json.dumps(rec))
    t1 = generate(tmp_path, records=records)["table1.md"]
    positions = [t1.index(f"## scale: {s}") for s in ("smoke", "small", "paper")]
    assert positions == sorted(positions)
    paper_part = t1[positions[2]:]
    assert "(n=1, paper, Fixture) Δ " in paper_part and " Δ " not in t1[positions[1]:positions[2]]


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
        generate(tmp_path, records=records)
    assert str(bad) in str(err.value) and message in str(err.value)


def test_a_preset_without_a_paper_row_gets_a_row_once_it_has_records(tmp_path):
    records = tmp_path / "records"
    for optim in ("solo_3bit", "adabelief32"):
        rec = json.loads((FIXTURES / "smoke" / "llama" / "solo_4_2bit" / "seed0.json").read_text())
        rec["optim"] = optim
        dst = records / "smoke" / "llama" / optim / "seed0.json"
        dst.parent.mkdir(parents=True)
        dst.write_text(json.dumps(rec))
    t2a = generate(tmp_path, records=records)["table2a.md"]
    main, adabelief = t2a.split("AdaBelief on LLaMA-7B")
    # its label from the registry, no paper value, in the table of its optimizer family only
    assert "| SOLO 3-bit AdamW | `solo_3bit` | — | 25.50 (n=1, smoke, H100) |" in main
    assert "solo_3bit" not in adabelief and "| 32-bit AdaBelief | `adabelief32` | 40.78 |" in adabelief
    assert "solo_3bit" not in generate(tmp_path / "none")["table2a.md"]


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
