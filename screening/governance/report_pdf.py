"""A site validation's report as a PDF a clinical lead can sign and file.

The same figures as the page (``site_validation.compute_report``), with what a
signature needs around them: the model version, what the cases were, who ran
the validation and when, who printed it, the verdict in words, and a line to
sign. Drawn with matplotlib (already a dependency for the evaluation plots),
page by page, in the reader's language for the words the service translates.
"""

from __future__ import annotations

import io
import textwrap

from django.utils import timezone
from django.utils.translation import gettext as _

from screening.governance import site_validation
from screening.models import SiteValidation

A4 = (8.27, 11.69)  # inches
WRAP = 95  # characters per line of body text


def _fmt(value, places: int = 3) -> str:
    return "—" if value is None else f"{value:.{places}f}"


def _with_ci(value, ci) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} ({_fmt(ci[0])}–{_fmt(ci[1])})" if ci else f"{value:.3f}"


def _page(pdf, draw) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=A4)
    draw(figure)
    pdf.savefig(figure)


def _text_page(figure, lines: list[tuple[str, str]]) -> None:
    """Lines of (style, text) top to bottom: "h1", "h2", "body" (wrapped) or "mono" (a table row)."""
    y = 0.95
    sizes = {"h1": 15, "h2": 11.5, "body": 9, "mono": 7.5}
    for style, text in lines:
        wrapped = textwrap.wrap(text, WRAP) if style == "body" else [text]
        for line in wrapped or [""]:
            figure.text(
                0.07,
                y,
                line,
                fontsize=sizes[style],
                family="monospace" if style == "mono" else "sans-serif",
                weight="bold" if style.startswith("h") else "normal",
                va="top",
            )
            y -= 0.022 if style != "h1" else 0.035
        y -= 0.008 if style in ("body", "h2") else 0


def _operating_rows(report: dict) -> list[tuple[str, str]]:
    header = f"{'':<28}{'threshold':>10} {'TP/FN/TN/FP':>16}  {'sensitivity':<22}{'specificity':<22}"
    rows = [("mono", header)]
    points = [(_("The model's threshold"), report["at_threshold"])]
    points += [(f"≥ {p['target']:.2f}", p) for p in report.get("proposals", [])]
    for title, figures in points:
        if figures.get("threshold") is None:
            rows.append(
                (
                    "mono",
                    f"{title[:27]:<28}{'—':>10}  "
                    + _("needs %(n)d pneumonia cases") % {"n": figures["pneumonia_needed"]},
                )
            )
            continue
        c = figures["confusion"]
        counts = f"{c['tp']}/{c['fn']}/{c['tn']}/{c['fp']}"
        rows.append(
            (
                "mono",
                f"{title[:27]:<28}{figures['threshold']:>10.3f} {counts:>16}  "
                f"{_with_ci(figures['sensitivity'], figures['ci']['sensitivity']):<22}"
                f"{_with_ci(figures['specificity'], figures['ci']['specificity']):<22}",
            )
        )
        rows.append(
            (
                "mono",
                f"{'':<56}PPV {_with_ci(figures['ppv'], figures['ci']['ppv'])}  "
                f"NPV {_with_ci(figures['npv'], figures['ci']['npv'])}",
            )
        )
    return rows


def _subgroup_rows(report: dict) -> list[tuple[str, str]]:
    rows = []
    for dimension, groups in (report.get("subgroups") or {}).items():
        rows.append(("h2", str(site_validation.SUBGROUP_TITLES.get(dimension, dimension))))
        rows.append(
            ("mono", f"{'group':<22}{'pneumonia':>10}{'normal':>8}  {'AUC':<22}{'sensitivity':<22}{'specificity':<22}")
        )
        for g in groups:
            auc = _with_ci(g.get("auc"), g.get("auc_ci")) if "auc" in g else "—"
            rows.append(
                (
                    "mono",
                    f"{g['group'][:21]:<22}{g['n_pneumonia']:>10}{g['n_normal']:>8}  {auc:<22}"
                    f"{_with_ci(g['sensitivity'], g['ci']['sensitivity']):<22}"
                    f"{_with_ci(g['specificity'], g['ci']['specificity']):<22}",
                )
            )
    return rows


