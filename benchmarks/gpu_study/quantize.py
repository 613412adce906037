#!/usr/bin/env python3
"""One data-free quantized copy of a small HF checkpoint with llm-compressor, in the formats of the
seed's quantization study (compressed-tensors):

* w8a8:  INT8 weights per output channel, INT8 activations per token, dynamic (llm-compressor's
         "W8A8" preset scheme); no calibration data needed.
* w4a16: INT4 weights, symmetric, round-to-nearest in groups of --group-size (64 by default:
         SmolLM2-135M's 576-wide layers are not a multiple of 128), 16-bit activations.

FP8 needs no checkpoint: the study serves the bf16 one with vLLM's `quantization=fp8` (dynamic,
as RedHatAI's FP8-dynamic models). lm_head stays unquantized, as in those models.

The tokenizer files are copied byte for byte from the source, so every variant has the same
tokenizer fingerprint, the sweep generates the same data for all of them, and `compare` accepts
them. The copy is written to OUT.tmp and moved to OUT when complete.

Run with llm-compressor 0.14 + compressed-tensors 0.19 first on PYTHONPATH (the bundle's
quant-site/): vLLM 0.26 pins compressed-tensors 0.17, which reads these checkpoints fine.

    quantize.py --model OUT/models/bf16 --scheme w4a16 --out OUT/models/w4a16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the bf16 HF checkpoint folder")
    ap.add_argument("--scheme", required=True, choices=("w8a8", "w4a16"))
    ap.add_argument("--out", required=True, help="the quantized checkpoint folder to write")
    ap.add_argument("--group-size", type=int, default=64, help="W4A16 group size (default 64)")
    a = ap.parse_args()

    import compressed_tensors
    import llmcompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    print(
        f"llmcompressor {getattr(llmcompressor, '__version__', '?')} from {os.path.dirname(llmcompressor.__file__)}, "
        f"compressed-tensors {getattr(compressed_tensors, '__version__', '?')}",
        flush=True,
    )
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype="auto")
    tok = AutoTokenizer.from_pretrained(a.model)
    if a.scheme == "w8a8":
        recipe = QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])
    else:
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=a.group_size)
        recipe = QuantizationModifier(
            config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}, ignore=["lm_head"]
        )
    oneshot(model=model, recipe=recipe)

    out = os.path.abspath(a.out)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, save_compressed=True)
    tok.save_pretrained(tmp)
    copied = []
    for name in TOKENIZER_FILES:  # byte-identical tokenizer: same data, comparable runs
        src = os.path.join(a.model, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(tmp, name))
            copied.append(name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    with open(os.path.join(out, "config.json")) as f:
        qcfg = json.load(f).get("quantization_config", {})
    print(
        f"{a.scheme}: {out} in {time.time() - t0:.1f}s; format={qcfg.get('format')}, "
        f"groups={json.dumps(qcfg.get('config_groups', {}), sort_keys=True)[:400]}; tokenizer files copied: {copied}",
        flush=True,
    )


if __name__ == "__main__":
    main()
