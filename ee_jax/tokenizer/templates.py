"""Chat templates as data, plus a small renderer.

A conversation is a list of ``{"role": "system"|"user"|"assistant", "content": str}``. Each template
renders a turn as ``header(role) + content + end_of_turn``; the templates differ only in the data
below. Content is never stripped or rewritten (unlike the ``| trim`` in the official Jinja
templates), so a training target is rendered byte-for-byte as given.

``plain`` is for scratch models: no role markup, the prompt runs straight into the target, and an
assistant turn ends with the EOS *token*. EOS is a token rather than text (a SentencePiece model does
not match ``</s>`` typed in raw text), so ``render()`` leaves it out and :mod:`.render` inserts the
id; ``render_parts()`` marks its place with :data:`EOS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

ROLES = ("system", "user", "assistant")


class _EosToken:
    """Placeholder for the EOS token in :meth:`ChatTemplate.render_parts` output."""

    def __repr__(self) -> str:
        return "EOS"


EOS = _EosToken()


@dataclass(frozen=True)
class ChatTemplate:
    """How one chat format lays out a conversation.

    Attributes:
        name: registry name (``plain``, ``chatml``, ``llama3``, ``gemma``).
        header: text opening a turn; ``{role}`` is replaced by the role's rendered name.
        end_of_turn: text closing every turn (the assistant target ends with it too).
        bos_text: the BOS marker the official template writes as text at the start ("" if none).
            ``render_prompt``/``render_example`` add the tokenizer's BOS *id* instead.
        system_role: False -> the system message is folded into the first following turn as
            ``system + "\\n\\n" + content`` (Gemma's official behaviour; plain does the same).
        eos_after_assistant: True -> an assistant turn is followed by the EOS token (plain).
        stop_strings: text the sampler should stop generating at (besides the EOS id).
        special_tokens: markers that must be single tokens in any vocabulary used with this template.
        role_names: role -> name written in the header (Gemma calls the assistant ``model``).
    """

    name: str
    header: str
    end_of_turn: str
    bos_text: str = ""
    system_role: bool = True
    eos_after_assistant: bool = False
    stop_strings: tuple[str, ...] = ()
    special_tokens: tuple[str, ...] = ()
    role_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({r: r for r in ROLES}))

    @property
    def generation_prefix(self) -> str:
        """Text that opens the assistant's turn: the last thing fed to the model before sampling."""
        return self.header.format(role=self.role_names["assistant"])

    def render_parts(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = False,
        *,
        include_bos: bool = False,
    ) -> list[str | _EosToken]:
        """The conversation as text pieces, with :data:`EOS` where the EOS token goes.

        Args:
            messages: the conversation (validated: known roles, string content, system only first).
            add_generation_prompt: append :attr:`generation_prefix` (the model answers next).
            include_bos: start with :attr:`bos_text`.
        """
        parts: list[str | _EosToken] = []
        if include_bos and self.bos_text:
            parts.append(self.bos_text)
        for role, content in self._turns(messages):
            parts.append(self.header.format(role=self.role_names[role]) + content + self.end_of_turn)
            if role == "assistant" and self.eos_after_assistant:
                parts.append(EOS)
        if add_generation_prompt:
            parts.append(self.generation_prefix)
        return parts

    def render(
        self,
        messages: Sequence[Mapping[str, str]],
        add_generation_prompt: bool = False,
        *,
        include_bos: bool = True,
    ) -> str:
        """The conversation as one string, as the official template would print it.

        ``include_bos`` defaults to True to match the official templates (``llama3`` starts with
        ``<|begin_of_text|>``, ``gemma`` with ``<bos>``). ``plain``'s EOS is a token, not text, so it
        does not appear in the string.
        """
        parts = self.render_parts(messages, add_generation_prompt, include_bos=include_bos)
        return "".join(p for p in parts if isinstance(p, str))

    def _turns(self, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
        """(role, content) pairs after validation and, where needed, folding the system message."""
        turns = validate_messages(messages)
        if turns and turns[0][0] == "system" and not self.system_role:
            system = turns.pop(0)[1]
            if turns:
                # Gemma 3's template prepends ``system + "\n\n"`` to the first turn after it.
                role, content = turns[0]
                turns[0] = (role, system + "\n\n" + content)
            else:
                turns = [("user", system)]
        return turns


def validate_messages(messages: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    """Check a conversation and return it as (role, content) pairs.

    Raises ``ValueError`` naming the offending message index and value: unknown role, non-string
    content, or a system message anywhere but first.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        kind = type(messages).__name__
        raise ValueError(f"messages must be a list of {{'role', 'content'}} dicts, got {kind}")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ValueError(f"messages[{i}] has unknown role {role!r}; valid roles: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}] content must be a str, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise ValueError(f"messages[{i}] is a system message; only messages[0] may be one")
        turns.append((role, content))
    return turns


TEMPLATES: Mapping[str, ChatTemplate] = MappingProxyType(
    {
        "plain": ChatTemplate(
            name="plain",
            header="",
            end_of_turn="",
            system_role=False,
            eos_after_assistant=True,
        ),
        "chatml": ChatTemplate(
            name="chatml",
            header="<|im_start|>{role}\n",
            end_of_turn="<|im_end|>\n",
            stop_strings=("<|im_end|>",),
            special_tokens=("<|im_start|>", "<|im_end|>"),
        ),
        "llama3": ChatTemplate(
            name="llama3",
            header="<|start_header_id|>{role}<|end_header_id|>\n\n",
            end_of_turn="<|eot_id|>",
            bos_text="<|begin_of_text|>",
            stop_strings=("<|eot_id|>",),
            special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        ),
        "gemma": ChatTemplate(
            name="gemma",
            header="<start_of_turn>{role}\n",
            end_of_turn="<end_of_turn>\n",
            bos_text="<bos>",
            system_role=False,
            stop_strings=("<end_of_turn>",),
            special_tokens=("<bos>", "<start_of_turn>", "<end_of_turn>"),
            role_names=MappingProxyType({"system": "system", "user": "user", "assistant": "model"}),
        ),
    }
)

# Every marker any template writes, in a fixed order: a tokenizer trained with these as atomic
# symbols works with all templates, and the fixed order keeps their ids stable across runs.
TEMPLATE_SPECIAL_TOKENS: tuple[str, ...] = tuple(
    dict.fromkeys(tok for t in TEMPLATES.values() for tok in t.special_tokens)
)


def get_template(name: str | ChatTemplate) -> ChatTemplate:
    """The template called ``name`` (a ``ChatTemplate`` passes through unchanged).

    Raises ``ValueError`` listing the valid names if ``name`` is unknown.
    """
    if isinstance(name, ChatTemplate):
        return name
    try:
        return TEMPLATES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown chat template {name!r}; valid names: {', '.join(TEMPLATES)}") from None