def _charts(figure, report: dict) -> None:
    import numpy as np

    roc = np.asarray(report.get("roc") or [[0, 0], [1, 1]])
    left = figure.add_axes((0.1, 0.55, 0.38, 0.3))
    left.plot(roc[:, 0], roc[:, 1], color="#1f5fa8")
    left.plot([0, 1], [0, 1], color="#bbb", linestyle="--")
    left.set(xlabel=_("1 − specificity"), ylabel=_("sensitivity"), title=_("ROC curve"), xlim=(0, 1), ylim=(0, 1))
    right = figure.add_axes((0.58, 0.55, 0.38, 0.3))
    bins = [b for b in report.get("calibration", []) if b["n"]]
    right.scatter([b["mean_probability"] for b in bins], [b["observed_rate"] for b in bins], color="#a12222")
    right.plot([0, 1], [0, 1], color="#bbb", linestyle="--")
    right.set(
        xlabel=_("mean P(pneumonia)"), ylabel=_("observed rate"), title=_("Calibration"), xlim=(0, 1), ylim=(0, 1)
    )


def render(validation: SiteValidation, printed_by) -> bytes:
    """The PDF's bytes; the validation must have its report."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages

    report = validation.report
    overlap = report.get("training_overlap", {})
    first: list[tuple[str, str]] = [
        (
            "h1",
            _("Site validation %(id)s of model %(version)s")
            % {"id": validation.pk, "version": validation.model_version},
        ),
        ("body", f"{validation.get_source_display()}{' — ' + validation.name if validation.name else ''}."),
        (
            "body",
            _("Run by %(who)s on %(when)s; printed by %(printer)s on %(now)s.")
            % {
                "who": validation.created_by.get_username(),
                "when": timezone.localtime(validation.created_at).strftime("%Y-%m-%d %H:%M"),
                "printer": printed_by.get_username(),
                "now": timezone.localtime().strftime("%Y-%m-%d %H:%M"),
            },
        ),
        ("h2", _("Verdict")),
        ("body", site_validation.verdict_message(report)),
        ("h2", _("Cases")),
        (
            "body",
            _(
                "%(cases)d cases: %(pneumonia)d pneumonia and %(normal)d normal scored and counted; %(rejected)d "
                "rejected, %(failed)d failed, %(unlabelled)d without a label. %(matched)d of %(checked)d checked "
                "cases are training images (left out); %(unchecked)d could not be checked."
            )
            % {
                "cases": report["cases"],
                "pneumonia": report["n_pneumonia"],
                "normal": report["n_normal"],
                "rejected": report["rejected"],
                "failed": report["failed"],
                "unlabelled": report["unlabelled"],
                "matched": overlap.get("matched", 0),
                "checked": overlap.get("checked", 0),
                "unchecked": overlap.get("unchecked", 0),
            },
        ),
    ]
    if "auc" in report:
        first += [
            ("h2", "AUC"),
            (
                "body",
                f"{report['auc']:.3f} (95 % CI {report['auc_ci'][0]:.3f}–{report['auc_ci'][1]:.3f}, "
                f"{report.get('auc_ci_method', '')}); "
                + _("adoption needs a lower bound of at least")
                + f" {report['min_auc_lower_bound']:.2f}.",
            ),
            ("h2", _("Operating points")),
            (
                "body",
                _("Each figure with its exact confidence interval (Clopper–Pearson, %(level)s).") % {"level": "95 %"},
            ),
            *_operating_rows(report),
        ]
    first += [
        ("h2", ""),
        ("body", _("Signature of the clinical lead, date:") + " " + "_" * 40),
    ]

    buffer = io.BytesIO()
    metadata = {
        "Title": f"Site validation {validation.pk} of model {validation.model_version}",
        "Subject": report.get("message", ""),
        "Author": validation.created_by.get_username(),
        "Creator": "pneumonia screening service",
    }
    with PdfPages(buffer, metadata=metadata) as pdf:
        _page(pdf, lambda figure: _text_page(figure, first))
        if "roc" in report:
            _page(pdf, lambda figure: (_charts(figure, report), _text_page(figure, [("h1", _("Curves"))])))
        subgroup_rows = _subgroup_rows(report)
        if subgroup_rows:
            _page(pdf, lambda figure: _text_page(figure, [("h1", _("Subgroups")), *subgroup_rows]))
    return buffer.getvalue()
