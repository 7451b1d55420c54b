"""Parallel text for the transformer runner: where the sentence pairs come from, the joint BPE,
and token-budget batches.

- smoke: synthetic pairs (a digit string -> the same digits reversed), seconds.
- small: German-English sentence pairs from Debian's Ding dictionary (`trans-de-en`).
- paper: user-given plain-text files DIR/{train,valid,test}.{src,tgt}, one sentence per line.
"""

import hashlib
import random
import re
from pathlib import Path

import torch

from experiments.cache import cached_build
from experiments.datacheck import BadData, require_file
from experiments.errors import DataNotFound
from experiments.training import epoch_order

DING_PATH = Path("/usr/share/trans/de-en")
DING_SPLIT_SEED = 20250502  # the train/valid/test split is fixed, independent of the run seed
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, in this order

# ---------------------------------------------------------------- the Ding dictionary

_ANNOTATION = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")  # {pl}, {vt}, [Br.], [coll.] ...


def _clean(text: str) -> str:
    return " ".join(_ANNOTATION.sub("", text).split())


def _is_sentence(text: str) -> bool:
    return text[-1:] in ".?!"


def parse_ding(lines) -> list[tuple[str, str]]:
    """Full German-English sentence pairs from Ding lines `de | de ... :: en | en ...`.

    The ` | ` parts of the two sides correspond one to one (a headword, then its forms and
    examples); lines whose sides have different numbers of parts are skipped, since their
    alignment is unknown. Editorial marks ({f}, [Br.]) are dropped; a pair is kept when both
    sides end in . ? ! and the German one has 4+ words (so "Ist das Ihr Ernst?" -> "Are you
    serious?" stays, headword phrases go). Exact duplicates are dropped, the first kept.
    """
    pairs, seen = [], set()
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("#") or line.count(" :: ") != 1:
            continue
        de, en = line.split(" :: ")
        de_parts, en_parts = de.split(" | "), en.split(" | ")
        if len(de_parts) != len(en_parts):
            continue
        for d, e in zip(de_parts, en_parts):
            d, e = _clean(d), _clean(e)
            keep = len(d.split()) >= 4 and _is_sentence(d) and _is_sentence(e)
            if keep and (d, e) not in seen:
                seen.add((d, e))
                pairs.append((d, e))
    return pairs


def load_ding(path: Path = DING_PATH, n_valid: int = 1000, n_test: int = 1000):
    """{train, valid, test}: lists of (de, en), a fixed shuffle of the deduplicated pairs."""
    path = Path(path)
    if not path.exists():
        raise DataNotFound(
            f"German-English dictionary not found at {path}. Install Debian's Ding dictionary: "
            "`apt-get install trans-de-en` (as root; `make setup` does it)."
        )
    require_file(path, "German-English dictionary", "give task.ding_path=FILE, Ding's de-en "
                 "file (`apt-get install trans-de-en` installs it at /usr/share/trans/de-en)")
    try:
        with open(path, encoding="utf-8") as f:
            pairs = parse_ding(f)
    except UnicodeDecodeError as e:
        raise BadData(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); give "
                      "task.ding_path=FILE, Ding's de-en file") from None
    random.Random(DING_SPLIT_SEED).shuffle(pairs)
    return {"valid": pairs[:n_valid], "test": pairs[n_valid : n_valid + n_test],
            "train": pairs[n_valid + n_test :]}


# ---------------------------------------------------------------- other sources


def synthetic(n_train: int, n_valid: int, n_test: int, max_digits: int = 8):
    """Smoke data, labelled as such: a random digit string and the same digits reversed."""
    rng = random.Random(1234)

    def pair():
        digits = [str(rng.randrange(10)) for _ in range(rng.randint(2, max_digits))]
        return " ".join(digits), " ".join(reversed(digits))

    pairs = [pair() for _ in range(n_train + n_valid + n_test)]
    return {"train": pairs[:n_train], "valid": pairs[n_train : n_train + n_valid],
            "test": pairs[n_train + n_valid :]}


FOLDER_FIX = ("give task.data_dir=DIR holding train/valid/test .src and .tgt files, one "
              "detokenized sentence per line, line i of .src translating line i of .tgt")


def load_folder(data_dir) -> dict:
    """DIR/{train,valid,test}.{src,tgt}: plain UTF-8 text, one sentence per line, line i of .src
    translating line i of .tgt (e.g. WMT14 en-de or IWSLT14 de-en, detokenized). BadData names
    a file that is empty, a folder or not UTF-8, and a pair of files of different lengths."""
    root = Path(data_dir) if data_dir else None
    splits = {}
    for split in ("train", "valid", "test"):
        files = [root / f"{split}.{side}" if root else None for side in ("src", "tgt")]
        for f in files:
            if f is None or not f.exists():
                raise DataNotFound(
                    f"parallel text not found: {f or 'task.data_dir=null'}. Give task.data_dir=DIR "
                    "holding train/valid/test .src and .tgt files, one detokenized sentence per "
                    "line (e.g. WMT14 en-de from https://www.statmt.org/wmt14/translation-task.html"
                    " with newstest2013 as valid and newstest2014 as test)."
                )
            require_file(f, "parallel text", FOLDER_FIX)
        try:
            src, tgt = (f.read_text(encoding="utf-8").splitlines() for f in files)
        except UnicodeDecodeError as e:
            raise BadData(f"{root}/{split}.src or .tgt is not UTF-8 text ({e.reason} at byte "
                          f"{e.start}); {FOLDER_FIX}") from None
        if len(src) != len(tgt):
            raise BadData(f"{files[0]} has {len(src)} lines but {files[1]} has {len(tgt)}; "
                          f"{FOLDER_FIX}")
        splits[split] = list(zip(src, tgt))
    return splits


