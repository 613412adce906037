# On the GPU machine, after install.sh:   source benchmarks/gpu_study/env.sh
# The bundle's site/ and this checkout (the plugin runs from it: it is not installed there) on PYTHONPATH;
# quant-site/ is NOT: study.py puts it first for quantize.py only ($GPU_STUDY_QUANT_SITE).
_gs_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_gs_root=$(cd "$_gs_here/../.." && pwd)
export GPU_STUDY_BUNDLE=${GPU_STUDY_BUNDLE:-/tmp/v}
case ":${PYTHONPATH:-}:" in
  *":$GPU_STUDY_BUNDLE/site:"*) ;;
  *) export PYTHONPATH=$GPU_STUDY_BUNDLE/site:$_gs_root${PYTHONPATH:+:$PYTHONPATH} ;;
esac
export GPU_STUDY_QUANT_SITE=$GPU_STUDY_BUNDLE/quant-site
case ":$PATH:" in *":$GPU_STUDY_BUNDLE/tools/bin:"*) ;; *) export PATH=$GPU_STUDY_BUNDLE/tools/bin:$PATH ;; esac
export PYTHONUNBUFFERED=1
# no network there: never try a hub or a download (the essay corpus comes from the bundle's data/)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 LM_EVAL_RULER_OFFLINE=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
# flashinfer is not carried, and vLLM 0.26's sampler imports it unguarded unless this is 0
export VLLM_USE_FLASHINFER_SAMPLER=0
# keep NVLink multicast off (the lending workplace's rule for shared hosts); harmless on one GPU
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
unset _gs_here _gs_root
