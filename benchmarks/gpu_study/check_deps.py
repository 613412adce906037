#!/usr/bin/env python3
"""Check that a --target site directory (or a stack of them) plus the GPU image has every
requirement of the packages in it, for Python 3.12 on x86-64 Linux.

    check_deps.py --layer .stage/build/site --image image-packages.txt
    check_deps.py --layer .stage/build/quant-site --layer .stage/build/site --image image-packages.txt

Layers are searched in order (the first that has a distribution wins, as on PYTHONPATH); the
image's packages count as present (a version is checked only where image-packages.txt pins one).
--skip NAME ignores the requirements OF that distribution (vLLM's own list names packages left out
on purpose: flashinfer, tilelang ...). Exit 1 when something is missing or the wrong version.
Runs here at bundle time with any Python that has `packaging` (or pip's vendored copy).
"""

from __future__ import annotations

import argparse
import re
import sys
from email.parser import HeaderParser
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import Version
except ImportError:  # pip's vendored copy
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_layer(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [Requires-Dist ...])} of the *.dist-info folders in one site dir."""
    found: dict[str, tuple[str, list[str]]] = {}
    for meta in sorted(path.glob("*.dist-info/METADATA")):
        headers = HeaderParser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
        found[canon(headers["Name"])] = (headers["Version"], headers.get_all("Requires-Dist") or [])
    return found


def read_image(path: Path) -> dict[str, str | None]:
    image: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            image[canon(name)] = version or None
    return image


def check(layers: list[dict[str, tuple[str, list[str]]]], image: dict[str, str | None], skip: set[str]) -> list[str]:
    env = default_environment() | TARGET_ENV
    provided: dict[str, str | None] = dict(image)
    for layer in reversed(layers):  # the first layer wins
        provided.update({name: version for name, (version, _) in layer.items()})
    problems: list[str] = []
    seen: set[str] = set()
    for layer in layers:
        for dist, (_version, requires) in layer.items():
            if dist in seen or dist in skip:
                continue
            seen.add(dist)
            for text in requires:
                try:
                    req = Requirement(text)
                except InvalidRequirement:
                    problems.append(f"{dist}: unparsable requirement {text!r}")
                    continue
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                name = canon(req.name)
                if name not in provided:
                    problems.append(f"{dist}: needs {text.split(';')[0].strip()}, which is neither bundled nor in the image")
                    continue
                have = provided[name]
                if have is not None and req.specifier and not req.specifier.contains(Version(have), prereleases=True):
                    problems.append(f"{dist}: needs {req.name}{req.specifier}, has {have}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", action="append", required=True, type=Path, help="a --target site dir (repeat; first wins)")
    ap.add_argument("--image", required=True, type=Path, help="image-packages.txt")
    ap.add_argument("--skip", action="append", default=[], help="do not check this distribution's own requirements")
    a = ap.parse_args(argv)
    layers = [read_layer(p) for p in a.layer]
    problems = check(layers, read_image(a.image), {canon(s) for s in a.skip})
    n = sum(len(layer) for layer in layers)
    label = " + ".join(str(p) for p in a.layer)
    if problems:
        print(f"check_deps: {label}: {len(problems)} problem(s) in {n} distributions:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"check_deps: {label}: {n} distributions, every requirement met (with the image's packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
