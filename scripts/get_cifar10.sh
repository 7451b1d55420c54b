#!/usr/bin/env bash
# Fetch the CIFAR-10 test set (10,000 32x32 colour images, 1,000 per class) shipped inside the
# `bigbench` 1.0.0 sdist (bigbench/benchmark_tasks/cifar10_classification/base64/task.json:
# base64 PNGs with one-hot target_scores) to data/cache/cifar10/cifar10_test.npz, for the swin
# runner's small scale. The sdist (358 MB) is only downloaded and read as a stream, never
# installed or unpacked to disk. The cache holds uint8 images (N, 3, 32, 32), int64 labels,
# the class names, the source and the count per class; the train/test split is the loader's
# (experiments/swin/data.py).
#
# CIFAR-10 (Krizhevsky, 2009) has no formal license and is free for research; the bigbench
# package is Apache-2.0. The task file carries BIG-bench's canary string, which asks that the
# file's text not go into language-model training corpora; we train an image classifier on
# the decoded pixels.
#
#   scripts/get_cifar10.sh [DEST]     # pip download, then decode (DEST: from the repo root)
#   BIGBENCH_SDIST=path/bigbench-1.0.0.tar.gz scripts/get_cifar10.sh   # a local copy instead
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=${1:-data/cache/cifar10/cifar10_test.npz}
if [ -s "$DEST" ]; then echo "$DEST already present"; exit 0; fi
SDIST=${BIGBENCH_SDIST:-}
if [ -z "$SDIST" ]; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    bigbench==1.0.0 -d "$TMP"
  SDIST=$(ls "$TMP"/bigbench-1.0.0.tar.gz)
fi
mkdir -p "$(dirname "$DEST")"
"$PY" - "$SDIST" "$DEST" <<'PYEOF'
import base64, io, json, os, sys, tarfile
import numpy as np
from PIL import Image

sdist, dest = sys.argv[1], sys.argv[2]
member = "bigbench-1.0.0/bigbench/benchmark_tasks/cifar10_classification/base64/task.json"
with tarfile.open(sdist, "r|gz") as tar:  # a stream: stop at the one member we need
    for info in tar:
        if info.name == member:
            task = json.load(tar.extractfile(info))
            break
    else:
        sys.exit(f"{member} not in {sdist}")
classes = sorted(task["examples"][0]["target_scores"])  # CIFAR-10's order, alphabetical too
images = np.empty((len(task["examples"]), 3, 32, 32), np.uint8)
labels = np.empty(len(task["examples"]), np.int64)
for i, ex in enumerate(task["examples"]):
    img = Image.open(io.BytesIO(base64.b64decode(ex["input"]))).convert("RGB")
    images[i] = np.asarray(img).transpose(2, 0, 1)
    (target,) = [c for c, s in ex["target_scores"].items() if s == 1]
    labels[i] = classes.index(target)
counts = np.bincount(labels, minlength=len(classes))
with open(dest + ".tmp", "wb") as f:
    np.savez_compressed(f, images=images, labels=labels, classes=np.array(classes),
                        counts=counts, source=np.array(f"bigbench==1.0.0 sdist: {member}"))
os.replace(dest + ".tmp", dest)  # no torn file if interrupted
print("%s: %d images, per class %s, from %s" % (dest, len(labels), counts.tolist(),
                                               os.path.basename(sdist)))
PYEOF
