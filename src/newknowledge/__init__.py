"""newknowledge: a reproducible companion to Gekhman et al. (EMNLP 2024),
*Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?*

One sub-package per stage of the study, each importing only the ones below it
(the import-linter contract in ``pyproject.toml``, checked by ``make test``):

- ``cli``          the command-line tools: ``newknowledge-slick`` (``slick_tool``, ``qa_data``)
- ``book``         ``pipeline`` (a chapter's one setup call), ``chapters``, ``findings``, ``page``, ``plots``
- ``evaluation``   ``analysis`` (records -> accuracies, stops, fitted shares), ``stats`` (the linear model,
                   intervals), ``significance`` (App. I's tests), ``paper`` (the paper's numbers), ``checks``
- ``finetuning``   ``variants`` (Sec. 4-5, App. K), ``finetune`` (one run), ``grouped`` and ``stacked``
                   (runs trained together), ``run_store`` (the run store and its records)
- ``knowledge``    ``categories`` and ``slick`` (SliCK, Sec. 3), ``ptrue`` (P(True), Sec. 6)
- ``model``        ``lm`` and ``engine`` (any causal LM), ``pretrain`` (the world's model from scratch),
                   ``train_step``
- ``data``         ``world`` (the synthetic controlled world), ``entityquestions`` (the real data, Sec. 2)
- ``core``         ``config`` (stage configs, profiles), ``prompts`` (every text format), ``store``,
                   ``progress``, ``tidy``, ``metrics``
"""

__version__ = "0.1.0"
