#!/usr/bin/env bash
# On the GPU machine, once every part is in /tmp/carry (recv.sh): verify the parts' sha256, unpack the
# bundle to /tmp/v (site/, quant-site/, tools/, data/, model/), then check that it works:
#   import vllm, lm_eval (site/), import llmcompressor (quant-site/ first, in its own process),
#   `python3 -m lm_eval_ruler --version` from the checkout, py-spy. Installs nothing else.
#
#   bash benchmarks/gpu_study/install.sh && source benchmarks/gpu_study/env.sh
#   PARTIAL=1 bash benchmarks/gpu_study/install.sh   # before the last part: unpack what is there and
#                                                    # check what is complete (site/ comes first)
# Exit 0 when everything it could check works.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CARRY=${CARRY:-/tmp/carry}
V=${GPU_STUDY_BUNDLE:-/tmp/v}
ORDER=(site quant-site tools data model)   # the tar's order (bundle.sh)
fail=0
cd "$CARRY" 2>/dev/null || { echo "install: no $CARRY: send the parts first (recv.sh)"; exit 1; }
n_want=$(wc -l < SHA256SUMS)
n_have=$(ls bundle.part* 2>/dev/null | wc -l)

if [ -e "$V/.done" ]; then
  echo "install: already unpacked in $V"
else
  if [ "$n_want" != "$n_have" ] && [ "${PARTIAL:-0}" != 1 ]; then
    echo "install: have $n_have of $n_want parts ($(ls bundle.part* 2>/dev/null | tr '\n' ' ')); send the rest, or PARTIAL=1"
    exit 1
  fi
  sha256sum -c --quiet --ignore-missing SHA256SUMS || { echo "install: a part is damaged: send it again"; exit 1; }
  rm -rf "$V" && mkdir -p "$V"
  t=$(date +%s.%N)
  if command -v xz >/dev/null; then unxz=(xz -dc); else unxz=(python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)"); fi
  if cat bundle.part* | "${unxz[@]}" 2>"$V/.unpack.log" | tar -C "$V" -xf - 2>>"$V/.unpack.log"; then :
  elif [ "$n_want" != "$n_have" ]; then echo "install: partial stream, cut short as expected"
  else echo "install: unpacking failed:"; tail -5 "$V/.unpack.log"; exit 1
  fi
  echo "install: unpacked $n_have/$n_want parts in $(python3 -c "import time; print(round(time.time() - $t, 1))") s: $(du -sh "$V" | cut -f1)"
  [ "$n_want" = "$n_have" ] && touch "$V/.done"
fi

# which folders are complete: all their files are there and (for a partial stream) the next folder began
complete=()
for i in "${!ORDER[@]}"; do
  d=${ORDER[$i]}
  want=$(awk -v d="$d" '$1 == d {print $2}' COUNTS)
  have=$(find "$V/$d" -type f 2>/dev/null | wc -l)
  next=${ORDER[$((i + 1))]:-}
  if [ "$have" -ge "${want:-1}" ] && { [ -e "$V/.done" ] || { [ -n "$next" ] && [ -d "$V/$next" ]; }; }; then
    complete+=("$d"); echo "install: $d/ complete ($have files)"
  else
    echo "install: $d/ incomplete ($have of ${want:-?} files)"; [ -e "$V/.done" ] && fail=1
  fi
done
is_complete() { [[ " ${complete[*]} " == *" $1 "* ]]; }

# shellcheck source=env.sh
source "$HERE/env.sh"
cd "$ROOT"
if is_complete site; then
  python3 - <<'PY' || fail=1
import time
t = time.time()
import torch, transformers, vllm, lm_eval
from vllm import LLM, SamplingParams  # noqa: F401
from punkt.data import english  # noqa: F401  (the only Punkt model the plugin loads; the rest is left out)
import importlib.metadata as m
print(f"install: import ok in {time.time() - t:.1f} s: vllm {vllm.__version__} ({vllm.__file__}), lm-eval {m.version('lm_eval')}, "
      f"torch {torch.__version__} (cuda {torch.version.cuda}), transformers {transformers.__version__}, "
      f"compressed-tensors {m.version('compressed-tensors')}")
PY
  python3 -m lm_eval_ruler --version || fail=1
fi
if is_complete quant-site && is_complete site; then
  # its own process, quant-site/ first: llm-compressor needs compressed-tensors 0.19, vLLM pins 0.17
  PYTHONPATH=$GPU_STUDY_QUANT_SITE:$PYTHONPATH python3 - <<'PY' || fail=1
import time
t = time.time()
import importlib.metadata as m
import llmcompressor, compressed_tensors  # noqa: F401
from llmcompressor.modifiers.quantization import QuantizationModifier  # noqa: F401
print(f"install: quant-site ok in {time.time() - t:.1f} s: llmcompressor {m.version('llmcompressor')} "
      f"({llmcompressor.__file__}), compressed-tensors {m.version('compressed-tensors')}")
PY
fi
if is_complete tools; then
  py-spy --version || { echo "install: py-spy does not run"; fail=1; }
fi
is_complete data && ls -la "$V"/data/
is_complete model && ls -la "$V"/model/
exit $fail
