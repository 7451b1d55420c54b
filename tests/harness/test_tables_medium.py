"""The medium scale (SmolLM2-135M fine-tuning) in table2a.md: a section of its own, the
pretrained model as a row from the zero-epoch variant, no paper-layout section."""

import pytest
from tables_utils import MEDIUM_TITLE, generate, row, write
from tables_utils import medium as medium_record

# ----------------------------------------------------------------------------- medium scale


@pytest.fixture
def medium_tables(tmp_path):
    records = tmp_path / "records"
    write(records, medium_record("adamw32", 0, mmlu=30.0, acc=40.0, variant="epochs=0", state=0,
                            steps=0))
    write(records, medium_record("adamw32", 0, mmlu=32.0, acc=60.0))
    write(records, medium_record("adamw32", 1, mmlu=34.0, acc=62.0))
    write(records, medium_record("solo_4_2bit", 0, mmlu=33.0, acc=61.0, state=1024))
    return generate(tmp_path, records=records)


def test_medium_section_has_its_own_header(medium_tables):
    t2a = medium_tables["table2a.md"]
    medium = t2a.split(MEDIUM_TITLE)[1]
    header = medium.strip().split("\n\n")[0]
    for fact in ("Model: SmolLM2-135M-Instruct.Q4_1.gguf", "Data: 2000 human-written",
                 "Fine-tuning: 300 steps, batch size 8", "Hardware: Fixture.",
                 "fixed subsets of 150 items each (all 0-shot;", "on 200 held-out pairs",
                 "the first 8192 tokens"):
        assert fact in header, fact
    assert "| state memory, 134.5M params (ours) | state memory, LLaMA-7B (paper) |" in medium


def test_medium_header_names_the_shots_the_runs_used():
    """A recipe that names no shots gets the runner's default (5-shot MMLU); runs that differ
    show both numbers rather than one of them."""
    from scripts.table_sections import shots_text

    five = ["mmlu", "arc_e", "arc_c", "obqa", "siqa"]
    assert shots_text([{"benchmarks": five}]) == (
        "mmlu 5-shot, arc_e 0-shot, arc_c 0-shot, obqa 0-shot, siqa 0-shot")
    assert shots_text([{"benchmarks": five, "shots": {"mmlu": 0}}]) == "all 0-shot"
    assert shots_text([{"benchmarks": ["mmlu"]}, {"benchmarks": ["mmlu"], "shots": {"mmlu": 0}}]
                      ) == "all 0/5-shot"
    assert shots_text([{}]) == "—"


def test_medium_pretrained_row_comes_from_the_epochs0_variant(medium_tables):
    medium = medium_tables["table2a.md"].split(MEDIUM_TITLE)[1]
    labels = [ln.split("|")[1].strip() for ln in medium.splitlines() if ln.startswith("| ")][1:]
    assert labels[:3] == ["pretrained", "32-bit AdamW", "16-bit AdamW"]
    assert labels[-2:] == ["32-bit AdaBelief", "SOLO 4/2-bit AdaBelief"]
    pretrained = row(medium, "pretrained")
    assert pretrained[:4] == ["pretrained", "—", "30.00 (n=1)", "40.00"]
    assert pretrained[9:11] == ["—", "—"]  # no optimizer state; the paper has no number either
    # the fine-tuned adamw32 cell holds its two seeds only, never the pretrained run
    adamw = row(medium, "32-bit AdamW")
    assert adamw[1:4] == ["`adamw32`", "33.00 ± 1.41 (n=2)", "61.00 ± 1.41"]
    assert adamw[4:7] == ["62.00 ± 1.41", "63.00 ± 1.41", "64.00 ± 1.41"]
    assert adamw[9:11] == ["4.00 KB", "50.24 GB"]
    assert row(medium, "SOLO 4/2-bit AdamW")[9] == "1.00 KB"
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
