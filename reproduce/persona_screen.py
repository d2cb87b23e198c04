"""Screen persona wordings of `upbeat` by VADER before hand-labelling them (RESULTS §2, "Upbeat's negative persona").

    python reproduce/persona_screen.py docs/behaviour_candidates/upbeat_negatives.json \
        > docs/behaviour_candidates/upbeat_negative_screen.md

Each wording in the JSON list is put in the system slot, alone, for every training prompt of `upbeat` (24), and the
embedded model samples ``--samples`` replies per prompt with the data stage's settings (T 0.7, top-p 0.9, top-k 50,
64 tokens, seed ``--seed``). Each reply is scored by VADER's compound valence in [−1, 1] (Hutto & Gilbert 2014, the
same `valence_score` as upbeat's generation metric). Against the 96 hand labels of upbeat v3 it ranks upbeat above
not-upbeat replies with AUC 0.92, and the share of a wording's replies at compound ≥ 0.05 (VADER's own cut for
"positive") tracked the hand-labelled rate of the three labelled negative sets (0.62 / 0.75 / 0.79 against 0.17 /
0.33 / 0.29). So VADER screens; hand labels decide. The replies go to ``--replies`` (JSONL, one row per reply with its
wording's index and valence) and the table to stdout: per wording the mean valence, the share ≥ 0.05, and a Wilson
interval for that share.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from weight_steering.artifacts import write_jsonl
from weight_steering.core.behavior_files import load_behavior
from weight_steering.core.chat import render_chat
from weight_steering.core.data import GenerationConfig, sample_responses
from weight_steering.core.models import load_model
from weight_steering.evaluation.generations import valence_score
from weight_steering.evaluation.judge import wilson_interval

VADER_POSITIVE = 0.05  # Hutto & Gilbert's threshold for a positive compound score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wordings", type=Path, help="a JSON list of system prompts to screen")
    parser.add_argument("--behavior", default="upbeat")
    parser.add_argument("--samples", type=int, default=2, help="replies per training prompt and wording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replies", type=Path, default=None, help="where to write the scored replies (JSONL)")
    args = parser.parse_args()
    wordings = json.loads(args.wordings.read_text())
    if not (isinstance(wordings, list) and wordings and all(isinstance(w, str) and w.strip() for w in wordings)):
        sys.exit(f"{args.wordings}: expected a non-empty JSON list of system-prompt strings")
    behavior = load_behavior(args.behavior)
    model, tokenizer = load_model()
    specs = [(w, p, s) for w in range(len(wordings)) for p in range(len(behavior.train_prompts)) for s in range(args.samples)]
    texts = [render_chat(tokenizer, [{"role": "system", "content": wordings[w]}, {"role": "user", "content": behavior.train_prompts[p]}])
             for w, p, _ in specs]
    torch.manual_seed(args.seed)
    replies = sample_responses(model, tokenizer, texts, GenerationConfig(seed=args.seed), desc="screening wordings")
    rows = [{"wording": w, "system_prompt": wordings[w], "prompt": behavior.train_prompts[p], "sample": s, "response": reply,
             "valence": valence_score(reply)} for (w, p, s), (reply, _) in zip(specs, replies)]
    if args.replies is not None:
        write_jsonl(args.replies, rows)
    print(f"VADER screen of {len(wordings)} wordings for `{behavior.name}`: {len(behavior.train_prompts)} prompts × "
          f"{args.samples} samples each, seed {args.seed}, `python reproduce/persona_screen.py {args.wordings}`\n")
    print(f"| # | wording | mean valence | share ≥ {VADER_POSITIVE} [Wilson 95%] |\n|---:|---|---:|---|")
    for w, wording in enumerate(wordings):
        valence = np.array([r["valence"] for r in rows if r["wording"] == w])
        positive = int((valence >= VADER_POSITIVE).sum())
        low, high = wilson_interval(positive, len(valence))
        print(f"| {w} | {wording} | {valence.mean():+.2f} | {positive / len(valence):.2f} [{low:.2f}, {high:.2f}] ({positive}/{len(valence)}) |")


if __name__ == "__main__":
    main()
