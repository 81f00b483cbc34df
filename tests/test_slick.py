"""SliCK (paper Sec. 3): the category rule, prompts, and categorisation on a scripted model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from newknowledge.core.config import SlickConfig
from newknowledge.knowledge import categories, slick
from newknowledge.model import lm


@pytest.mark.parametrize(
    "p_greedy, p_sample, expected",
    [
        (1.0, 0.0, "HighlyKnown"),
        (1.0, 1.0, "HighlyKnown"),
        (0.9, 0.0, "MaybeKnown"),
        (0.1, 1.0, "MaybeKnown"),
        (1e-9, 0.0, "MaybeKnown"),
        (0.0, 1e-9, "WeaklyKnown"),
        (0.0, 1.0, "WeaklyKnown"),
        (0.0, 0.0, "Unknown"),
    ],
)
def test_category_boundaries(p_greedy, p_sample, expected):
    assert categories.category(p_greedy, p_sample) == expected


@pytest.mark.parametrize("bad", [(-0.1, 0.0), (1.1, 0.0), (0.0, 2.0)])
def test_category_rejects_values_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="must lie in"):
        categories.category(*bad)


def _tables():
    dev = pd.DataFrame(
        {
            "relation": ["P1"] * 6,
            "question": [f"Where is D{i}?" for i in range(6)],
            "answer": [f"d{i}" for i in range(6)],
        }
    )
    table = pd.DataFrame(
        {
            "relation": ["P1"] * 4,
            "question": ["Where is HK?", "Where is MK?", "Where is WK?", "Where is UNK?"],
            "answer": ["hk", "mk", "wk", "unk"],
        }
    )
    return table, dev


class Scripted:
    """A scripted model: for each question we choose what it answers.

    HK: always right.  MK: right greedily in the first 3 of its prompts.
    WK: greedily wrong; exactly one sample right over all prompts.
    UNK: always wrong.  Questions are read off the prompt's last line.
    """

    def __init__(self, empty: bool = False):
        self.calls: dict[str, int] = {}
        self.empty = empty

    @staticmethod
    def _question(prompt: str) -> str:
        return prompt.rsplit("\n", 1)[-1].removeprefix("Q: ").removesuffix(" A:")

    def decode(self, model, tokenizer, prompts, *, n_samples=0, **kw):
        greedy, samples = [], []
        for p in prompts:
            q = self._question(p)
            k = self.calls[q] = self.calls.get(q, 0) + 1
            if self.empty:
                greedy.append("")
                samples.append([""] * n_samples)
                continue
            right = {"Where is HK?": "The HK.", "Where is MK?": "mk", "Where is WK?": "wk", "Where is UNK?": "unk"}[q]
            g = right if q == "Where is HK?" or (q == "Where is MK?" and k <= 3) else "wrong"
            s = ["wrong"] * n_samples
            if q == "Where is WK?" and k == 2:
                s[0] = right
            greedy.append(g)
            samples.append(s)
        return greedy, samples

    def score(self, model, tokenizer, prompts, golds, **kw):
        greedy, p = [], []
        for pr in prompts:
            q = self._question(pr)
            k = self.calls[q] = self.calls.get(q, 0) + 1
            greedy.append(q == "Where is HK?" or (q == "Where is MK?" and k <= 3))
            p.append({"Where is HK?": 0.9, "Where is MK?": 0.5, "Where is WK?": 0.01, "Where is UNK?": 0.0}[q])
        return lm.Scores(np.array(greedy), np.array(p), np.zeros(len(p)))


CFG = SlickConfig(n_ex=10, k_shot=4, n_samples=16, slick_batch=4)


def test_scripted_model_gives_each_category_by_design():
    table, dev = _tables()
    out = slick.categorize(None, None, table, dev, CFG, backend=Scripted())
    assert out["category"].tolist() == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    assert out["p_greedy"].tolist() == [1.0, 0.3, 0.0, 0.0]
    assert out["p_sample"].tolist() == pytest.approx([0.0, 0.0, 1 / 160, 0.0])
    assert out["greedy_answers"][0] == ["The HK."] * 10  # exact match normalises "The HK." to "hk"


def test_exact_estimator_uses_probability_of_any_correct_sample():
    table, dev = _tables()
    cfg = dataclasses.replace(CFG, estimator="exact")
    out = slick.categorize(None, None, table, dev, cfg, backend=Scripted())
    assert out["category"].tolist() == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    # WK: 1 - (1 - 0.01)^(16 * 10) = 0.80 >= 0.5
    assert out.loc[2, "p_any"] == pytest.approx(1 - 0.99**160)
    assert out.loc[3, "p_any"] == 0.0


def test_prompts_use_k_exemplars_of_the_same_relation_never_the_question_itself():
    table, dev = _tables()
    both = pd.concat([table, dev.iloc[:1]], ignore_index=True)  # a dev question asked itself
    pr = slick.prompts(both, dev, CFG)
    assert len(pr) == len(both) * CFG.n_ex
    for ex, prompt in zip(pr["example"], pr["prompt"]):
        lines = prompt.split("\n")
        assert len(lines) == CFG.k_shot + 1
        assert lines[-1] == f"Q: {both['question'][ex]} A:"
        assert all(line.startswith("Q: Where is D") and " A: d" in line for line in lines[:-1])
        assert f"Q: {both['question'][ex]} A: " not in prompt


def test_exemplar_sets_are_deterministic_and_seeded():
    _, dev = _tables()
    a = slick.exemplar_sets(dev, ["P1"], CFG)
    b = slick.exemplar_sets(dev, ["P1"], CFG)
    c = slick.exemplar_sets(dev, ["P1"], dataclasses.replace(CFG, slick_seed=1))
    assert a == b and a != c


def test_too_few_exemplars_is_a_clear_error():
    table, dev = _tables()
    with pytest.raises(ValueError, match="relation P1 has 3 dev exemplars"):
        slick.prompts(table, dev.head(3), CFG)


def test_model_that_never_answers_fails_clearly():
    _, dev = _tables()
    with pytest.raises(lm.ModelError, match="produced no answer line"):
        slick.check_answers(None, None, dev, CFG, backend=Scripted(empty=True))


def test_slick_on_tiny_model_is_deterministic(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    _, facts = tiny_world
    dev = facts[facts.split == "dev"]
    table = facts[facts.split == "train"].head(12)
    a = slick.categorize(model, tok, table, dev, tiny_study.slick)
    b = slick.categorize(model, tok, table, dev, tiny_study.slick)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["category"]) <= set(categories.CATEGORIES)
    assert a["greedy_answers"].map(len).eq(tiny_study.slick.n_ex).all()
