"""The paper's reference numbers, each with the section or table it comes from.

Gekhman et al., *Does Fine-Tuning LLMs on New Knowledge Encourage
Hallucinations?* (EMNLP 2024, arXiv 2405.05904), PaLM 2-M on ENTITYQUESTIONS.
The checks, plots and chapters compare our numbers with these; no notebook
types a number of the paper.  Accuracies are in percent, as the paper
prints them.
"""

from __future__ import annotations

import pandas as pd

from newknowledge.knowledge.categories import CATEGORIES

TITLE = "Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?"
URL = "https://arxiv.org/abs/2405.05904"

# Sec. 3: SliCK's settings and the category shares of the ENTITYQUESTIONS train split (%).
SLICK = {"n_ex": 10, "k_shot": 4, "n_samples": 16, "temperature": 0.5, "top_k": 40}
CATEGORY_SHARES = {"HighlyKnown": 24, "MaybeKnown": 23, "WeaklyKnown": 17, "Unknown": 36}

# Table 3 (App. B): train examples per relation and category after preprocessing (HK, MK, WK, Unk).
RELATION_COUNTS = pd.DataFrame(
    [
        [553, 2529, 1493, 3071],
        [236, 3410, 1892, 1978],
        [4387, 2628, 511, 364],
        [369, 1884, 1498, 4170],
        [1609, 1503, 1087, 3257],
        [206, 1444, 1854, 3820],
        [4160, 1634, 449, 572],
        [692, 1467, 1271, 2680],
        [5459, 1101, 408, 706],
        [233, 1126, 1712, 3650],
        [1323, 1618, 1428, 2902],
        [301, 330, 222, 503],
    ],
    index=pd.Index(
        ["P131", "P136", "P17", "P19", "P26", "P264", "P36", "P40", "P495", "P69", "P740", "P800"], name="relation"
    ),
    columns=list(CATEGORIES),
)
TRAIN_TOTAL = 81_700  # Table 3
TEST_TOTAL = 10_481  # in-distribution test questions (App. B)
OOD_TEST_TOTAL = 5_848

# Sec. 4 and App. E: fine-tuning.  |D| is the sum over relations of the smallest category (Sec. 4.1).
DATASET_SIZE = 6_142
FT_EPOCHS = 50  # CONVERGENCE: train accuracy 100%
FT_LR = 1e-5
FT_BATCH = 128
FT_STEPS_PER_EPOCH = 48  # 6,142 / 128
FT_DROPOUT = 0.05
FT_FORMAT = "Answer the following question. {question}"  # App. E, zero-shot, answer as target
EARLY_STOP_EPOCHS = (5, 10)  # Sec. 4: EARLY_STOP after 5-10 of the 50 epochs
CONVERGENCE_TRAIN_ACCURACY = 100.0

# Sec. 4.1, Figure 3a: the largest drop in test accuracy from 0% to 100% Unknown (points).
MAX_DROP_IN_DISTRIBUTION = 14
MAX_DROP_OOD = 6

# Table 1 (Sec. 4.4): acc = b0 + b_kn * N_kn/|D| + b_unk * N_unk/|D|.
TABLE1 = pd.DataFrame(
    {"in-distribution": [36.9, 7.3, -8.3, 0.86], "OOD": [36.2, 3.2, -3.0, 0.95]}, index=["b0", "b_kn", "b_unk", "R2"]
)

# Table 2 (Sec. 5): test accuracy per fine-tuning variant and test category, EARLY_STOP | CONVERGENCE.
TABLE2 = pd.DataFrame(
    [
        [40.5, 98.7, 60.1, 9.0, 0.6, 40.0, 98.4, 58.8, 8.5, 0.7],
        [43.6, 98.4, 69.9, 12.1, 1.0, 43.2, 97.5, 68.2, 12.9, 1.3],
        [39.2, 95.0, 59.2, 8.6, 0.4, 35.4, 73.5, 55.8, 17.2, 2.2],
        [37.5, 95.6, 52.9, 6.5, 0.6, 25.8, 55.8, 36.6, 12.2, 3.2],
        [43.5, 98.0, 67.6, 14.1, 1.8, 41.8, 95.5, 61.7, 14.8, 2.5],
    ],
    index=pd.Index(["D_HighlyKnown", "D_MaybeKnown", "D_WeaklyKnown", "D_Unknown", "D_Natural"], name="variant"),
    columns=pd.MultiIndex.from_product([["EARLY_STOP", "CONVERGENCE"], ["All", *CATEGORIES]]),
)

# Table 8 (App. K): the 50% Unknown variant with and without "I don't know" relabelling.
TABLE8 = pd.DataFrame(
    {"accuracy on answered (%)": [43.0, 38.8, 61.8, 61.8], "answered (%)": [100.0, 100.0, 58.7, 55.6]},
    index=pd.MultiIndex.from_product([["D", "D_IDK"], ["EARLY_STOP", "CONVERGENCE"]], names=["variant", "duration"]),
)


def table2_change() -> pd.DataFrame:
    """Table 2's CONVERGENCE minus EARLY_STOP accuracy (points), per variant and test category."""
    return (TABLE2["CONVERGENCE"] - TABLE2["EARLY_STOP"]).round(1)


# The seven findings the book checks, in the paper's words (our numbering, the order of the book).
FINDINGS = {
    1: "More Unknown fine-tuning examples, lower test accuracy, at every training duration (Sec. 4.1)",
    2: "Unknown examples are neutral at EARLY_STOP and harmful at CONVERGENCE (Sec. 4.2)",
    3: "Unknown examples are fitted more slowly than Known ones (Sec. 4.3)",
    4: "Fitting Unknown examples hurts about as much as fitting Known ones helps (Sec. 4.4, Table 1)",
    5: "MaybeKnown examples are the most useful; WeaklyKnown and Unknown ones collapse (Sec. 5, Table 2)",
    6: "SliCK's Unknown is really unknown, unlike a P(True) threshold (Sec. 6, Figure 5)",
    7: 'Relabelling Unknown answers as "I don\'t know" avoids the harm (App. K, Table 8)',
}
