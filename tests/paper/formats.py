"""Synthetic data in the paper runs' real formats, built at test time: miniature stand-ins for
ImageNet, WMT14, Criteo and LLaMA + Alpaca that go through exactly the code paths the real
files do (JPEG decoding with odd colour modes, plain-text parallel corpora, the Kaggle TSV with
blanks and negative counts, a transformers checkpoint with a SentencePiece tokenizer), and tiny
local files for the lm-eval benchmarks."""

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORDS_SRC = ("the house is small and the cat sleeps near the old door while children play in "
             "a green garden under a bright sun").split()
WORDS_TGT = ("das haus ist klein und die katze schläft nahe der alten tür während kinder in "
             "einem grünen garten unter einer hellen sonne spielen").split()


def imagenet_folder(root: Path, classes=("n01440764", "n01443537"), train_per_class=4,
                    val_per_class=2) -> Path:
    """root/{train,val}/<wnid>/*.JPEG: real JPEG files of assorted sizes, RGB except one
    grayscale (mode L) and one CMYK JPEG in train (both occur in ImageNet's train set)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    n = 0
    for split, per in (("train", train_per_class), ("val", val_per_class)):
        for wnid in classes:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(per):
                h, w = int(rng.integers(160, 320)), int(rng.integers(160, 320))
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
                if split == "train" and n == 0:
                    img = img.convert("L")
                elif split == "train" and n == 1:
                    img = img.convert("CMYK")
                img.save(folder / f"{wnid}_{n}.JPEG", "JPEG", quality=85)
                n += 1
    return root


def wmt_folder(root: Path, n_train=24, n_valid=5, n_test=4) -> Path:
    """root/{train,valid,test}.{src,tgt}: one detokenized sentence per line (with
    punctuation and non-ASCII), line i of .src translated by line i of .tgt."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        src, tgt = [], []
        for _ in range(n):
            k = rng.randint(3, 9)
            idx = [rng.randrange(len(WORDS_SRC)) for _ in range(k)]
            src.append(" ".join(WORDS_SRC[i] for i in idx).capitalize() + ".")
            tgt.append(" ".join(WORDS_TGT[i % len(WORDS_TGT)] for i in idx).capitalize() + ".")
        (root / f"{split}.src").write_text("".join(s + "\n" for s in src), encoding="utf-8")
        (root / f"{split}.tgt").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")
    return root


def criteo_tsv(path: Path, rows=140) -> Path:
    """The Kaggle Display Advertising Challenge train.txt: label, 13 integer counts and 26
    categorical 8-digit hex hashes, tab-separated, no header; blanks in both kinds of
    column and negative counts (as in the real file, e.g. I2 = -1). Labels alternate so that
    every split holds both classes."""
    rng = random.Random(0)
    pools = [[f"{rng.getrandbits(32):08x}" for _ in range(4)] for _ in range(26)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(rows):
            ints = ["" if rng.random() < 0.2 else str(rng.choice([-3, -1, 0, 1, 2, 7, 150]))
                    for _ in range(13)]
            cats = ["" if rng.random() < 0.1
                    else (rng.choice(pools[c]) if rng.random() < 0.8
                          else f"{rng.getrandbits(32):08x}")  # rare: below min_count, OOV
                    for c in range(26)]
            f.write("\t".join([str(i % 2), *ints, *cats]) + "\n")
    return path


ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "output": "Eat well, sleep enough and exercise."},
    {"instruction": "Translate the sentence into French.", "input": "The cat sleeps.",
     "output": "Le chat dort."},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Add the two numbers.", "input": "12 and 30", "output": "42"},
]


def alpaca_json(path: Path) -> Path:
    """Stanford Alpaca's alpaca_data.json: a JSON list of {instruction, input, output}."""
    path.write_text(json.dumps(ALPACA, indent=4))
    return path


def llama_folder(root: Path, vocab_size=400) -> Path:
    """A tiny LlamaForCausalLM saved with save_pretrained, and a LLaMA-style SentencePiece
    tokenizer (BPE, byte fallback, <unk>/<s>/</s>, no pad token) trained here, in one folder
    as a LLaMA checkpoint comes."""
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root.mkdir(parents=True, exist_ok=True)
    texts = [" ".join(ex.values()) for ex in ALPACA] + [" ".join(WORDS_SRC), " ".join(WORDS_TGT)]
    texts = texts * 20 + ["Question: Answer: A. B. C. D. Q: A: The following are multiple "
                          "choice questions (with answers) about"] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(root / "tokenizer"),
        vocab_size=vocab_size, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        minloglevel=2)
    # As LLaMA releases come (huggyllama/llama-7b): tokenizer.model and a config naming the
    # class; transformers converts the SentencePiece model when it loads it.
    (root / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    vocab = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model")).vocab_size()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(root)
    return root


def _mc(i: int) -> dict:
    return {"id": f"q{i}", "question": {"stem": f"Which choice is number {i % 4}?",
                                        "choices": [{"text": f"number {j}", "label": "ABCD"[j]}
                                                    for j in range(4)]},
            "answerKey": "ABCD"[i % 4]}


def lm_eval_sources(root: Path, mmlu_subjects=("anatomy", "virology"), per_split=(2, 5)) -> dict:
    """Tiny local files for scripts/prepare_lm_eval.py, in the release formats it documents:
    MMLU as Hendrycks' csv folders (test, dev per subject), ARC and OBQA as AI2's JSONL
    (nested question), SIQA as dev.jsonl + dev-labels.lst. Returns its CLI arguments."""
    import csv

    for split, n in zip(("test", "dev"), per_split):
        (root / "mmlu" / split).mkdir(parents=True, exist_ok=True)
        for subject in mmlu_subjects:
            with open(root / "mmlu" / split / f"{subject}_{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                for i in range(n):
                    w.writerow([f"{subject} question {i}?", "one", "two", "three", "four",
                                "ABCD"[i % 4]])
    for key, name in (("arc_e", "ARC-Easy-Test.jsonl"), ("arc_c", "ARC-Challenge-Test.jsonl"),
                      ("obqa", "test.jsonl")):
        (root / key).mkdir(parents=True, exist_ok=True)
        (root / key / name).write_text("".join(json.dumps(_mc(i)) + "\n" for i in range(3)))
    (root / "siqa").mkdir(parents=True, exist_ok=True)
    (root / "siqa" / "dev.jsonl").write_text("".join(json.dumps(
        {"context": f"Alex met friend {i}.", "question": "How does Alex feel?",
         "answerA": "happy", "answerB": "sad", "answerC": "tired"}) + "\n" for i in range(3)))
    (root / "siqa" / "dev-labels.lst").write_text("1\n2\n3\n")
    return {"--mmlu": root / "mmlu", "--arc-easy": root / "arc_e",
            "--arc-challenge": root / "arc_c", "--obqa": root / "obqa", "--siqa": root / "siqa"}


def prepare(out: Path, sources: dict, *extra) -> subprocess.CompletedProcess:
    """scripts/prepare_lm_eval.py --out OUT with ``sources`` (flag -> path), as a user runs it."""
    args = [str(x) for kv in sources.items() for x in kv]
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_lm_eval.py"),
                           "--out", str(out), *args, *extra], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
