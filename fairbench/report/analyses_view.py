"""What the report shows of a cell's ``analyses`` (metrics.json; docs/metrics.md, "Analyses"): which figures a
cell has (:func:`figure_names`, shared by ``fairbench plot`` and ``fairbench report`` so that both agree on the
files) and the HTML report's section per analysis (:func:`analysis_sections`: its tables of numbers).

No matplotlib here: the report imports this module whether or not it must draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fairbench.analyses.leakage import fit_description
from fairbench.analyses.power import underpowered
from fairbench.report.formatting import pct, slug
from fairbench.report.page_model import Table, TCell, THead
from fairbench.report.summary import lookup

__all__ = ["FIGURES", "analysis_sections", "figure_names", "figure_stem", "panel_attributes"]

#: the analyses that have a figure, in the order the report shows them
FIGURES = ("underdiagnosis", "calibration", "leakage", "power", "prompts")


def figure_stem(name: str) -> str:
    """File name (without suffix) of an analysis figure in a cell's folder of figures."""
    return f"analysis_{name}"


def panel_attributes(records: Any, attributes: Sequence[str] | None = None) -> list[str]:
    """The attributes (and intersections) of an analysis record, in recorded order, ``overall`` left out, only
    those in ``attributes`` where given."""
    if not isinstance(records, dict):
        return []
    return [a for a, r in records.items() if a != "overall" and isinstance(r, dict)
            and (not attributes or a in attributes)]


def figure_names(cell: Any, attributes: Sequence[str] | None = None) -> list[str]:
    """The analysis figures ``cell`` gets: those whose analysis it recorded (older cells: none). Calibration
    needs predictions.parquet (its curves are binned from the predictions)."""
    an = cell.doc.get("analyses")
    if not isinstance(an, dict):
        return []
    out = []
    under = an.get("underdiagnosis") or {}
    if any(isinstance(g := under[a].get("groups"), dict)
           and any(isinstance(v, dict) and isinstance(v.get("rate"), (int, float)) for v in g.values())
           for a in panel_attributes(under, attributes)):
        out.append("underdiagnosis")
    if panel_attributes(an.get("calibration"), attributes) and cell.predictions.is_file():
        out.append("calibration")
    if panel_attributes(an.get("leakage"), attributes):
        out.append("leakage")
    if panel_attributes(an.get("power"), attributes):
        out.append("power")
    if isinstance(an.get("prompts"), dict) and an["prompts"].get("templates"):
        out.append("prompts")
    return out


# -- the HTML sections ----------------------------------------------------------------------------------------
def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _raw(value: Any, ci: Any = None) -> str:
    """A coefficient (not a rate) with two decimals and its interval."""
    v = _num(value)
    if v is None:
        return "n/a"
    text = f"{v:.2f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _underdiagnosis_section(cell: Any, an: dict[str, Any], figures: dict[str, Any]) -> list[dict[str, Any]]:

    sections: list[dict[str, Any]] = []
    under = an.get("underdiagnosis") or {}
    if panel_attributes(under):
        tables = []
        threshold = lookup(cell.doc, "threshold", "value")
        nf = _first(under, "no_finding_class")
        for attr in panel_attributes(under):
            r = under[attr]
            rows = []
            for g, v in (r.get("groups") or {}).items():
                v = v or {}
                mark = " (best)" if g == r.get("best_group") else " (worst)" if g == r.get("worst_group") else ""
                rows.append([TCell(g + mark, g), TCell(str(v.get("n_finding", "?")), _num(v.get("n_finding"))),
                             TCell(pct(v.get("rate"), v.get("ci")), _num(v.get("rate"))),
                             TCell(pct(v.get("gap_to_best")), _num(v.get("gap_to_best")))])
            tables.append(Table(
                f"underdiagnosis-{slug(attr)}",
                f"Underdiagnosis by {attr} (x100, [95% bootstrap interval]); gap worst − best "
                f"{pct(r.get('gap'), r.get('gap_ci'))}",
                [THead("group", "group", False), THead("patients with a finding", "n_finding"),
                 THead("underdiagnosis rate ↓", "rate"), THead("gap to best group", "gap_to_best")], rows))
        sections.append({
            "id": "underdiagnosis", "title": "Underdiagnosis by group", "tables": tables, "notes": [],
            "intro": (f"The share of patients with a finding (true class is not '{nf}') whom the model calls "
                      f"'{nf}' at the cell's threshold ({threshold}), per group, as in "
                      "Seyyed-Kalantari et al., Nature Medicine 2021. The gap to the best group is a point estimate."),
            "figure": figures.get("underdiagnosis")})
    return sections


