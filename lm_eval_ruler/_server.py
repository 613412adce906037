"""Server mode: what an OpenAI-compatible server serves, read before any completion request.

lm-eval's ``local-completions`` backend knows nothing of the server behind ``base_url``: it keeps
``max_length - 1`` tokens (default 2048) and left-truncates longer prompts silently, and it counts
tokens with whatever tokenizer its model name loads. A RULER run needs the server's own answers
first, so that a prompt is never cut and a budget never counted with the wrong tokenizer:

* the window: vLLM's ``/v1/models`` reports ``max_model_len`` in each model card;
* the tokenizer: the card's ``root`` (the path or hub name vLLM loaded) when it loads here,
  else its ``id``;
* that this tokenizer is the server's: vLLM's ``/tokenize`` must split a real prompt into the
  same tokens (``verify_server_tokenizer``, once per process).

Only stdlib ``urllib``, with short timeouts: a dead server is an error that names the URL and the
fix, never a hang. Nothing here imports lm-eval.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, TokenizerError

__all__ = [
    "SERVER_BACKENDS",
    "ServedModel",
    "complete_server_args",
    "describe_window",
    "fetch_models",
    "models_url",
    "parse_models",
    "select_model",
    "served_model",
    "server_root",
    "server_tokenizer",
    "verify_server_tokenizer",
]

logger = logging.getLogger(__name__)

#: lm-eval backends that send RULER prompts to a server at ``base_url``.
SERVER_BACKENDS = ("local-completions",)
#: Seconds to wait for ``/v1/models`` or ``/tokenize``: both answer at once on a live server.
PROBE_TIMEOUT = 10.0
#: The endpoint suffixes a ``base_url`` may carry; the server root is what precedes them.
_ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/completions", "/chat/completions", "/v1")
_FIX = "start the server, or check the URL (--base-url for the sweep, base_url=... in --model_args)"
#: (server root, model, tokenizer) triples whose /tokenize check passed in this process.
_verified: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class ServedModel:
    """One model card of ``/v1/models``: the name requests use, what was loaded, and the window."""

    id: str
    root: str | None
    max_model_len: int | None


def server_root(base_url: str) -> str:
    """The server's root URL from a completions URL (``http://h:8000/v1/completions`` -> ``http://h:8000``).

    lm-eval takes the full completions endpoint as ``base_url``; the model list and the
    tokenizer endpoint hang off the root, so the endpoint part (and any query) is dropped.
    """
    parts = urllib.parse.urlsplit(str(base_url).strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"base_url {base_url!r} is not an http(s) URL: give the completions endpoint, e.g. http://localhost:8000/v1/completions"
        )
    path = parts.path.rstrip("/")
    for suffix in _ENDPOINTS:
        if path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            break
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def models_url(base_url: str) -> str:
    """Where the server lists its models (``<root>/v1/models``)."""
    return server_root(base_url) + "/v1/models"


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_models(payload: Any, url: str) -> tuple[ServedModel, ...]:
    """The model cards of an OpenAI ``/v1/models`` answer (``{"data": [{"id": ..., ...}]}``)."""
    cards = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(cards, list) or not all(isinstance(card, Mapping) and isinstance(card.get("id"), str) for card in cards):
        raise ConfigurationError(
            f'{url} did not answer with an OpenAI model list ({{"data": [{{"id": ...}}]}}): is --base-url an '
            "OpenAI-compatible server such as `vllm serve`?"
        )
    return tuple(
        ServedModel(
            card["id"], card.get("root") if isinstance(card.get("root"), str) else None, _positive_int(card.get("max_model_len"))
        )
        for card in cards
    )


def _request(url: str, payload: Mapping[str, Any] | None, timeout: float) -> Any:
    """GET (or POST ``payload`` as JSON) and decode the JSON answer; HTTP errors propagate, others name the fix."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, timeout
        reason = getattr(exc, "reason", exc)
        raise ConfigurationError(f"cannot reach the server at {url} ({reason}): {_FIX}. Nothing was run.") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ConfigurationError(f"{url} answered with something other than JSON: is it an OpenAI-compatible server?") from None


def fetch_models(base_url: str, timeout: float = PROBE_TIMEOUT) -> tuple[ServedModel, ...]:
    """The server's model cards, asked once with a short timeout: a dead server fails in seconds, naming the URL."""
    url = models_url(base_url)
    try:
        payload = _request(url, None, timeout)
    except urllib.error.HTTPError as exc:
        raise ConfigurationError(f"{url} answered HTTP {exc.code}: is --base-url an OpenAI-compatible server? {_FIX}") from None
    return parse_models(payload, url)


def select_model(models: tuple[ServedModel, ...], name: str | None, url: str) -> ServedModel:
    """The card whose ``id`` is ``name`` (the name requests send); with no name, the only card."""
    served = ", ".join(card.id for card in models) or "none"
    if name is None:
        if len(models) == 1:
            return models[0]
        raise ConfigurationError(f"{url} serves {len(models)} models ({served}): name one with model=<id> in --model_args")
    for card in models:
        if card.id == name:
            return card
    raise ConfigurationError(
        f"the server at {url} does not serve a model named {name!r} (it serves: {served}); pass the served name "
        "(the sweep's --model, model=... in --model_args), as `vllm serve --served-model-name` set it"
    )


