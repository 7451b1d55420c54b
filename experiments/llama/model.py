"""LLaMA's model, tokenizer and instruction data: a small LlamaConfig from scratch with a
byte-level BPE trained on the generated prompts (smoke, small), a pretrained Llama-architecture
GGUF with its own tokenizer on ShareGPT's human-written instructions (medium:
SmolLM2-135M-Instruct), or a local LLaMA checkpoint on an Alpaca JSON (paper)."""

from pathlib import Path

import torch
from omegaconf import OmegaConf

from experiments.datacheck import require_rows
from experiments.errors import DataNotFound
from experiments.llama import data, generated, sharegpt

ROOT = Path(__file__).resolve().parents[2]


def check_paths(cfg) -> None:
    """Raise DataNotFound unless the paper-scale checkpoint folder and Alpaca JSON exist."""
    for key, what in (("model_path", "a local LLaMA checkpoint folder (config.json, weights, "
                                     "tokenizer), e.g. from `huggingface-cli download "
                                     "huggyllama/llama-7b --local-dir DIR`"),
                      ("data_path", "the Alpaca JSON, e.g. alpaca_data.json from "
                                    "github.com/tatsu-lab/stanford_alpaca")):
        path = cfg.task.get(key)
        if not path or not Path(path).exists():
            raise DataNotFound(f"task.{key}={path!r} does not exist; give {what}: "
                               f"`python run.py task=llama scale=paper task.{key}=PATH`")


def build(cfg, hp, run_dir: Path):
    """(model, tokenizer, train records, held-out records or None)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if hp.data == "generated":
        train, heldout = generated.generate(hp.n_train, hp.n_heldout)
        require_rows(len(train), hp.batch_size, "records", "the generated data (scale.n_train)")
        # The tokenizer sees training text only; byte-level BPE still encodes anything.
        texts = [data.format_prompt(ex) + ex["output"] for ex in train]
        tokenizer = data.train_tokenizer(texts, hp.vocab_size, run_dir / "tokenizer")
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                             **OmegaConf.to_container(hp.model))
        model = LlamaForCausalLM(config)
        return model, tokenizer, train, heldout

    if hp.data == "sharegpt":  # medium: a pretrained model brings its own tokenizer
        pairs = sharegpt.load(ROOT / hp.get("data_path", sharegpt.DEFAULT_PATH))
        model, tokenizer = load_gguf(hp.pretrained)
        prompt_of = data.prompt_function(hp.get("prompt", "alpaca"), tokenizer)
        train, heldout = sharegpt.select(pairs, hp.n_train, hp.n_heldout, lambda ex: len(
            data.encode(ex, tokenizer, hp.max_len + 1, prompt_of)[0]) <= hp.max_len)
        require_rows(len(train), hp.batch_size, "records", "the instruction pairs (n_train)")
        return model, tokenizer, train, heldout

    # paper scale: user-given checkpoint and Alpaca JSON, the data checked before the model
    # loads (minutes for 7B)
    check_paths(cfg)
    train = data.load_alpaca(Path(cfg.task.data_path))
    require_rows(len(train), hp.batch_size, "records", cfg.task.data_path)
    tokenizer = AutoTokenizer.from_pretrained(cfg.task.model_path)
    # fp32 master weights; bf16 compute through autocast (or FSDP2's mixed precision)
    model = LlamaForCausalLM.from_pretrained(cfg.task.model_path, dtype=torch.float32)
    if tokenizer.pad_token is None:  # LLaMA has none
        add_pad_token(tokenizer, model)
    return model, tokenizer, train, None


def load_gguf(path):
    """(LlamaForCausalLM in fp32, its tokenizer) from a GGUF file (relative paths: to the
    repository root); transformers dequantizes the weights with the `gguf` package."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path) if Path(path).is_absolute() else ROOT / path
    if not path.exists():
        raise DataNotFound(f"{path} does not exist; fetch it with `scripts/get_smollm2.sh` "
                           "(`make setup` does)")
    kw = dict(gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    # The weights are plain fp32 tensors now, but transformers keeps the GGUF quantizer on the
    # model and refuses save_pretrained (which lm-eval's copy needs): drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        add_pad_token(tokenizer, model)
    return model, tokenizer


def add_pad_token(tokenizer, model, token: str = "[PAD]") -> None:
    """Alpaca's pad token (tatsu-lab/stanford_alpaca train.py, smart_tokenizer_and_embedding_
    resize): a new special token whose input and output embedding rows start at the mean of
    the existing rows. Padding is masked out of attention and loss, but the extra output row
    takes part in every softmax, so reusing unk would not be the same recipe."""
    tokenizer.add_special_tokens({"pad_token": token})
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)
