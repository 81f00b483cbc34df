"""The findings page: each of the paper's seven findings beside this build's numbers.

Every number comes from the run store (the cached fine-tuning runs and SliCK
table of this profile), through the same check functions the chapters end
with; nothing is typed in.
"""

from __future__ import annotations

import pandas as pd

from . import analysis, checks, pipeline, ptrue, stats

# (number, finding in the paper's words, chapter file stem, anchor figure)
FINDINGS = [
    (1, "More Unknown fine-tuning examples, lower test accuracy", "02_unknown_harm", "Figure 2.1"),
    (2, "Unknown examples are neutral at EARLY_STOP and harmful at CONVERGENCE", "02_unknown_harm", "Figure 2.2"),
    (3, "Unknown examples are fitted more slowly than Known ones", "03_fitting_speed", "Figure 3.1"),
    (4, "Fitting Unknown examples hurts about as much as fitting Known ones helps", "04_linear_model", "Figure 4.1"),
    (5, "MaybeKnown examples are the most useful; Unknown and WeaklyKnown collapse", "05_knowledge_types", "Figure 5.1"),
    (6, "SliCK's Unknown is really unknown, unlike a P(True) threshold", "06_slick_analysis", "Figure 6.1"),
    (7, 'Relabelling Unknown answers as "I don\'t know" avoids the harm', "07_idk_relabelling", "Figure 7.1"),
]


def collect(prep: pipeline.Prepared) -> dict[int, list[checks.Check]]:
    """Recompute every chapter's checks from the run store (all runs cached by then)."""
    study = prep.study
    size = pipeline.variant_size(prep)
    rec = pipeline.section4(prep)
    n_test = int((prep.table["split"] == "test").sum())
    harm = checks.harm_checks(analysis.harm_table(rec, "test"), analysis.harm_table(rec, "ood_test"), n_test)
    speed = checks.speed_checks(rec, analysis.fitted_at_early_stop(rec))

    def linear(records):
        sel = records[records["variant"].str.startswith("unknown_")]
        return checks.linear_checks(stats.fit_linear_model(analysis.linear_points(sel, size, "test")),
                                    stats.fit_linear_model(analysis.linear_points(sel, size, "ood_test")))

    lin = [c for c in linear(rec) if c.claim.startswith("in-distribution")]
    if study.finetune.alt_format:
        lin += [checks.Check(c.finding, c.claim + f" ({study.finetune.alt_format} format)", c.paper, c.ours, c.holds)
                for c in linear(pipeline.section4(prep, seeds=study.study.seeds[:1], ft_format=study.finetune.alt_format))
                if c.claim.startswith("in-distribution") and "variance" not in c.claim]
    t2rec = pipeline.run_variants(prep, list(analysis.TABLE2_VARIANTS))
    seed = study.study.seeds[0]
    sig = {d: stats.significance_table(analysis.correctness_at(t2rec, d, seed), seed=seed)
           for d in ("EARLY_STOP", "CONVERGENCE")}
    types = checks.knowledge_type_checks(analysis.table2_long(t2rec), sig)
    test = ptrue.score_test(prep, pipeline.run_variants(prep, ["natural"]), device=study.study.device)
    sweep, points = ptrue.compare_with_slick(test, test["p_true"].to_numpy(), test["correct_after"].to_numpy(),
                                             estimator=study.slick.estimator, n_samples=study.slick.n_samples,
                                             n_ex=study.slick.n_ex)
    sl = checks.slick_analysis_checks(sweep, points, test["p_true"].to_numpy(), test)
    x = 50 if 50 in study.finetune.pct_unknown else study.finetune.pct_unknown[len(study.finetune.pct_unknown) // 2]
    idk = checks.idk_checks(analysis.idk_table(pipeline.run_variants(prep, [f"unknown_{x}", f"idk_{x}"])))
    return {1: [harm[0], harm[1], harm[2]], 2: [harm[3], harm[4]], 3: speed[:2], 4: lin, 5: types,
            6: sl[:2] + sl[2:3], 7: idk}


def table(results: dict[int, list[checks.Check]]) -> pd.DataFrame:
    """One row per finding: the paper's numbers, ours, whether it holds, where to see it.

    ``holds`` is "yes" when every check of the finding holds, "partly" when some
    do, "no" when none does.
    """
    rows = []
    for number, title, stem, figure in FINDINGS:
        cs = results.get(number, [])
        ok = [c.holds for c in cs if c.holds is not None]
        verdict = "n/a" if not ok else "yes" if all(ok) else "partly" if any(ok) else "no"
        rows.append({
            "#": number, "finding": title,
            "checks": "<br>".join(f"{'✓' if c.holds else '✗'} {c.claim}" for c in cs),
            "paper": "<br>".join(c.paper for c in cs),
            "ours (this build)": "<br>".join(c.ours for c in cs),
            "holds": verdict,
            "see": f'<a href="chapters/{stem}.html">chapter {int(stem[:2])}, {figure}</a>',
        })
    return pd.DataFrame(rows)


def to_html(df: pd.DataFrame) -> str:
    """The findings table as HTML (links and line breaks kept), with a class for styling."""
    return df.to_html(index=False, escape=False, classes="findings-table", border=0)
