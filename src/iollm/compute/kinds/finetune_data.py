"""Fine-tuning data: rows -> token ids (the loss on the completion only), and batches as a pure
function of (seed, step), so a run resumed from a checkpoint sees exactly the batches an uninterrupted
one would, with no data-loader state to save."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any


def is_text_row(row: dict[str, Any]) -> bool:
    return isinstance(row.get("text"), str) and bool(row["text"])


def finetune_row_problem(row: dict[str, Any]) -> str | None:
    if is_text_row(row):
        return None
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str) and row["completion"]:
        return None
    return "a row needs a non-empty string 'text', or strings 'prompt' and 'completion'"


def encode_row(tokenizer: Any, row: dict[str, Any], seq_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the loss covers the completion (or the whole text), never the prompt;
    a long prompt is cut from the left so at least half of ``seq_len`` is left for the completion."""
    text = is_text_row(row)
    prompt = [] if text else tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    target = tokenizer(row["text"] if text else row["completion"], add_special_tokens=False)["input_ids"]
    target = [*target, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else target
    room = max(seq_len // 2, seq_len - len(target))
    prompt = prompt[-room:] if prompt else []
    target = target[: seq_len - len(prompt)]
    return prompt + target, [-100] * len(prompt) + target


@lru_cache(maxsize=64)
def epoch_order(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> list[int]:
    """Sample g = step * batch_size + j is row epoch_order(seed, g // n)[g % n]: no state to save."""
    return [epoch_order(seed, g // n, n)[g % n] for g in range(step * batch_size, (step + 1) * batch_size)]


def collate(encoded: list[tuple[list[int], list[int]]], indices: list[int], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(encoded[i][0]) for i in indices)
    ids, labels, mask = [], [], []
    for i in indices:
        row_ids, row_labels = encoded[i]
        pad = width - len(row_ids)
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [-100] * pad)
        mask.append([1] * len(row_ids) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }
