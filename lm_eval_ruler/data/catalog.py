"""The external files RULER reads, pinned to exact bytes: what they are and where to get them.

``SOURCES`` is the catalog ``sources`` downloads, verifies and imports from;
``KNOWN_VARIANTS`` names files people commonly have that are *not* the pinned
bytes, so an import failure can say what the file is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """One external file, pinned to exact bytes.

    ``size`` and ``sha256`` identify the file (a download or import with other
    bytes is rejected); ``urls`` are tried in order, so later entries are
    mirrors of the same bytes; ``filename`` is the name in ``<cache>/data``.
    """

    name: str
    filename: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    description: str


_ESSAYS_COMMIT = "314ff301d5d33184e9b9ba765a0d9833d81495c9"
_ESSAYS_PATH = "scripts/data/synthetic/json/PaulGrahamEssays.json"
_HOTPOT_CMU = "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json"

SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="essays",
            filename="PaulGrahamEssays.json",
            size=3_101_008,
            sha256="d9e4663b58000c644994bb677b6c47a6c0e026d1bc2386aade8963ae7bd9e039",
            urls=(
                f"https://raw.githubusercontent.com/Chen3776/baseline_ruler/{_ESSAYS_COMMIT}/{_ESSAYS_PATH}",
                f"https://cdn.jsdelivr.net/gh/Chen3776/baseline_ruler@{_ESSAYS_COMMIT}/{_ESSAYS_PATH}",
            ),
            description=(
                "Paul Graham essay haystack for the essay NIAH tasks: the frozen 2024 output of RULER's "
                "download_paulgraham_essay.py ({'text': <essays concatenated>}), committed in "
                "Chen3776/baseline_ruler. Pinned instead of re-scraped because paulgraham.com changes and "
                "the 2024 script's file order depended on glob order."
            ),
        ),
        Source(
            name="squad",
            filename="dev-v2.0.json",
            size=4_370_528,
            sha256="80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
            urls=(
                "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json",
                # The GitHub Pages site above is served from this repository, so these are the same bytes.
                "https://raw.githubusercontent.com/rajpurkar/SQuAD-explorer/master/dataset/dev-v2.0.json",
                "https://cdn.jsdelivr.net/gh/rajpurkar/SQuAD-explorer@master/dataset/dev-v2.0.json",
            ),
            description=(
                "SQuAD 2.0 dev set (qa_1), the file RULER's download script fetches as squad.json. "
                "Size and sha256 as recorded by TensorFlow Datasets (squad/checksums.tsv) and Hugging Face "
                "datasets (squad_v2/dataset_infos.json)."
            ),
        ),
        Source(
            name="hotpotqa",
            filename="hotpot_dev_distractor_v1.json",
            size=46_320_117,
            sha256="4e9ecb5c8d3b719f624d66b60f8d56bf227f03914f5f0753d6fa1b359d7104ea",
            urls=(
                _HOTPOT_CMU,
                # Byte-identical copy pinned to a commit of the RAGLAB/data dataset repository.
                (
                    "https://huggingface.co/datasets/RAGLAB/data/resolve/c33b09b7fa5099b89830e84f9bdff78329268d9b/"
                    "eval_datasets/HotPotQA/hotpot_dev_distractor_v1.json"
                ),
                # Wayback Machine raw snapshot ("id_": the archived bytes, unmodified).
                f"https://web.archive.org/web/20221010195146id_/{_HOTPOT_CMU}",
            ),
            description=(
                "HotpotQA dev set, distractor setting (qa_2), the file RULER's download script fetches as "
                "hotpotqa.json. Pinned to the authors' original bytes (size and sha256 as recorded by Hugging "
                "Face datasets hotpot_qa/dataset_infos.json and ParlAI). The namlh2004/hotpotqa copy that "
                "lm-eval's ruler task and RULER's 2026 fallback use is a different serialisation "
                "(61,065,698 bytes) and is not accepted; see KNOWN_VARIANTS."
            ),
        ),
    )
}

# Files people commonly have that are *not* the pinned bytes; named in errors so an
# import failure says what the file is instead of only "no match".
KNOWN_VARIANTS: dict[str, str] = {
    "e3da074df24e8369009918aa5cdbdd254dadcde4c63f7569d36afd6f2268caa8": (
        "the namlh2004/hotpotqa Hugging Face copy of hotpot_dev_distractor_v1.json (61,065,698 bytes, "
        "used by lm-eval's ruler task); it is a re-serialisation, not the authors' file. Get the original "
        "from " + _HOTPOT_CMU + " or a mirror listed for 'hotpotqa'"
    ),
    "8d31e1b660e0f2180bcca6d238e18f77921df9d158611582b860da1762b6d3dd": (
        "a different scrape of the Paul Graham essays (3,108,621 bytes), not the frozen 2024 corpus this plugin pins"
    ),
}
