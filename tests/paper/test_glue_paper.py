"""The glue paper path (scale=paper, marker `paper`) end to end: a miniature RoBERTa saved as a
checkpoint folder comes (config, weights, byte-level BPE tokenizer) and miniature GLUE data in
both layouts the runner reads (GLUE's TSV release for six tasks, HF-saved folders for STS-B
and QNLI), all eight tasks of the paper recipe cut to one epoch, in one process and under
torchrun with 2 gloo ranks, each to a complete, validated record."""

import random
from pathlib import Path

import pytest
from test_paper_paths import launch, the_record

from experiments.glue import tasks

pytestmark = [pytest.mark.paper, pytest.mark.timeout(900)]

WORDS = ("a man the woman dog cat plays runs eats sleeps in on park house red green big "
         "small film good bad is was not very").split()
ROWS = {16: 32, 32: 32}  # 32 training rows: 2 steps at batch 16, 1 at batch 32
N_DEV = 5  # odd: the two ranks' shards differ in size


def sentence(rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."


def label(task, rng):
    if task.num_labels == 1:
        return round(rng.uniform(0, 5), 2)
    if task.label_map:
        return rng.choice(sorted(task.label_map))
    return rng.randrange(2)


def tsv(path: Path, task, n: int, rng) -> None:
    """A GLUE TSV of ``task``: its header's columns (CoLA: none; its 4 columns by index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a, b, y = task.columns
    lines = []
    if isinstance(a, int):
        lines = [f"src\t{label(task, rng)}\t\t{sentence(rng)}" for _ in range(n)]
    else:
        header = ["index", a] + ([b] if b else []) + [y]
        lines.append("\t".join(header))
        for i in range(n):
            fields = [str(i), sentence(rng)] + ([sentence(rng)] if b else [])
            lines.append("\t".join(fields + [str(label(task, rng))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def hf_split(path: Path, task, n: int, rng) -> None:
    import datasets

    a, b, y = task.hf_columns
    cols = {a: [sentence(rng) for _ in range(n)], y: []}
    if b:
        cols[b] = [sentence(rng) for _ in range(n)]
    for _ in range(n):
        v = label(task, rng)
        cols[y].append(task.label_map[v] if task.label_map else v)
    datasets.Dataset.from_dict(cols).save_to_disk(str(path))


@pytest.fixture(scope="session")
def synthetic_glue(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("glue"), random.Random(0)
    for name, task in tasks.TASKS.items():
        if name in ("stsb", "qnli"):
            hf_split(root / name / "train", task, 32, rng)
            for _, _, split in task.dev:
                hf_split(root / name / split, task, N_DEV, rng)
        else:
            tsv(root / task.tsv_dir / "train.tsv", task, 32, rng)
            for _, stem, _ in task.dev:
                tsv(root / task.tsv_dir / f"{stem}.tsv", task, N_DEV, rng)
    return root


@pytest.fixture(scope="session")
def synthetic_roberta(tmp_path_factory):
    """A 2-layer RobertaForMaskedLM (as roberta-large comes) and a byte-level BPE tokenizer
    trained here, saved in one folder."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast

    root = tmp_path_factory.mktemp("roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 10, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(root))
    tok = RobertaTokenizerFast(vocab=str(root / "vocab.json"), merges=str(root / "merges.txt"))
    assert tok.unk_token_id not in tok("A man plays.")["input_ids"]
    tok.save_pretrained(str(root))
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    RobertaForMaskedLM(config).save_pretrained(str(root))
    return root


@pytest.mark.parametrize("ranks", [1, 2])
def test_roberta_on_the_eight_glue_tasks(tmp_path, synthetic_glue, synthetic_roberta, ranks):
    # The paper recipe's eight tasks at their own batch sizes (16: 2 steps, 32: 1 step), one
    # epoch each: 4 x 2 + 4 x 1 steps.
    out, recs = launch(tmp_path, ranks, "task=glue", "optim=solo_4_2bit", "scale.epochs=1",
                       f"task.data_dir={synthetic_glue}", f"task.model_path={synthetic_roberta}")
    rec = the_record(out, recs, ranks, steps=12)
    m = rec["metrics"]
    names = list(tasks.TASKS)
    for name in names + ["mnli_mm", "qqp_f1", "mrpc_acc", "stsb_pearson", "stsb_spearman"]:
        assert -100 <= m[name] <= 100, name
    assert m["glue_avg"] == pytest.approx(sum(m[n] for n in names) / 8)
    # the tiny model's parameters in 4-bit/2-bit states: well under its fp32 bytes
    assert 0 < rec["memory"]["state_bytes"]["total"] < 2e6
