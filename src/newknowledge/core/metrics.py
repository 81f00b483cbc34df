"""Exact match after SQuAD-style normalisation (paper Sec. 2: "EM after normalisation")."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse white space.

    Args:
        text: a model answer or a gold answer.

    Returns:
        The normalised string (SQuAD v1.1 evaluation script's rule).
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    """True when ``prediction`` equals ``gold`` after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(gold)
