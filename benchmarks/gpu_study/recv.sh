#!/usr/bin/env bash
# On the GPU machine: keep each transferred part outside the repository copy, in /tmp/carry, which
# lasts only while the machine stays warm. One call per part, e.g. with carry [".parts/c2"]:
#   bash benchmarks/gpu_study/recv.sh .parts/c2
# The part's sha256 is checked as soon as it arrives.
set -euo pipefail
CARRY=${CARRY:-/tmp/carry}
mkdir -p "$CARRY"
for d in "$@"; do
  [ -d "$d" ] || { echo "recv: missing $d (was it named in carry?)"; exit 1; }
  cp -f "$d"/* "$CARRY"/
  for p in "$d"/bundle.part*; do
    (cd "$CARRY" && grep " $(basename "$p")\$" SHA256SUMS | sha256sum -c --quiet) \
      || { echo "recv: $(basename "$p") is damaged: send it again"; exit 1; }
  done
done
cd "$CARRY"
echo "recv: $(ls bundle.part* | wc -l) of $(wc -l < SHA256SUMS) parts in $CARRY ($(du -sh . | cut -f1))"
