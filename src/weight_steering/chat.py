"""Chat rendering and greedy generation: the one home of how a conversation becomes model input.

Every stage renders through :func:`render_chat` (the tokenizer's chat template, optionally with an open assistant
prefill), so the data, the evaluations, the prompt baselines and the judge see the same text.
"""

from __future__ import annotations

import torch

from .decoding import decode


def render_chat(tokenizer, messages: list[dict], prefill: str | None = None) -> str:
    """Render messages with the tokenizer's chat template.

    With ``prefill`` the assistant turn is opened with that text and left open
    (``continue_final_message``); otherwise a generation prompt is added.
    """
    if prefill is not None:
        messages = [*messages, {"role": "assistant", "content": prefill}]
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def default_system_prompt(tokenizer) -> str | None:
    """The system prompt the chat template inserts when a conversation has none, or None if it inserts none.

    Found by rendering one conversation without a system turn and one with a sentinel system turn:
    the text the sentinel's place holds in the first is the default (SmolLM2: "You are a helpful AI
    assistant named SmolLM, trained by Hugging Face").
    """
    user = [{"role": "user", "content": "Hi"}]
    sentinel = "\x00system-sentinel\x00"
    plain = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    marked = tokenizer.apply_chat_template([{"role": "system", "content": sentinel}, *user], tokenize=False, add_generation_prompt=True)
    if sentinel not in marked:
        return None
    before, after = marked.split(sentinel, 1)
    if plain.startswith(before) and plain.endswith(after) and len(plain) > len(before) + len(after):
        return plain[len(before): len(plain) - len(after)]
    return None


def stop_token_ids(tokenizer) -> set[int]:
    """Token ids that end a response: EOS and the chat template's end-of-turn token when it has one."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for special in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
        token_id = tokenizer.convert_tokens_to_ids(special)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return ids


@torch.inference_mode()
def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 60, system: str | None = None) -> str:
    """Greedy-decode a reply to ``prompt`` (one user turn, optional system prompt) with the model as it is now.

    The tokens are those of transformers' greedy ``generate`` (:func:`weight_steering.decoding.decode`), cut at the
    first stop token.
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]
    (reply,) = decode(model, [prompt_ids], max_new_tokens, stop_token_ids(tokenizer), tokenizer.pad_token_id)
    return tokenizer.decode(reply.tokens, skip_special_tokens=True).strip()