def _calibration_section(cell: Any, an: dict[str, Any], figures: dict[str, Any]) -> list[dict[str, Any]]:

    m = cell.metrics
    sections: list[dict[str, Any]] = []
    cal = an.get("calibration") or {}
    if panel_attributes(cal) or cal.get("overall"):
        tables = []
        heads = [THead("group", "group", False), THead("n", "n"), THead("ECE ↓ (x100)", "ece"),
                 THead("calibration slope (1 = calibrated)", "slope"),
                 THead("calibration intercept (0 = calibrated)", "intercept"), THead("note", "note", False)]

        def cal_row(name: str, fit: dict[str, Any], ece: Any, ece_ci: Any) -> list[TCell]:
            return [TCell(name, name), TCell(str(fit.get("n", "?")), _num(fit.get("n"))),
                    TCell(pct(ece, ece_ci), _num(ece)), TCell(_raw(fit.get("slope"), fit.get("slope_ci")),
                                                              _num(fit.get("slope"))),
                    TCell(_raw(fit.get("intercept"), fit.get("intercept_ci")), _num(fit.get("intercept"))),
                    TCell(str(fit.get("reason") or ""))]

        if isinstance(cal.get("overall"), dict):
            tables.append(Table("calibration-overall", "Calibration of all evaluated samples", heads, [
                cal_row("all", cal["overall"], lookup(m, "overall", "ece"), lookup(m, "ci", "overall", "ece"))]))
        for attr in panel_attributes(cal):
            rows = [cal_row(g, fit or {}, lookup(m, "attributes", attr, "groups", g, "ece"),
                            lookup(m, "ci", "attributes", attr, "groups", g, "ece"))
                    for g, fit in (cal[attr].get("groups") or {}).items()]
            tables.append(Table(f"calibration-{slug(attr)}", f"Calibration by {attr}: ECE (x100, [95% bootstrap "
                                "interval]), slope and intercept ([95% Wald interval])", heads, rows))
        sections.append({
            "id": "calibration", "title": "Calibration by group", "tables": tables, "notes": [],
            "intro": ("Per group: the reliability diagram (mean predicted probability of the positive class against "
                      f"the observed fraction positive, in the suite's {m.get('ece_bins', 15)} ECE bins), the ECE, "
                      "and the logistic calibration slope (logit P(y=1) = a + b·logit p; below 1: overconfident) and "
                      "intercept (calibration-in-the-large, slope fixed at 1; above 0: the model under-predicts)."),
            "figure": figures.get("calibration")})
    return sections


