"""A generated Alpaca-format dataset whose answers can be learned (the llama runner's smoke
and small scales), four kinds of question:

- add:     "What is 37 + 45?" -> "82" (held-out: number pairs never trained on)
- compare: "Which number is larger: 37 or 45?" -> "45" (held-out: unseen pairs)
- reverse: "Reverse the order of the letters." / "k o b" -> "b o k" (held-out: unseen strings)
- capital: a fixed table of facts, asked with five phrasings; each country's held-out question
  is one phrasing never trained on, so a right answer needs the fact learned from the others.
Held-out questions are multiple choice (the answer plus three distractors, chance 25%).
"""

import random

DATA_SEED = 20250502  # the dataset is fixed, whatever the run seed

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw", "Greece": "Athens",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Hungary": "Budapest", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Ukraine": "Kyiv", "Turkey": "Ankara",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja", "Ghana": "Accra",
    "Morocco": "Rabat", "Japan": "Tokyo", "China": "Beijing", "India": "Delhi",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Iran": "Tehran",
    "Iraq": "Baghdad", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Argentina": "Buenos Aires",
    "Australia": "Canberra",
}
CAPITAL_TEMPLATES = [  # (instruction, input); {c} is the country
    ("What is the capital of {c}?", ""),
    ("Name the capital city of the country below.", "{c}"),
    ("{c} has its capital in which city?", ""),
    ("Which city is the capital of {c}?", ""),
    ("Give the capital of this country.", "{c}"),
]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _distinct(rng: random.Random, answer: str, pool: list[str], k: int = 3) -> list[str]:
    """`answer` plus k distinct distractors from pool, shuffled; returns (choices, gold)."""
    others = sorted(set(pool) - {answer})
    while len(others) < k:  # rare collisions (e.g. a palindrome): pad with a marked variant
        others.append(f"{answer} {len(others)}")
    choices = rng.sample(others, k) + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _add(a, b):
    return {"kind": "add", "instruction": f"What is {a} + {b}?", "input": "", "output": str(a + b)}


def _compare(a, b):
    return {"kind": "compare", "instruction": f"Which number is larger: {a} or {b}?", "input": "",
            "output": str(max(a, b))}


def _reverse(word):
    return {"kind": "reverse", "instruction": "Reverse the order of the letters.",
            "input": " ".join(word), "output": " ".join(reversed(word))}


def _capital(country, template):
    instruction, inp = CAPITAL_TEMPLATES[template]
    return {"kind": "capital", "instruction": instruction.format(c=country),
            "input": inp.format(c=country), "output": CAPITALS[country]}


def generate(n_train: int, n_heldout: int, seed: int = DATA_SEED) -> tuple[list, list]:
    """(train, heldout), both lists of Alpaca records (instruction, input, output, kind);
    held-out records add `choices` and `gold`. Deterministic in (n_train, n_heldout, seed);
    no held-out question text appears in train.

    n_heldout is split evenly over add/compare/reverse; capital adds one question per country
    (at most n_heldout // 3 countries). Train mixes the kinds 3:2:2:1 (add:compare:reverse:
    capital); capital facts repeat, since a lookup table is only learned by seeing it often."""
    rng = random.Random(seed)
    per = n_heldout // 3
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(pairs)
    words = sorted({"".join(rng.choice(LETTERS) for _ in range(rng.choice((3, 4, 5))))
                    for _ in range(20000)})
    rng.shuffle(words)
    countries = sorted(CAPITALS)[: max(1, per)]

    heldout = []
    for a, b in pairs[:per]:
        ex = _add(a, b)
        s = a + b
        ex["choices"], ex["gold"] = _distinct(rng, str(s), [str(s + d) for d in
                                                            (-11, -10, -9, -1, 1, 9, 10, 11)])
        heldout.append(ex)
    distinct_pairs = [(a, b) for a, b in pairs[per:] if a != b]  # "larger of 20 or 20?" no
    for a, b in distinct_pairs[:per]:
        ex = _compare(a, b)
        ex["choices"], ex["gold"] = _distinct(rng, ex["output"],
                                              [str(min(a, b)), str(a + b), str(max(a, b) + 1),
                                               str(max(a, b) - 1), str(min(a, b) + 1)])
        heldout.append(ex)
    for w in words[:per]:
        ex = _reverse(w)
        shuffled = list(w)
        rng.shuffle(shuffled)
        swap = list(reversed(w))
        swap[0] = LETTERS[(LETTERS.index(swap[0]) + 1) % 26]
        pool = [" ".join(w), " ".join(shuffled), " ".join(swap), " ".join(sorted(w))]
        ex["choices"], ex["gold"] = _distinct(rng, ex["output"],
                                              pool + [" ".join(reversed(sorted(w)))])
        heldout.append(ex)
    held_template = {c: rng.randrange(len(CAPITAL_TEMPLATES)) for c in countries}
    for c in countries:
        ex = _capital(c, held_template[c])
        ex["choices"], ex["gold"] = _distinct(rng, CAPITALS[c], list(CAPITALS.values()))
        heldout.append(ex)

    # Training pools exclude every held-out question (pairs/words) or phrasing (capitals).
    add_pairs, compare_pairs = pairs[per:], distinct_pairs[per:]
    train_words = words[per:]
    train_capitals = [(c, t) for c in sorted(CAPITALS) for t in range(len(CAPITAL_TEMPLATES))
                      if held_template.get(c) != t]
    weights = (("add", 3), ("compare", 2), ("reverse", 2), ("capital", 1))
    total_w = sum(w for _, w in weights)
    train = []
    for kind, w in weights:
        n = n_train * w // total_w
        if kind == "add":
            train += [_add(*p) for p in add_pairs[:n]]
        elif kind == "compare":
            train += [_compare(*p) for p in compare_pairs[-n:]]
        elif kind == "reverse":
            train += [_reverse(x) for x in train_words[:n]]
        else:
            train += [_capital(*train_capitals[i % len(train_capitals)]) for i in range(n)]
    rng.shuffle(train)
    return train, heldout
