"""Hand-built tidy records for testing the checks: a few readable numbers per run.

A run has epochs 0..``epochs - 1``; its dev accuracy peaks at ``es`` (so that
is its EARLY_STOP) and its last epoch is CONVERGENCE.  Test correctness is
given as 0/1 arrays at EARLY_STOP and at CONVERGENCE (epochs up to ``es``
repeat the first, later ones the second); train fitting as shares of the
Known and Unknown examples per epoch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newknowledge.knowledge.categories import CATEGORIES

N = 400  # test questions
TEST_CATS = np.array([CATEGORIES[i % 4] for i in range(N)])


def ones(acc: float, n: int = N, seed: int = 0) -> np.ndarray:
    """A 0/1 array with exactly round(acc * n) ones at positions drawn with ``seed``."""
    out = np.zeros(n)
    out[np.random.default_rng(seed).permutation(n)[: round(acc * n)]] = 1
    return out


def lower(arr: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    """``arr`` with ``k`` of its ones turned to zeros (a paired drop of k questions)."""
    out = arr.copy()
    idx = np.flatnonzero(out == 1)
    out[np.random.default_rng(seed).choice(idx, size=k, replace=False)] = 0
    return out


def raise_(arr: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    """``arr`` with ``k`` of its zeros turned to ones."""
    return 1 - lower(1 - arr, k, seed)


def _fit(share: float, n: int) -> np.ndarray:
    return (np.arange(n) < round(share * n)).astype(float)


def run(
    variant: str,
    seed: int = 0,
    *,
    test_es,
    test_conv,
    es: int = 2,
    epochs: int = 6,
    ood_es=None,
    ood_conv=None,
    known=lambda e: min(1.0, 0.4 * e),
    unknown=lambda e: min(1.0, 0.04 * e * e),
    n_known: int = 20,
    n_unknown: int = 20,
    dev_hk: float = 1.0,
    test0=None,
    idk_es=None,
    idk_conv=None,
    test_cats=TEST_CATS,
) -> pd.DataFrame:
    """The records of one run (columns as :func:`newknowledge.finetuning.run_store.load_records` returns them).

    Args:
        test_es, test_conv: 0/1 arrays over the test questions at EARLY_STOP and CONVERGENCE.
        es: the EARLY_STOP epoch (dev accuracy peaks there); CONVERGENCE is ``epochs - 1``.
        known, unknown: epoch -> share of the Known / Unknown train examples fitted.
        dev_hk: accuracy on the HighlyKnown dev questions at EARLY_STOP.
        test0: test correctness at epoch 0 (default: ``test_es``).
        idk_es, idk_conv: abstention flags (D_IDK runs), 0/1 arrays.
    """
    rows = []
    train_cats = np.array(["HighlyKnown"] * n_known + ["Unknown"] * n_unknown)
    dev_cats = np.array([CATEGORIES[i % 4] for i in range(40)])
    for e in range(epochs):
        fit = np.r_[_fit(known(e), n_known), _fit(unknown(e), n_unknown)]
        rows.append(
            pd.DataFrame(
                {
                    "epoch": e,
                    "split": "train",
                    "example": np.arange(len(train_cats)),
                    "category": train_cats,
                    "correct": fit.astype(bool),
                }
            )
        )
        peak = e == es
        dev = np.where(
            dev_cats == "HighlyKnown",
            ones(dev_hk if peak else 0.5, 40, seed=e)[: len(dev_cats)],
            ones(0.5 if peak else 0.2, 40, seed=e)[: len(dev_cats)],
        )
        rows.append(
            pd.DataFrame(
                {
                    "epoch": e,
                    "split": "dev",
                    "example": 1000 + np.arange(40),
                    "category": dev_cats,
                    "correct": dev.astype(bool),
                }
            )
        )
        test = test0 if (e == 0 and test0 is not None) else (test_es if e <= es else test_conv)
        t = pd.DataFrame(
            {
                "epoch": e,
                "split": "test",
                "example": 2000 + np.arange(len(test)),
                "category": test_cats[: len(test)],
                "correct": np.asarray(test).astype(bool),
            }
        )
        if idk_es is not None:
            t["idk"] = np.asarray(idk_es if e <= es else idk_conv).astype(bool)
        rows.append(t)
        if ood_es is not None:
            ood = ood_es if e <= es else ood_conv
            rows.append(
                pd.DataFrame(
                    {
                        "epoch": e,
                        "split": "ood_test",
                        "example": 5000 + np.arange(len(ood)),
                        "category": test_cats[: len(ood)],
                        "correct": np.asarray(ood).astype(bool),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True).assign(variant=variant, seed=seed)


def records(*runs: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(runs, ignore_index=True)
