"""RULER's prompt text, byte for byte.

These strings are benchmark data, not code style: a changed space changes what
models are asked and therefore their scores. They follow NVIDIA RULER's
``scripts/data/synthetic/constants.py`` and ``scripts/data/template.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Task templates; ``{context}`` and ``{query}`` are filled by the generators.
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. "
    "Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n"
    "{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NIAH_NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    "{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "{num_v} variables are assigned the value {query}, they are: "
)
# The 2024 code that produced the published leaderboard had this typo.
VT_ANSWER_PREFIX_2024 = VT_ANSWER_PREFIX.replace("assigned the value", "assgined the value")

CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n"
    "{context}\n"
    "Question: What are the 10 most common words in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"

FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. "
    "Find the three most frequently appeared coded words. {context}\n"
    "Question: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"

QA_TEMPLATE = (
    "Answer the question based on the given documents. "
    "Only give me the answer and do not output any other words.\n\n"
    "The following are given documents.\n\n"
    "{context}\n\n"
    "Answer the question based on the given documents. "
    "Only give me the answer and do not output any other words.\n\n"
    "Question: {query}"
)
QA_ANSWER_PREFIX = " Answer:"

NOISE_BLOCK = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

# NVIDIA's hand-written model templates (``scripts/data/template.py``), for
# users who compare with numbers produced by NVIDIA's own pipeline.
MODEL_TEMPLATES: dict[str, str] = {
    "base": "{task_template}",
    "meta-chat": "[INST] {task_template} [/INST]",
    "vicuna-chat": (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions. "
        "USER: {task_template} ASSISTANT:"
    ),
    "lwm-chat": "You are a helpful assistant. USER: {task_template} ASSISTANT: ",
    "command-r-chat": (
        "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>{task_template}"
        "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    ),
    "chatglm-chat": "[gMASK]sop<|user|> \n {task_template}<|assistant|> \n ",
    "RWKV": (
        "User: hi\n\nAssistant: Hi. I am your assistant and I will provide expert full response "
        "in full details. Please feel free to ask any question and I will always answer it\n\n"
        "User: {task_template}\n\nAssistant:"
    ),
    "Phi3": "<|user|>\n{task_template}<|end|>\n<|assistant|>\n",
    "meta-llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{task_template}"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "jamba": "<|startoftext|><|bom|><|system|> <|eom|><|bom|><|user|> {task_template}<|eom|><|bom|><|assistant|>",
    "nemotron5-instruct": "<SPECIAL_10>System\n\n<SPECIAL_11>User\n{task_template}\n<SPECIAL_11>Assistant\n",
}


@dataclass(frozen=True)
class ModelTemplate:
    """The text that wraps a task template, split around the task text.

    NVIDIA substitutes the task template into a model template and then
    formats the whole string; keeping the two halves lets generators build the
    same string while still knowing where the task text starts (VT inserts its
    example there).
    """

    name: str
    before: str
    after: str
    #: True for a template derived from the tokenizer's chat template (``chat_model_template``):
    #: lm-eval's ``--apply_chat_template`` adds the outermost ``before``/``after`` itself, so the
    #: doc's user text is NVIDIA's string without them (``unwrap``).
    applied_by_harness: bool = False

    def wrap(self, task_text: str) -> str:
        return self.before + task_text + self.after

    def unwrap(self, text: str) -> str:
        """The doc's user text for NVIDIA's full ``text``: without the outer wrapper when lm-eval adds it."""
        if not self.applied_by_harness:
            return text
        if not (text.startswith(self.before) and text.endswith(self.after)):
            raise ValueError("the prompt is not wrapped in its model template")  # a generator bug
        return text[len(self.before) : len(text) - len(self.after)]


#: The name recorded for a model template derived from the tokenizer's chat template.
CHAT_TEMPLATE_NAME = "tokenizer chat template"


def chat_model_template(before: str, after: str) -> ModelTemplate:
    """NVIDIA's "model template" for a tokenizer: its chat rendering of one user message, split there.

    ``before`` is everything lm-eval's chat rendering puts before the user text
    (BOS, a system turn the template injects or the run's system instruction,
    the user header), ``after`` everything between the user text and the
    answer prefix (end of turn, assistant header). Generators wrap the
    answered in-context examples in it as NVIDIA's prepare.py does with a
    model template; lm-eval adds the outer pair itself.
    """
    return ModelTemplate(CHAT_TEMPLATE_NAME, before, after, applied_by_harness=True)


def model_template(name: str) -> ModelTemplate:
    """Look up one of NVIDIA's model templates by its RULER name."""
    from ...errors import ConfigurationError

    try:
        text = MODEL_TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_TEMPLATES))
        raise ConfigurationError(
            f"unknown model_template {name!r}; use one of: {known} "
            "(or leave it unset and pass --apply_chat_template to use the tokenizer's own template)"
        ) from None
    before, after = text.split("{task_template}")
    return ModelTemplate(name, before, after)


def singularize(text: str) -> str:
    """NVIDIA's blind rewrite for NIAH tasks that ask for exactly one value.

    It is applied to the whole prompt string, model template included, so that
    e.g. vicuna's "polite answers" also becomes "polite answer"; the order of
    the replacements matters ("are all" before "are").
    """
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(old, new)
    return text