def served_model(base_url: str, name: str | None) -> ServedModel:
    """The card of the model ``name`` (or of the only model) at the server behind ``base_url``."""
    return select_model(fetch_models(base_url), name, models_url(base_url))


def _tokenizer_loads(name: str) -> bool:
    from .data.tokens import load_tokenizer

    try:
        load_tokenizer(name)
    except TokenizerError:
        return False
    return True


def server_tokenizer(card: ServedModel, loads: Callable[[str], bool] = _tokenizer_loads) -> str:
    """The tokenizer to count a served model's prompts with: the card's ``root`` when it loads here, else its ``id``.

    vLLM's ``root`` is the path or hub name it loaded, so it is the right tokenizer whenever
    this machine can load it too; ``--served-model-name`` only renames the ``id``.
    """
    for name in dict.fromkeys(name for name in (card.root, card.id) if name):
        if loads(name):
            return name
    raise TokenizerError(
        f"the served model {card.id!r} (loaded from {card.root or card.id!r}) names no tokenizer that loads here: pass its "
        "tokenizer (a local path or hub name) with --tokenizer (sweep) or tokenizer=... in --model_args"
    )


def complete_server_args(model_args: Mapping[str, Any]) -> dict[str, Any]:
    """The model args a RULER run against ``base_url`` lacks, read from the server: window, tokenizer, model.

    * ``max_length``: the server's ``max_model_len`` + 1 (lm-eval's API backends keep
      ``max_length - 1``), unless the run sets one;
    * ``tokenizer``: ``server_tokenizer`` of the served model, unless the run names one;
    * ``tokenizer_backend=huggingface`` (for ``auto``/unset): lm-eval's ``auto`` picks vLLM's
      remote tokenizer, a round trip per request; the plugin counts budgets locally and
      ``verify_server_tokenizer`` checks once that the two tokenizers agree;
    * ``model``: the only served model's id when none is named (requests must name it).
    """
    from ._window import window_model_args

    base_url = str(model_args["base_url"])
    added: dict[str, Any] = {}
    if model_args.get("tokenizer_backend") in (None, "auto"):
        added["tokenizer_backend"] = "huggingface"
    if model_args.get("max_length") is not None and model_args.get("tokenizer"):
        return added
    name = model_args.get("model") or model_args.get("pretrained")
    card = served_model(base_url, str(name) if name else None)
    if not name:
        added["model"] = card.id
    if model_args.get("max_length") is None:
        if card.max_model_len is None:
            raise ConfigurationError(
                f"{models_url(base_url)} does not report max_model_len for {card.id!r}, so the served window is unknown: "
                "pass max_length=<window + 1> in --model_args (--max-window N for the sweep)"
            )
        added.update(window_model_args(SERVER_BACKENDS[0], card.max_model_len))
    if not model_args.get("tokenizer"):
        added["tokenizer"] = server_tokenizer(card)
    return added


def verify_server_tokenizer(model_args: Mapping[str, Any], tokenizer: Any, prompt: str) -> bool:
    """Check once per process that the server tokenizes ``prompt`` as the local ``tokenizer`` does.

    Every budget (prompt + answer <= window) is counted locally; a server with another tokenizer
    would see other lengths, and truncate or reject prompts. ``prompt`` is a real RULER prompt as
    lm-eval renders it; it is encoded as lm-eval's API backend sends it (specials only with
    ``add_bos_token``). False when the server offers no vLLM ``/tokenize`` (nothing to compare).
    """
    from .data.options import parse_flag

    root = server_root(str(model_args["base_url"]))
    model = str(model_args.get("model") or model_args.get("pretrained") or "")
    key = (root, model, str(getattr(tokenizer, "name_or_path", "")))
    if key in _verified:
        return True
    specials = parse_flag(model_args.get("add_bos_token", False), "add_bos_token")
    payload: dict[str, Any] = {"prompt": prompt, "add_special_tokens": specials}
    if model:
        payload["model"] = model
    url = root + "/tokenize"
    try:
        answer = _request(url, payload, PROBE_TIMEOUT)
    except urllib.error.HTTPError as exc:
        logger.info("%s answered HTTP %s: the server offers no /tokenize; tokenizer not cross-checked", url, exc.code)
        return False
    served = answer.get("tokens") if isinstance(answer, Mapping) else None
    if not isinstance(served, list):
        logger.info("%s gave no token list; tokenizer not cross-checked", url)
        return False
    local = list(tokenizer(prompt, add_special_tokens=specials)["input_ids"])
    if served != local:
        first = next((i for i, (a, b) in enumerate(zip(served, local)) if a != b), min(len(served), len(local)))
        raise ConfigurationError(
            f"the server at {root} splits a RULER prompt into {len(served)} tokens but the local tokenizer "
            f"{key[2] or tokenizer!r} into {len(local)} (first difference at token {first}): every length budget would be "
            "counted with the wrong tokenizer. Pass the served model's own tokenizer with --tokenizer (sweep) or "
            "tokenizer=... in --model_args."
        )
    _verified.add(key)
    return True


def describe_window(base_url: str, card: ServedModel) -> str:
    """Where a server window comes from, for messages and manifests."""
    return f"the server's max_model_len={card.max_model_len} ({models_url(base_url)}, model {card.id})"
