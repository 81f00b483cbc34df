"""newknowledge: a reproducible companion to Gekhman et al. (EMNLP 2024),
*Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?*

One module per stage of the study, in the order the book uses them:

- ``config``           one frozen dataclass per stage, profiles, notebook parameters
- ``prompts``          every text format: SliCK's probe, the fine-tuning formats, P(True), "I don't know"
- ``world``            a synthetic, ENTITYQUESTIONS-format world of facts (the controlled default)
- ``entityquestions``  loader and preprocessing for real (or synthetic) ENTITYQUESTIONS folders (Sec. 2)
- ``pretrain``         from-scratch pretraining of a small causal LM on the world's corpus
- ``lm``, ``engine``   any causal LM: loading, teacher-forced scoring, batched decoding
- ``categories``       SliCK's four categories and their rule (Sec. 3), without torch
- ``slick``            SliCK, the sampling-based categorisation of knowledge (Sec. 3)
- ``slick_tool``, ``qa_data``  SliCK on any QA data set: the newknowledge-slick command, file formats
- ``variants``         fine-tuning data set variants (Sec. 4 and 5, App. K)
- ``finetune``         fine-tuning with per-epoch records (Sec. 4)
- ``pipeline``         the study end to end: one prepared world per seed, the fine-tuning grids
- ``analysis``         records -> accuracies, EARLY_STOP, fitted shares, linear-model points
- ``significance``     App. I's chunked paired t-test and the tests the checks use
- ``stats``            the linear model (Table 1), intervals, the P(True) threshold sweep
- ``ptrue``            P(True), the paper's baseline in Sec. 6
- ``paper``            the paper's reference numbers, each with its table or section
- ``checks``           a claim of the paper as a check fixed before the results
- ``chapters``         one module per chapter: its results and its checks
- ``findings``         the findings page, from every chapter's checks
- ``plots``, ``page``  figures, and what a page shows besides figures
- ``store``, ``tidy``, ``metrics``  the artifact store, the column check, exact match
"""

__version__ = "0.1.0"
