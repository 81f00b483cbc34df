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

from .prompts import check_line, check_prompt


def p_true(model, tokenizer, questions: list[str], answers: list[str], *, exemplars: pd.DataFrame | None = None,
           k_shot: int = 0, seed: int = 0, batch_size: int = 64) -> np.ndarray:
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
    from . import lm

    prompts = [prefix + check_prompt(q, a) for q, a in zip(questions, answers)]
    true = lm.score(model, tokenizer, prompts, ["True"] * len(prompts), batch_size=batch_size).logprob
    false = lm.score(model, tokenizer, prompts, ["False"] * len(prompts), batch_size=batch_size).logprob
    return 1.0 / (1.0 + np.exp(false - true))


def compare_with_slick(test: pd.DataFrame, scores: np.ndarray, correct_after: np.ndarray, *, estimator: str,
                       n_samples: int, n_ex: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Figure 5: "Unknown" by P(True) threshold vs by SliCK with N_ex = 1..n_ex.

    Args:
        test: SliCK table rows of the test questions (with ``prompt_greedy`` and ``prompt_sample``).
        scores: P(True) of each test question's gold answer, shape (n,).
        correct_after: 1 if the fine-tuned model answers it correctly, shape (n,).

    Returns:
        ``(sweep, points)``: ``sweep`` has ``method``, ``threshold`` (or N_ex), ``share``, ``accuracy``,
        ``n``; ``points`` has SliCK's Unknown at ``n_ex`` as ``label, share, accuracy``.
    """
    from . import categories, stats

    sweep = stats.threshold_sweep(scores, correct_after).assign(method="P(True) < threshold")
    rows = []
    for k in range(1, n_ex + 1):
        unknown = (categories.categories_with(test, k, estimator, n_samples) == "Unknown").to_numpy()
        rows.append({"method": "SliCK Unknown, N_ex = 1..10", "threshold": k, "share": unknown.mean(),
                     "n": int(unknown.sum()), "accuracy": correct_after[unknown].mean() if unknown.any() else np.nan})
    slick_line = pd.DataFrame(rows)
    last = slick_line.iloc[-1]
    points = pd.DataFrame({"label": [f"SliCK Unknown (N_ex = {n_ex})"], "share": [last["share"]],
                           "accuracy": [last["accuracy"]]})
    return pd.concat([sweep, slick_line], ignore_index=True), points


def matched_threshold(scores: np.ndarray, share: float) -> float:
    """The P(True) threshold that labels (about) ``share`` of the pairs Unknown."""
    return float(np.quantile(scores, share)) if 0 < share < 1 else (0.0 if share <= 0 else 1.0 + 1e-9)


def score_test(prep, records: pd.DataFrame, seed: int, device: str = "auto") -> pd.DataFrame:
    """Test questions with P(True) of their gold answer and correctness after fine-tuning on D_Natural.

    Args:
        prep: the seed's world (:class:`newknowledge.pipeline.Prepared`); P(True) is read from its
            pretrained model, before fine-tuning.
        records: records of the ``natural`` runs; seed ``seed``'s EARLY_STOP model gives ``correct_after``.

    Returns:
        The SliCK table's test rows plus ``example`` (their id in the records), ``seed``, ``p_true``
        and ``correct_after``.
    """
    from . import analysis

    test = prep.table[prep.table["split"] == "test"].copy()
    at = analysis.at_stops(records[records["seed"] == seed], "test")
    after = at[at["duration"] == "EARLY_STOP"].set_index("example")["correct"]
    test["correct_after"] = after.reindex(test.index).astype(float).to_numpy()
    test["example"], test["seed"] = test.index, seed
    from . import lm

    model, tokenizer = lm.load(prep.model_path, device=device)
    test["p_true"] = p_true(model, tokenizer, test["question"].tolist(), test["answer"].tolist())
    return test.reset_index(drop=True)