def _leakage_section(cell: Any, an: dict[str, Any], figures: dict[str, Any]) -> list[dict[str, Any]]:

    sections: list[dict[str, Any]] = []
    leak = an.get("leakage") or {}
    if panel_attributes(leak):
        rows = []
        for attr in panel_attributes(leak):
            r = leak[attr]
            ci = r.get("ci")
            chance = _num(r.get("chance")) or 0.5
            beyond = ("yes" if isinstance(ci, list) and None not in ci and ci[0] > chance else
                      "no" if isinstance(ci, list) and None not in ci else "n/a")
            rows.append([TCell(attr, attr), TCell(pct(r.get("auc"), ci), _num(r.get("auc"))),
                         TCell(pct(chance), chance), TCell(beyond),
                         TCell(str(r.get("n", "?")), _num(r.get("n"))),
                         TCell(", ".join(r.get("groups") or [])), TCell(str(r.get("note") or ""))])
        sections.append({
            "id": "leakage", "title": "Attribute leakage", "notes": [],
            "tables": [Table("leakage", "Probe AUC for each protected attribute from the frozen image embeddings "
                             "(x100, [95% bootstrap interval]) against chance",
                             [THead("attribute", "attribute", False), THead("probe AUC", "auc"),
                              THead("chance", "chance"), THead("interval above chance", "above", False),
                              THead("test samples", "n"), THead("groups", "groups", False),
                              THead("note", "note", False)], rows)],
            "intro": ("How well a cross-validated logistic regression on the frozen image embeddings (fitted on "
                      f"{fit_description(leak)}, scored on test) recovers each protected attribute: what a linear "
                      "read-out can see, not what the model uses."),
            "figure": figures.get("leakage")})
    return sections


def _power_section(cell: Any, an: dict[str, Any], figures: dict[str, Any]) -> list[dict[str, Any]]:

    sections: list[dict[str, Any]] = []
    power = an.get("power") or {}
    if panel_attributes(power):
        rows = []
        notes = []
        for attr in panel_attributes(power):
            r = power[attr]
            mde, gap, ci = r.get("mde_auc_gap"), r.get("observed_gap"), r.get("observed_gap_ci")
            if underpowered(gap, ci, mde):
                verdict = f"underpowered: gaps below {pct(mde)} could not be seen"
                notes.append(f"{attr}: AUC gap {pct(gap, ci)} includes 0 — {verdict}")
            elif isinstance(ci, list) and None not in ci and not ci[0] <= 0 <= ci[1]:
                verdict = "gap detected (interval excludes 0)"
            elif mde is None and r.get("reason") is None and gap is not None:
                verdict = "underpowered: no AUC gap down to chance could be seen at 80% power"
                notes.append(f"{attr}: AUC gap {pct(gap, ci)} — {verdict}")
            else:
                verdict = r.get("reason") or "interval includes 0; the gap reaches the MDE"
            rows.append([TCell(attr, attr), TCell(" vs ".join(r.get("pair") or []) or "–"),
                         TCell(pct(mde) if mde is not None or r.get("reason") else "none above chance",
                               _num(mde)), TCell(pct(gap, ci), _num(gap)), TCell(verdict),
                         TCell(pct(r.get("mde_dpd")), _num(r.get("mde_dpd"))),
                         TCell(pct(r.get("mde_deodds")), _num(r.get("mde_deodds")))])
        sections.append({
            "id": "power", "title": "Statistical power", "notes": notes,
            "tables": [Table("power", "Minimum detectable differences at 80% power, two-sided alpha 0.05 (x100), "
                             "beside the observed best − worst group AUC gap [95% Wald interval]",
                             [THead("attribute", "attribute", False), THead("groups compared", "pair", False),
                              THead("MDE, AUC gap", "mde_auc_gap"), THead("observed AUC gap", "observed_gap"),
                              THead("reading", "reading", False), THead("MDE, DPD", "mde_dpd"),
                              THead("MDE, DEOdds", "mde_deodds")], rows)],
            "intro": ("The smallest gap between the best and worst group that this test set could detect (Hanley-"
                      "McNeil AUC variances; two-proportion tests for DPD and DEOdds), beside the gap observed. "
                      "A gap whose interval includes 0 and that lies below the MDE says little: the test could not "
                      "have seen it."),
            "figure": figures.get("power")})
    return sections


