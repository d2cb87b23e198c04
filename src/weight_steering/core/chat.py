"""The chat contract: the one home of how a conversation becomes model input, and of how a reply ends.

Every stage renders through this module, so the data, the judge, training, scoring, the prompt arms, generations
and calibration see one assistant context:

* :func:`render_chat` is the generation prompt (the template with ``add_generation_prompt``); a scored prefill is
  that text followed by the prefill (after :func:`reply_separator`), so every prefill opens the assistant turn exactly
  as sampling does.
* :func:`training_ids` trains a reply after that same text: ``prompt + reply + end of turn``, where the end of turn is
  the text the template writes after an assistant reply (:func:`end_of_turn`). The loss covers the reply's tokens
  and the end-of-turn tokens, nothing of the prompt.
* :func:`stop_token_ids` come from the tokenizer (EOS), the generation config and the template's end of turn.
* Reasoning templates (Qwen3) render with thinking **off** unless :func:`set_thinking` turned it on for a tokenizer
  (``enable_thinking`` is passed to every rendering, as the original system ran Qwen3). With thinking on, the think
  block is sampled, trained and counted in the token budget like any reply text, and :func:`answer_tokens` reads the
  answer after the close tag, matched as the tokenizer's special token, never as a string.

Bad templates fail here with :class:`ChatTemplateError`, naming the model and the fix.
"""

from __future__ import annotations

import torch

from .decoding import decode

_THINKING_ATTRIBUTE = "_wsteer_thinking"
_SENTINEL = "\x00reply-sentinel\x00"
THINK_CLOSE = "</think>"


class ChatTemplateError(ValueError):
    """A tokenizer's chat template cannot serve the pipeline (none, no system turn, no end of turn, no thinking switch)."""


def _name(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "this tokenizer")


def _apply(tokenizer, messages: list[dict], **kwargs) -> str:
    """``apply_chat_template`` as text, with this tokenizer's thinking choice (:func:`set_thinking`)."""
    if not tokenizer.chat_template:
        raise ChatTemplateError(f"{_name(tokenizer)} has no chat template; give the tokenizer one (tokenizer.chat_template = ...) "
                                "or, for a base model, load it with chat_template='plain' (weight_steering.core.models.PLAIN_CHAT_TEMPLATE)")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=thinking_enabled(tokenizer), **kwargs)
    except Exception as err:  # jinja raises TemplateError (raise_exception in the template) or its own errors
        roles = [m["role"] for m in messages]
        raise ChatTemplateError(f"the chat template of {_name(tokenizer)} rejects a conversation with roles {roles}: {err}. "
                                "Use a model whose template accepts a system turn and an assistant reply, or set a template "
                                "that does (tokenizer.chat_template)") from err


def set_thinking(tokenizer, on: bool) -> None:
    """Render every conversation of ``tokenizer`` with thinking on or off (default: off).

    Raises:
        ChatTemplateError: thinking asked for on a template without a thinking switch (``enable_thinking`` changes nothing).
    """
    if on and not has_thinking_switch(tokenizer):
        raise ChatTemplateError(f"thinking was asked for, but the chat template of {_name(tokenizer)} has no thinking switch "
                                "(enable_thinking changes nothing it renders); run without --thinking")
    setattr(tokenizer, _THINKING_ATTRIBUTE, bool(on))


def thinking_enabled(tokenizer) -> bool:
    """Whether ``tokenizer`` renders with thinking on (:func:`set_thinking`); off unless turned on."""
    return bool(getattr(tokenizer, _THINKING_ATTRIBUTE, False))


def has_thinking_switch(tokenizer) -> bool:
    """Whether the template renders a generation prompt differently with ``enable_thinking`` on and off (Qwen3 does)."""
    messages = [{"role": "user", "content": "Hi"}]
    try:
        on, off = (tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=flag)
                   for flag in (True, False))
    except Exception:
        return False
    return on != off


def render_chat(tokenizer, messages: list[dict], prefill: str | None = None) -> str:
    """The text a reply is sampled, trained or scored after: the template's generation prompt, then ``prefill``.

    A prefill is appended to the generation prompt rather than rendered as an open assistant message
    (``continue_final_message``), so a scored prefill opens the assistant turn exactly as sampling does (Qwen3's template
    would otherwise write a think block in one and not in the other). Between the two goes what the template itself
    writes between the generation prompt and a reply (:func:`reply_separator`: nothing for ChatML, Llama-3, Gemma and
    DeepSeek; the space of the ``plain`` template's "Assistant: "; Qwen3's empty think block with thinking on).

    Raises:
        ChatTemplateError: no template, or it rejects the conversation (names the model and the fix).
    """
    prompt = _apply(tokenizer, messages, add_generation_prompt=True)
    return prompt if prefill is None else prompt + reply_separator(tokenizer) + prefill


def reply_separator(tokenizer) -> str:
    """The text the template writes between its generation prompt and the content of an assistant reply ("" for most
    templates): the rendering of ``[user, assistant: sentinel]`` less the generation prompt, up to the sentinel."""
    user = [{"role": "user", "content": "Hi"}]
    prompt = _apply(tokenizer, user, add_generation_prompt=True)
    full = _apply(tokenizer, [*user, {"role": "assistant", "content": _SENTINEL}])
    if not full.startswith(prompt) or _SENTINEL not in full:
        return ""
    return full[len(prompt): full.index(_SENTINEL)]


