"""Prompt/target pairs -> token ids and a loss mask, consistent with what inference feeds the model.

The prompt (everything up to and including the generation prefix) and the target (assistant content
plus end-of-turn) are tokenised *separately* and concatenated. Tokenising the joined string could
merge tokens across the boundary, and then the training prompt would differ from the ids
:func:`render_prompt` gives the sampler; separate tokenisation makes the prompt ids identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ee_jax.tokenizer.base import Tokenizer
from ee_jax.tokenizer.templates import EOS, ChatTemplate, get_template

Prompt = str | Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class RenderedExample:
    """One training sequence. ``loss_mask`` is 1.0 on target + end-of-turn tokens, 0.0 elsewhere."""

    ids: np.ndarray  # int32 [T]
    loss_mask: np.ndarray  # float32 [T]
    truncated: bool = False  # prompt tokens were cut from the start to fit max_len

    @property
    def num_prompt_tokens(self) -> int:
        """Tokens before the target (BOS, prompt, generation prefix)."""
        return len(self.ids) - int(np.count_nonzero(self.loss_mask))

    def __len__(self) -> int:
        return len(self.ids)


def prompt_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, str]]:
    """The prompt as a message list: a ``str`` becomes one user turn; ``system`` is put first.

    Raises ``ValueError`` if the prompt ends with an assistant turn (the model answers next, so the
    last prompt turn must be the user's) or if ``system`` is given and the prompt already has one.
    """
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
        if not messages:
            raise ValueError("prompt is an empty message list")
    if system is not None:
        if messages[0].get("role") == "system":
            raise ValueError("system= was given but the prompt already starts with a system message")
        messages.insert(0, {"role": "system", "content": system})
    if messages[-1].get("role") == "assistant":
        raise ValueError("the prompt's last message is an assistant turn; the target is the assistant turn")
    return messages


def _encode_parts(tokenizer: Tokenizer, parts: Sequence) -> list[int]:
    """Encode text runs with the tokenizer, and :data:`EOS` placeholders as the EOS id."""
    ids: list[int] = []
    text = ""
    for part in parts:
        if part is EOS:
            if tokenizer.eos_id < 0:
                raise ValueError("this template ends assistant turns with EOS; the tokenizer has no EOS id")
            ids += tokenizer.encode(text) if text else []
            ids.append(tokenizer.eos_id)
            text = ""
        else:
            text += part
    return ids + (tokenizer.encode(text) if text else [])


def _bos(tokenizer: Tokenizer, add_bos: bool | None) -> list[int]:
    if add_bos is None:
        add_bos = tokenizer.add_bos
    if not add_bos:
        return []
    if tokenizer.bos_id < 0:
        raise ValueError("add_bos=True but the tokenizer has no BOS id; pass add_bos=False")
    return [tokenizer.bos_id]


def render_prompt(
    tokenizer: Tokenizer,
    template: ChatTemplate | str,
    prompt: Prompt,
    *,
    system: str | None = None,
    add_bos: bool | None = None,
) -> np.ndarray:
    """Ids fed to the model at inference: [BOS] + prompt turns + generation prefix (int32).

    ``add_bos`` adds the tokenizer's BOS *id* (default: ``tokenizer.add_bos``); the template's textual BOS
    (``<|begin_of_text|>``, ``<bos>``) is not rendered, so BOS is never doubled.
    """
    template = get_template(template)
    parts = template.render_parts(prompt_messages(prompt, system), add_generation_prompt=True)
    return np.asarray(_bos(tokenizer, add_bos) + _encode_parts(tokenizer, parts), dtype=np.int32)


def render_target(tokenizer: Tokenizer, template: ChatTemplate | str, target: str) -> np.ndarray:
    """Ids of the assistant's reply: content + end-of-turn text (+ EOS id for ``plain``) (int32)."""
    template = get_template(template)
    if not isinstance(target, str):
        raise ValueError(f"target must be a str, got {type(target).__name__}")
    parts: list = [target + template.end_of_turn]
    if template.eos_after_assistant:
        parts.append(EOS)
    return np.asarray(_encode_parts(tokenizer, parts), dtype=np.int32)


def render_example(
    tokenizer: Tokenizer,
    template: ChatTemplate | str,
    prompt: Prompt,
    target: str,
    *,
    system: str | None = None,
    add_bos: bool | None = None,
    max_len: int | None = None,
) -> RenderedExample:
    """A supervised example: ``render_prompt(...)`` then ``render_target(...)``, loss on the target.

    Args:
        tokenizer: any :class:`Tokenizer`.
        template: a ``ChatTemplate`` or its name.
        prompt: a user message string, or a message list ending with a user turn (multi-turn).
        target: the assistant's reply (its end-of-turn marker is added here).
        system: optional system message put before the prompt.
        add_bos: start with the tokenizer's BOS id (default: ``tokenizer.add_bos``).
        max_len: if set and the example is longer, drop prompt tokens from the *start* (just after
            BOS, which is kept) so the most recent context and the whole target survive.

    Raises:
        ValueError: BOS + target alone exceed ``max_len`` (the target is never truncated).
    """
    bos = np.asarray(_bos(tokenizer, add_bos), dtype=np.int32)
    prompt_ids = render_prompt(tokenizer, template, prompt, system=system, add_bos=False)
    target_ids = render_target(tokenizer, template, target)
    truncated = False
    if max_len is not None:
        if max_len <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        room = max_len - len(bos) - len(target_ids)
        if room < 0:
            raise ValueError(
                f"target is {len(target_ids)} tokens (with end-of-turn) + {len(bos)} BOS, "
                f"more than max_len={max_len}; the target is never truncated"
            )
        truncated = room < len(prompt_ids)
        prompt_ids = prompt_ids[len(prompt_ids) - room :] if truncated else prompt_ids
    ids = np.concatenate([bos, prompt_ids, target_ids]).astype(np.int32)
    mask = np.zeros(len(ids), dtype=np.float32)
    mask[len(ids) - len(target_ids) :] = 1.0
    return RenderedExample(ids=ids, loss_mask=mask, truncated=truncated)


def stop_token_ids(tokenizer: Tokenizer, template: ChatTemplate | str) -> list[int]:
    """Ids the sampler should stop on: EOS plus each stop string that is a single token.

    Stop strings that are not single tokens in this vocabulary are left to string matching on the
    decoded text (``template.stop_strings``).
    """
    template = get_template(template)
    ids = [tokenizer.eos_id] if tokenizer.eos_id >= 0 else []
    for s in template.stop_strings:
        i = tokenizer.token_to_id(s)
        if i is not None and tokenizer.encode(s) == [i] and i not in ids:
            ids.append(i)
    return ids
