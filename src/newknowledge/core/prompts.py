"""Every text format of the study, in one place and without torch.

The paper uses three kinds of prompt (Sec. 3, Sec. 4, App. E, App. K), and
our controlled world adds the pretraining corpus that teaches them:

- **SliCK's probe** (Sec. 3): ``k_shot`` exemplar lines of the same relation,
  then the question, ``Q: {question} A:``; the model's answer is the rest of
  that line.  Pretraining writes Q/A documents in exactly this line format,
  so the small model can answer a few-shot probe.
- **The fine-tuning formats** (Sec. 4, App. E): a zero-shot prompt per
  question, with the answer as the target.  :data:`FT_FORMATS` names them;
  ``ft_format`` in the config picks one.
- **P(True)'s check line** (Sec. 6, Kadavath et al. 2022): a question with a
  proposed answer, then "Verdict:"; the model's next token is "True" or
  "False".
- **The abstention answer** (App. K): :data:`IDK`, the relabelled answer of
  D_IDK's Unknown examples.

**The stop convention.**  Every answer is written as ``" " + answer + "\\n"``
(:func:`answer`): one space after the prompt, the answer, and the end of the
line.  A model's answer is the text it generates up to the first newline (or
EOS); every line of the corpus ends with a newline, also the last one before
EOS, or a few-shot prompt would teach the model to stop with EOS where the
probe expects a newline.
"""

from __future__ import annotations

import string

STOP = "\n"
IDK = "I don't know"
# SliCK's question line (Sec. 3); ``{q}`` is the question.  The data-set tool
# takes another template for models that answer a different format.
PROBE = "Q: {q} A:"

# Fine-tuning prompt templates (Sec. 4; the answer follows as :func:`answer`).
# "paper" is the paper's (App. E), a format pretraining never writes, so
# fine-tuning must teach the model to answer zero-shot.  "qa" is the probe's own line format, which pretraining writes, so the model
# answers it zero-shot before any fine-tuning; "unseen" is a format the
# pretraining corpus never uses, so fine-tuning must teach the model to
# answer in it (as PaLM 2-M had to learn the paper's format, Sec. 3 fn. 4).
FT_FORMATS = {
    "paper": "Answer the following question. {q}",  # App. E: an instruction, then the question
    "qa": "Q: {q} A:",
    "unseen": "Question: {q}\nAnswer:",
}

# How the pretraining corpus writes a question and its answer.  The first is
# the probe's own line; ``qa_templates: n`` writes each Q/A exposure in one of
# the first n, chosen at random, as the web asks questions in many ways.  None
# is a fine-tuning format: those must be learned in fine-tuning (a test checks
# that the corpus never contains them).
QA_TEMPLATES = (
    PROBE,
    "Trivia: {q} Solution:",
    "{q} The answer:",
    "Quiz - {q} Reply:",
    "Ask: {q} Response:",
)


def answer(text: str) -> str:
    """The answer as it follows a prompt: ``" " + text + "\\n"`` (the stop convention)."""
    return f" {text}{STOP}"


def probe_question(question: str, template: str = PROBE) -> str:
    """The last line of a SliCK probe, without its answer: ``Q: {question} A:`` (or ``template``'s)."""
    return template.format(q=question)


def probe_line(question: str, gold: str, template: str = PROBE) -> str:
    """One exemplar line of the probe (and a Q/A line of the pretraining corpus)."""
    return probe_question(question, template) + answer(gold)


def check_template(template: str) -> str:
    """``template`` if it is a question line with one ``{q}`` and no other field; else a clear error."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError:  # a lone brace
        fields = []
    ok = fields == [("q", "", None)]
    if not ok:
        raise ValueError(
            f"prompt template {template!r} must contain {{q}} (the question) once and no other "
            f"{{...}} field (write a literal brace as {{{{ or }}}}); the book's is {PROBE!r}"
        )
    return template


def probe_prompt(question: str, exemplars: list[tuple[str, str]], template: str = PROBE) -> tuple[str, str]:
    """A few-shot SliCK prompt (Sec. 3).

    Args:
        question: the question to answer.
        exemplars: ``(question, answer)`` pairs, the exemplar lines in order.
        template: the question line, ``{q}`` standing for the question.

    Returns:
        ``(prompt, prefix)``: the whole prompt and its exemplar lines (shared by
        every question asked with the same exemplars, see
        :mod:`newknowledge.model.engine`).
    """
    prefix = "".join(probe_line(q, a, template) for q, a in exemplars)
    return prefix + probe_question(question, template), prefix


def check_format(fmt: str) -> str:
    """The template of fine-tuning format ``fmt``; a clear error for an unknown name."""
    if fmt not in FT_FORMATS:
        raise ValueError(f"unknown ft_format {fmt!r}; choose one of {sorted(FT_FORMATS)}")
    return FT_FORMATS[fmt]


def ft_prompt(fmt: str, question: str) -> str:
    """The zero-shot fine-tuning prompt of ``question`` in format ``fmt`` (the answer follows)."""
    return check_format(fmt).format(q=question)


def check_prompt(question: str, proposed: str) -> str:
    """P(True)'s verification line without its verdict; P("True") is read after it."""
    return f"Check: {question} {proposed}. Verdict:"


def check_line(question: str, proposed: str, true: bool) -> str:
    """A whole verification line, as the pretraining corpus and few-shot P(True) write it."""
    return check_prompt(question, proposed) + answer("True" if true else "False")
