"""newknowledge: a reproducible companion to Gekhman et al. (EMNLP 2024),
*Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?*

One module per stage of the study:

- ``world``            a synthetic, ENTITYQUESTIONS-format world of facts (controlled default)
- ``entityquestions``  loader and preprocessing for real (or synthetic) ENTITYQUESTIONS folders (Sec. 2)
- ``pretrain``         from-scratch pretraining of a small causal LM on the world's corpus
- ``lm``               loading any causal LM, prompts, teacher-forced scoring and decoding
- ``slick``            SliCK, the sampling-based categorisation of knowledge (Sec. 3)
- ``variants``         fine-tuning data set variants (Sec. 4 and 5)
- ``finetune``         fine-tuning with per-epoch records (Sec. 4)
- ``stats``            linear model, significance tests, intervals (Sec. 4.4, 5, App. I)
- ``plots``            the paper's figures from tidy tables
"""

__version__ = "0.1.0"
