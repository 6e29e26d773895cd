"""``ee-jax serve``: an OpenAI-compatible chat-completions server around the framework's sampler.

Needs the ``serve`` extra (``pip install -e '.[serve]'``: FastAPI and uvicorn). See docs/serving.md.
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """Build the FastAPI app; see :func:`ee_jax.serve.app.create_app` (imported lazily: FastAPI is optional)."""
    from ee_jax.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
