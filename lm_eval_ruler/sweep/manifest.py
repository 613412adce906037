"""A cell's ``manifest.json``: everything needed to know later what produced its results.

Versions (plugin, lm-eval, vLLM, transformers, torch, Python), the GPU, the served window and
where it came from, the data's fingerprints and cache keys, seeds, settings and the command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shlex
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from typing import Any

from .checks import cell_settings
from .config import Resolved, parse_shard
from .plan import Cell
from .state import now

#: lm-eval's defaults for --seed (random, numpy, torch, fewshot); the sweep does not change them.
LM_EVAL_DEFAULT_SEEDS = "0,1234,1234,1234"


def _package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


_GPU_PROBE = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "    ok = torch.cuda.is_available()\n"
    "    info = {'name': torch.cuda.get_device_name(0) if ok else 'cpu', 'count': torch.cuda.device_count() if ok else 0,"
    " 'cuda': torch.version.cuda}\n"
    "except ImportError:\n"
    "    info = {'name': 'cpu', 'count': 0, 'cuda': None, 'note': 'torch not installed'}\n"
    "print(json.dumps(info))\n"
)


def gpu_info(python: str, env: Mapping[str, str]) -> dict[str, Any]:
    """GPU name via torch.cuda, in a short-lived process so this one never holds a CUDA context."""
    try:
        done = subprocess.run([python, "-c", _GPU_PROBE], check=False, capture_output=True, text=True, timeout=300, env=dict(env))
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        info = {"name": "unknown", "error": f"{type(exc).__name__}: {exc}"}
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


def manifest(resolved: Resolved, cell: Cell, model_window: tuple[int | None, str], gpu: dict[str, Any]) -> dict[str, Any]:
    from .. import __version__

    config = resolved.config
    first = next(iter(cell.datasets.values()), {})
    return {
        "manifest_version": 1,
        "created": now(),
        "model": cell.model,
        "label": cell.spec.label,
        "model_folder": cell.spec.folder,
        "model_revision": cell.model_args.get("revision"),
        "baseline": resolved.models[0].name,
        "backend": resolved.backend,
        "model_args": cell.model_args,
        "length": cell.length,
        "length_tokens": cell.tokens,
        "tasks": list(cell.tasks),
        "lm_eval_tasks": list(cell.lm_eval_tasks),
        "num_samples": config.num_samples,
        "profile": config.profile,
        "seeds": {"ruler_seed": config.seed, "lm_eval_seed": LM_EVAL_DEFAULT_SEEDS},
        "apply_chat_template": config.apply_chat_template,
        "system_instruction": config.system_instruction,
        "settings": cell_settings(resolved, cell.spec).to_dict(),
        "window": {
            "served": cell.window,
            "policy": config.window,
            "longest_prompt_plus_answer": cell.needed,
            "model_window": model_window[0],
            "model_window_source": model_window[1],
        },
        "plugin_version": __version__,
        "plugin_dist_version": _package_version("lm-eval-ruler"),
        "lm_eval_version": _package_version("lm_eval"),
        "vllm_version": _package_version("vllm") if importlib.util.find_spec("vllm") else None,
        "transformers_version": _package_version("transformers"),
        "torch_version": _package_version("torch"),
        "python_version": platform.python_version(),
        "gpu": gpu,
        "host": socket.gethostname(),
        "tokenizer": first.get("tokenizer"),
        "tokenizer_fingerprint": first.get("tokenizer_fingerprint"),
        "chat_template_fingerprint": first.get("chat_template_fingerprint"),
        "cache_dir": str(resolved.cache_dir),
        "cache_keys": {task: info.get("cache_key") for task, info in cell.datasets.items()},
        "prompt_tokens": {task: info.get("prompt_tokens") for task, info in cell.datasets.items()},
        "datasets": cell.datasets,
        "shard": "{}/{}".format(*parse_shard(config.shard)),
        "cell_index": cell.index,
        "command": cell.command,
        "command_line": shlex.join(cell.command),
    }