def _prompts_section(cell: Any, an: dict[str, Any], figures: dict[str, Any]) -> list[dict[str, Any]]:

    sections: list[dict[str, Any]] = []
    prompts = an.get("prompts") or {}
    records = prompts.get("templates") or []
    if records:
        attrs = list(dict.fromkeys(a for r in records for a in (r.get("gaps") or {})))
        heads = [THead("prompt set", "kind", False), THead("template", "template", False), THead("AUC", "auc")]
        heads += [THead(f"AUC gap, {a}", f"gap:{a}") for a in attrs]
        rows = []
        for r in records:
            gaps = r.get("gaps") or {}
            rows.append([TCell(str(r.get("kind")), str(r.get("kind"))), TCell(str(r.get("template"))),
                         TCell(pct(r.get("auc")), _num(r.get("auc")))]
                        + [TCell(pct((gaps.get(a) or {}).get("gap")), _num((gaps.get(a) or {}).get("gap")))
                           for a in attrs])
        spread = prompts.get("spread") or {}
        srows = []
        auc = spread.get("auc") or {}
        srows.append([TCell("AUC", "auc"), TCell(pct(auc.get("min")), _num(auc.get("min"))),
                      TCell(pct(auc.get("max")), _num(auc.get("max"))), TCell(pct(auc.get("sd")), _num(auc.get("sd"))),
                      TCell(str(auc.get("n", "?"))), TCell("–"), TCell("–")])
        for a, s in (spread.get("gaps") or {}).items():
            same = s.get("same_sign")
            srows.append([TCell(f"AUC gap, {a}", a), TCell(pct(s.get("min")), _num(s.get("min"))),
                          TCell(pct(s.get("max")), _num(s.get("max"))), TCell(pct(s.get("sd")), _num(s.get("sd"))),
                          TCell(str(s.get("n", "?"))),
                          TCell("n/a" if same is None else "yes" if same else "no"),
                          TCell(", ".join(s.get("worst_groups") or []))])
        sections.append({
            "id": "prompts", "title": "Prompt sensitivity (zero-shot)", "notes": [],
            "tables": [Table("prompts", "AUC and each attribute's AUC gap (best − worst group) per prompt set (x100); "
                             "the ensemble is the cell's own predictions", heads, rows),
                       Table("prompts-spread", "Spread over the single prompt sets (ensemble left out; x100, SD with "
                             "ddof 1) and whether every prompt set ranks the same group worst",
                             [THead("quantity", "quantity", False), THead("min", "min"), THead("max", "max"),
                              THead("SD", "sd"), THead("prompt sets", "n"),
                              THead("same worst group under every prompt", "same", False),
                              THead("worst groups seen", "worst", False)], srows)],
            "intro": ("The zero-shot head rebuilt for each task-card template, the family's released prompts and "
                      "fixed variants (--adapt-arg templates=all): how much the AUC and the fairness gaps move "
                      "with the wording alone. Per-template values have no intervals."),
            "figure": figures.get("prompts")})
    return sections


_SECTIONS = {"underdiagnosis": _underdiagnosis_section, "calibration": _calibration_section, "leakage": _leakage_section, "power": _power_section, "prompts": _prompts_section}


def analysis_sections(cell: Any, figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One section per analysis the cell recorded: ``{"id", "title", "intro", "tables", "notes", "figure"}``;
    ``figures``: the inlined figure per analysis name (or None). A record that cannot be read (an edited
    metrics.json) gets a section that says so instead of its tables."""
    an = cell.doc.get("analyses") or {}
    if not isinstance(an, dict):
        an = {}
    sections: list[dict[str, Any]] = []
    for name, build in _SECTIONS.items():
        try:
            sections += build(cell, an, figures)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            sections.append({"id": name, "title": name, "tables": [], "notes": [], "figure": figures.get(name),
                             "intro": f"analyses.{name} in metrics.json could not be read ({type(exc).__name__}: "
                                      f"{exc}); its table is left out."})
    return sections


def _first(records: dict[str, Any], key: str) -> Any:
    return next((r.get(key) for r in records.values() if isinstance(r, dict) and r.get(key) is not None), "?")
