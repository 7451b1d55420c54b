"""The medium scale's instruction data (experiments.llama.sharegpt): ShareGPT's truncated JSON
read record by record, first turns cleaned, a split fixed by the pairs' ids; and the runner's
loss counting response tokens only."""

import json

import pytest
import torch

from experiments import errors
from experiments.datacheck import BadData
from experiments.llama import data, sharegpt
from experiments.llama import run as llama_run


def conversation(id_, human, gpt, first="human"):
    second = "gpt" if first == "human" else "human"
    return {"id": id_, "conversations": [{"from": first, "value": human},
                                         {"from": second, "value": gpt}]}


ENGLISH = [conversation(f"c{i}_0", f"Write a short note about the topic number {i} for me.",
                        f"Here is a short note about topic {i}: it is one of the things that "
                        "you can read about.") for i in range(12)]
OTHERS = [
    conversation("cont_1", "Please continue with the rest of the story.", "And then the end."),
    conversation("gptfirst_0", "Hello, what can I do for you today?", "Write a poem.",
                 first="gpt"),
    conversation("korean_0", "한국어로 짧은 이야기를 써 주세요 부탁합니다", "옛날 옛적에 작은 마을이 있었습니다."),
    conversation("spanish_0", "Escribe una historia corta sobre un perro y un gato.",
                 "Había una vez un perro que vivía con un gato en una casa grande."),
    conversation("short_0", "hi", "Hello! How can I help you today?"),
    conversation("blank_0", "Write an HTTP server in the C language", "\u200b"),
    conversation("dup_0", "  WRITE a short note about the topic number 3 for me. ", "Sure, it is."),
]


def truncated_json(records) -> str:
    """ShareGPT's layout, cut off in the middle of the last record as in the wheel."""
    text = json.dumps(records, indent=2)
    return text[: text.rindex('"value"') + 12]


def test_records_reads_complete_records_and_drops_the_cut_off_one():
    text = truncated_json(ENGLISH + OTHERS)
    got = [r for r, _ in sharegpt.records(text)]
    assert got == (ENGLISH + OTHERS)[:-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # not JSON as a whole: read record by record
    assert [r for r, _ in sharegpt.records(json.dumps(ENGLISH))] == ENGLISH  # an intact list


def test_extract_keeps_english_first_turns_once(tmp_path):
    src = tmp_path / "sharegpt.json"
    src.write_text(truncated_json(ENGLISH + OTHERS + ENGLISH[:1]))
    counts = sharegpt.extract(src, tmp_path / "out" / "pairs.jsonl")
    pairs = [json.loads(x) for x in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pairs] == [c["id"] for c in ENGLISH]
    assert pairs[0] == {"id": "c0_0", "instruction": ENGLISH[0]["conversations"][0]["value"],
                        "input": "", "output": ENGLISH[0]["conversations"][1]["value"]}
    assert counts["records"] == len(ENGLISH + OTHERS) and counts["chars_left"] > 0
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_split_is_fixed_by_the_ids_and_disjoint(tmp_path):
    pairs = [sharegpt.first_turn(c) for c in ENGLISH]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    b.write_text("".join(json.dumps(p) + "\n" for p in reversed(pairs)))
    assert sharegpt.load(a) == sharegpt.load(b)  # the file's order does not matter
    everyone = lambda ex: True  # noqa: E731
    train, held = sharegpt.select(sharegpt.load(a), 6, 4, everyone)
    assert len(train) == 6 and len(held) == 4
    assert not {p["id"] for p in train} & {p["id"] for p in held}
    # held out pairs do not depend on how many train, and skipped pairs go to neither side
    assert sharegpt.select(sharegpt.load(a), 2, 4, everyone)[1] == held
    skip = held[0]["id"]
    train2, held2 = sharegpt.select(sharegpt.load(a), 6, 4, lambda ex: ex["id"] != skip)
    assert skip not in {p["id"] for p in train2 + held2} and held2[:3] == held[1:]
    with pytest.raises(BadData, match="only 12 of 12 instruction pairs fit max_len"):
        sharegpt.select(sharegpt.load(a), 10, 4, everyone)
    with pytest.raises(errors.DataNotFound, match="get_instructions.sh"):
        sharegpt.load(tmp_path / "none.jsonl")


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_the_runners_loss_counts_response_tokens_only(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [p["instruction"] + p["output"] for p in map(sharegpt.first_turn, ENGLISH)]
    tok = data.train_tokenizer(texts, 300, tmp_path / "tok")
    tok.chat_template = CHAT_TEMPLATE
    prompt_of = data.prompt_function("chat", tok)
    examples = [sharegpt.first_turn(c) for c in ENGLISH[:2]]
    enc = [data.encode(ex, tok, 512, prompt_of) for ex in examples]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    loss_of = llama_run.response_loss(model, tok.pad_token_id, torch.autocast("cpu",
                                      enabled=False), torch.device("cpu"))
    total, n = loss_of(enc)
    by_hand, count = 0.0, 0
    for ex, (ids, _) in zip(examples, enc):
        start = len(tok(prompt_of(ex))["input_ids"])  # the response's first token
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        by_hand += torch.nn.functional.cross_entropy(
            logits[start - 1 : len(ids) - 1], torch.tensor(ids[start:]), reduction="sum")
        count += len(ids) - start
        assert tok.decode(ids[start:]) == ex["output"] + tok.eos_token
    assert n == count
    torch.testing.assert_close(total, by_hand, rtol=1e-4, atol=1e-4)
