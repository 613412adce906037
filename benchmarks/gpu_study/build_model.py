#!/usr/bin/env python3
"""Turn a GGUF file into a plain HF checkpoint (safetensors, bf16) that vLLM can load.

vLLM 0.26 has no GGUF loader, so transformers dequantizes it (needs `gguf`, which travels in
the bundle's site/, and torch + transformers from the GPU image). The checkpoint is written to
OUT.tmp and moved to OUT when complete, so a half-written folder never looks finished.

    build_model.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out OUT/models/bf16 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers dequantize GGUF files without being asked
        GgufConfig = None

    t0 = time.time()
    folder, name = os.path.split(os.path.abspath(a.gguf))
    kwargs = {"gguf_file": name, "dtype": getattr(torch, a.dtype)}
    if GgufConfig is not None:
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    # drop the GGUF quantization marker so the saved checkpoint is a plain bf16 one
    model.config.quantization_config = None
    try:
        del model.config.quantization_config
    except AttributeError:
        pass
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)

    out = os.path.abspath(a.out)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    config_path = os.path.join(tmp, "config.json")
    with open(config_path) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config", None)
    with open(config_path, "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)

    n = sum(p.numel() for p in model.parameters())
    print(
        f"built {out}: {type(model).__name__} {n / 1e6:.1f}M params, dtype={cfg.get('dtype', cfg.get('torch_dtype'))}, "
        f"max_position_embeddings={cfg.get('max_position_embeddings')}, chat_template={'yes' if tok.chat_template else 'no'}, "
        f"files={sorted(os.listdir(out))}, {time.time() - t0:.1f}s",
        flush=True,
    )


if __name__ == "__main__":
    main()
