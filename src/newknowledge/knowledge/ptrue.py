"""P(True): the model judges a proposed answer (Kadavath et al., 2022), the paper's baseline in Sec. 6.

The model reads a question with a proposed answer and we take its probability
of "True" against "False" as its confidence that the answer is right.  The
paper compares SliCK's Unknown category with "P(True) below a threshold"
(Figure 5).  Our world's pretraining corpus contains verification lines in
exactly this format (``verify_share`` in the pretraining config), so the small
model can do it zero-shot; a real LLM gets the same prompt, optionally after a
few exemplars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newknowledge.core.prompts import check_line, check_prompt


def p_true(
    model,
    tokenizer,
    questions: list[str],
    answers: list[str],
    *,
    exemplars: pd.DataFrame | None = None,
    k_shot: int = 0,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """P("True") / (P("True") + P("False")) for each (question, proposed answer).

    Args:
        exemplars: optional dev rows (``question``, ``answer``, ``relation`` not
            needed) for ``k_shot`` few-shot verification lines, half true and
            half false (a false one pairs a question with another exemplar's answer).

    Returns:
        Array of shape (n,) with values in (0, 1).
    """
    prefix = ""
    if k_shot and exemplars is not None and len(exemplars) > 1:
        rng = np.random.default_rng(seed)
        rows = exemplars.iloc[rng.choice(len(exemplars), size=min(k_shot, len(exemplars)), replace=False)]
        lines = []
        for j, (q, a) in enumerate(zip(rows["question"], rows["answer"])):
            if j % 2:  # a false line: another exemplar's answer
                a = exemplars["answer"].iloc[(rows.index[j] + 1) % len(exemplars)]
                lines.append(check_line(q, a, a == rows["answer"].iloc[j]))
            else:
                lines.append(check_line(q, a, True))
        prefix = "".join(lines)
    from newknowledge.model import lm

    prompts = [prefix + check_prompt(q, a) for q, a in zip(questions, answers)]
    true = lm.score(model, tokenizer, prompts, ["True"] * len(prompts), batch_size=batch_size).logprob
    false = lm.score(model, tokenizer, prompts, ["False"] * len(prompts), batch_size=batch_size).logprob
    return 1.0 / (1.0 + np.exp(false - true))


def matched_threshold(scores: np.ndarray, share: float) -> float:
    """The P(True) threshold that labels (about) ``share`` of the pairs Unknown."""
    return float(np.quantile(scores, share)) if 0 < share < 1 else (0.0 if share <= 0 else 1.0 + 1e-9)