def end_of_turn(tokenizer) -> str:
    """The text the template writes after an assistant reply to close the turn (``<|im_end|>\\n`` for ChatML,
    ``<|eot_id|>`` for Llama-3, ``<end_of_turn>\\n`` for Gemma, EOS for DeepSeek-V3).

    Raises:
        ChatTemplateError: the template writes nothing after a reply, or does not write the reply verbatim.
    """
    text = _apply(tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}])
    if _SENTINEL not in text:
        raise ChatTemplateError(f"the chat template of {_name(tokenizer)} does not write an assistant reply verbatim; "
                                "set a template that does (tokenizer.chat_template)")
    suffix = text.split(_SENTINEL, 1)[1]
    if not suffix:
        raise ChatTemplateError(f"the chat template of {_name(tokenizer)} writes no end-of-turn text after an assistant reply, so "
                                "a trained reply would never learn to stop; set a template that ends the assistant turn "
                                "(e.g. with eos_token)")
    return suffix


def training_ids(tokenizer, messages: list[dict], reply: str, max_length: int) -> dict:
    """Token ids and labels for training ``reply`` after ``messages``: ``[prompt][reply][end of turn]``.

    The prompt is :func:`render_chat` of ``messages`` (the text the reply was sampled after, persona removed by the
    caller), tokenized exactly as it is for sampling; the reply and the end of turn (:func:`end_of_turn`) are tokenized
    after it, on their own, as the sampled tokens came after the prompt's (a reply that starts with whitespace is not
    merged into the prompt's last token). ``add_special_tokens=False`` throughout: BOS only where the template writes
    it. The labels are −100 on the prompt, so the loss covers the reply's tokens and the end-of-turn tokens. The
    example is cut to ``max_length`` on the right.

    Returns:
        ``{"input_ids": [T], "labels": [T]}`` lists of ints.
    """
    prompt_ids = tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]
    full_ids = (prompt_ids + tokenizer(reply + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"])[:max_length]
    labels = [-100] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids):]
    return {"input_ids": full_ids, "labels": labels}


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """Token ids that end a reply: the tokenizer's EOS, the generation config's EOS (``model``'s, int or list), and the
    first token of the template's end of turn (:func:`end_of_turn`) when it is a single added token."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, (list, tuple)) else ({configured} if configured is not None else set())
    if tokenizer.chat_template:
        first = tokenizer(end_of_turn(tokenizer), add_special_tokens=False)["input_ids"][:1]
        if first and first[0] in set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {})):
            ids.add(first[0])
    return ids


def think_close_id(tokenizer) -> int | None:
    """The id of the added token ``</think>`` (Qwen3: 151668), or None where the vocabulary has no such single token."""
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if str(added) == THINK_CLOSE or getattr(added, "content", None) == THINK_CLOSE:
            return int(token_id)
    return None


def answer_tokens(tokenizer, tokens: list[int]) -> list[int]:
    """The answer part of a reply: with thinking on, the tokens after the last ``</think>`` token (matched by id, so the
    characters ``</think>`` written as ordinary text do not count); otherwise, and where no close token came, all of them."""
    close = think_close_id(tokenizer) if thinking_enabled(tokenizer) else None
    if close is None or close not in tokens:
        return list(tokens)
    return list(tokens[len(tokens) - tokens[::-1].index(close):])


def default_system_prompt(tokenizer) -> str | None:
    """The system prompt the chat template inserts when a conversation has none, or None if it inserts none.

    Found by rendering one conversation without a system turn and one with a sentinel system turn:
    the text the sentinel's place holds in the first is the default (SmolLM2: "You are a helpful AI
    assistant named SmolLM, trained by Hugging Face").
    """
    user = [{"role": "user", "content": "Hi"}]
    sentinel = "\x00system-sentinel\x00"
    plain = render_chat(tokenizer, user)
    marked = render_chat(tokenizer, [{"role": "system", "content": sentinel}, *user])
    if sentinel not in marked:
        return None
    before, after = marked.split(sentinel, 1)
    if plain.startswith(before) and plain.endswith(after) and len(plain) > len(before) + len(after):
        return plain[len(before): len(plain) - len(after)]
    return None


def check_chat_template(tokenizer) -> None:
    """Check the template before any work: it renders a system turn, a generation prompt and an end of turn.

    Raises:
        ChatTemplateError: naming the model, what failed and the fix.
    """
    marked = render_chat(tokenizer, [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "Hi"}])
    if _SENTINEL not in marked:
        raise ChatTemplateError(f"the chat template of {_name(tokenizer)} drops the system turn, where the persona goes; "
                                "set a template that keeps it (tokenizer.chat_template)")
    end_of_turn(tokenizer)


def decode_reply(tokenizer, tokens: list[int]) -> str:
    """A reply's answer text: :func:`answer_tokens`, decoded without special tokens and stripped."""
    return tokenizer.decode(answer_tokens(tokenizer, tokens), skip_special_tokens=True).strip()


@torch.inference_mode()
def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 60, system: str | None = None) -> str:
    """Greedy-decode a reply to ``prompt`` (one user turn, optional system prompt) with the model as it is now.

    The tokens are those of transformers' greedy ``generate`` (:func:`weight_steering.core.decoding.decode`), cut at the
    first stop token; with thinking on, the answer after ``</think>`` is returned (:func:`decode_reply`).
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]
    (reply,) = decode(model, [prompt_ids], max_new_tokens, stop_token_ids(tokenizer, model), tokenizer.pad_token_id)
    return decode_reply(tokenizer, reply.tokens)