def check_splits(splits: dict, where) -> dict:
    """``splits`` when train, valid and test each hold a sentence pair, else BadData."""
    for name in ("train", "valid", "test"):
        if not splits[name]:
            raise BadData(f"{where} gives no {name} sentence pairs; give more data"
                          + (" or smaller scale.n_valid / scale.n_test" if name == "train"
                             else ""))
    return splits


def check_batches(n_batches: int, per_step: int, where) -> None:
    """Refuse training data whose token batches cannot fill one optimizer step (0 steps)."""
    if n_batches < per_step:
        raise BadData(f"{where} gives {n_batches} training batches, fewer than one step takes "
                      f"({per_step}: ranks x accumulation); give more data or a smaller "
                      "scale.max_tokens")


# ---------------------------------------------------------------- the joint BPE


def train_bpe(pairs, vocab_size: int, cache_dir):
    """A joint source+target byte-pair encoding (HF tokenizers), trained on the training pairs
    and cached in cache_dir under a hash of (text, vocab size): a resumed or repeated run loads
    the same one (experiments.cache: built once, never read half-written). Metaspace
    pre-tokenization (SentencePiece-style '▁' word marks) makes decoding give back the
    detokenized text SacreBLEU wants."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    h = hashlib.sha256(f"{vocab_size}\n".encode())
    for s, t in pairs:
        h.update(f"{s}\t{t}\n".encode())
    key = {"vocab_size": vocab_size, "pairs_sha256": h.hexdigest(), "format": 1}

    def build(out: Path) -> None:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                      show_progress=False)
        tok.train_from_iterator((s for pair in pairs for s in pair), trainer=trainer)
        tok.save(str(out / "bpe.json"))

    folder = cached_build(Path(cache_dir) / f"bpe-{vocab_size}-{h.hexdigest()[:16]}", key, build)
    return Tokenizer.from_file(str(folder / "bpe.json"))


def encode(tok, pairs, max_len: int | None = None):
    """(source ids + EOS, target ids) per pair, truncated to max_len tokens per side."""
    src = tok.encode_batch([s for s, _ in pairs])
    tgt = tok.encode_batch([t for _, t in pairs])
    cut = max_len or 10**9
    return [(a.ids[: cut - 1] + [EOS], b.ids[: cut - 1]) for a, b in zip(src, tgt)]


# ---------------------------------------------------------------- batching


def token_batches(lengths, max_tokens: int) -> list[list[int]]:
    """Index batches of similar-length pairs, each at most max_tokens padded tokens
    (sentences x longest side + 1 for BOS/EOS, fairseq's rule), from a length sort (ties: index).
    Fixed for a data set; the runner shuffles their order per epoch."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, cur, longest = [], [], 0
    for i in order:
        size = lengths[i]
        if cur and max(longest, size) * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, size)
    if cur:
        batches.append(cur)
    return batches


def pair_lengths(encoded) -> list[int]:
    """The padded length a pair needs: its longer side (the target gets BOS/EOS, +1)."""
    return [max(len(s), len(t) + 1) for s, t in encoded]


def pad_batch(seqs, device) -> torch.Tensor:
    """Lists of ids -> a (batch, longest) tensor, right-padded with PAD."""
    tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True,
                                           padding_value=PAD).to(device)


def collate(encoded, idx, device):
    """Padded (src, tgt_in, tgt_out) tensors: tgt_in = BOS + target, tgt_out = target + EOS."""
    tgt = [encoded[i][1] for i in idx]
    return (pad_batch([encoded[i][0] for i in idx], device),
            pad_batch([[BOS] + t for t in tgt], device),
            pad_batch([t + [EOS] for t in tgt], device))


def load_splits(cfg, hp) -> dict:
    """{train, valid, test} pairs of the source scale.data names, each split non-empty."""
    if hp.data == "synthetic":
        return check_splits(synthetic(hp.n_train, hp.n_valid, hp.n_test), "scale.n_train")
    if hp.data == "ding":
        path = cfg.task.get("ding_path") or DING_PATH
        return check_splits(load_ding(path, hp.n_valid, hp.n_test), path)
    return check_splits(load_folder(cfg.task.data_dir), cfg.task.data_dir)


def train_batches(batches, seed: int, epoch: int, start: int, rank: int, world: int,
                  accum: int = 1):
    """The epoch's token-budget batches from step `start` on, in an order drawn from
    (seed, epoch) alone, so resuming mid-epoch is exact. A global step is world x accum
    batches; yields (this rank's `accum` micro-batches, all the step's batches): every rank
    can count the global batch's tokens without a collective."""
    order = epoch_order(len(batches), seed, epoch).tolist()
    per_step = world * accum
    for step in range(start, len(batches) // per_step):
        everyone = [batches[j] for j in order[step * per_step : (step + 1) * per_step]]
        yield everyone[rank::world], everyone


def target_tokens(encoded, batches) -> int:
    """The loss's tokens in `batches`: each target plus its EOS (tgt_out without padding)."""
    return sum(len(encoded[i][1]) + 1 for idx in batches for i in idx)
