"""The report as a terminal table: one row per format, one column per check, then the
notes, warnings, first-divergence lines and findings."""

from __future__ import annotations

from tfdropblock.export.core.results import LEAK_WARNING

CHECKS = ("conversion", "structure", "validity", "parity", "determinism")

# Checks without a column: the conversion shows as the row's result and error line, the
# quantized coverage as its warnings.
_NO_COLUMN = ("conversion", "coverage")


def columns(results):
    """The table's check columns: the float formats' sequence, with every other check the
    results hold placed before the next column it precedes in its own result (a quantized
    format's twin and quality come before determinism)."""
    shown = list(CHECKS[1:])
    for result in results:
        names = [name for name in result.checks if name not in _NO_COLUMN]
        for i, name in enumerate(names):
            if name not in shown:
                later = next((n for n in names[i + 1:] if n in shown), None)
                shown.insert(shown.index(later) if later else len(shown), name)
    return shown


def format_table(report):
    """A terminal table: one row per format, one column per check, then the findings."""
    shown_checks = columns(report.formats.values())
    header = ("format", *shown_checks, "result")
    rows = []
    for name, r in report.formats.items():
        cells = [name]
        for check in shown_checks:
            c = r.checks.get(check)
            if c is not None and c.details.get("status") == "vacuous":
                cells.append("vacuous")  # ran, but could not have failed: see the warnings
            elif c is not None and check == "accuracy":
                cells.append({True: "ok ", False: "FAIL ", None: ""}[c.ok]
                             + f"{100 * c.details['top1']:.1f}%")
            elif c is None or c.ok is None:
                cells.append("-")
            elif c.ok and check == "quality":
                snr = (c.details.get("worst") or {}).get("snr_db")
                cells.append("ok" if snr is None else f"ok {snr:.0f}dB" if isinstance(
                    snr, (int, float)) and snr != float("inf") else "ok inf")
            elif c.ok:
                worst = c.details.get("max_abs_error")
                cells.append("ok" if worst is None else f"ok {worst:.1e}")
            else:
                cells.append("FAIL")
        cells.append(r.status.upper())
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line("-" * w for w in widths), *map(line, rows)]
    names = report.model.get("dropblock_layers", [])
    shown = ", ".join(names[:4]) + (f", ... {len(names) - 4} more" if len(names) > 4 else "")
    out.insert(0, f"model {report.model.get('name')!r}: {len(names)} DropBlock layer(s)"
               + (f" ({shown})" if names else ""))
    for note in report.notes:
        out.append(f"note: {note}")
    if report.settings.get("exporter") != "keras":  # with Keras's, they are findings
        for name in report.training_mode_leaks or []:
            out.append(f"warning: layer {name!r} {LEAK_WARNING}")
    for name, r in report.formats.items():
        out.extend(divergence_lines(name, r.checks.get("parity")))
    for name, r in report.formats.items():
        if r.error:
            out.append(f"{name}: error: {r.error}")
        for f in r.findings:
            out.append(f"{name}: {f}")
        for f in r.warnings:
            out.append(f"{name}: warning: {f}")
    out.append("OK" if report.ok else "FAILED")
    return "\n".join(out)


# Compared layers shown on each side of the first divergence.
AROUND = 2


def divergence_lines(name, parity):
    """The table's lines on where ``name``'s artifact first diverges from Keras: the first
    divergent layer and the compared layers around it (see :mod:`.locate`)."""
    details = parity.details if parity is not None else {}
    if "layers" not in details:
        return []
    rows = details["layers"]
    compared = [r for r in rows if r["compared"]]
    first = details.get("first_divergence")
    where = f"{name}: layers ({details.get('locate_runtime')}): {len(compared)} of {len(rows)} " \
            "compared"
    if details.get("locate_reason"):
        return [f"{name}: layers not located: {details['locate_reason']}"]
    if not first:
        return [f"{where}, every one within tolerance"]
    lines = [f"{where}; first divergence: {first['layer']!r}, max abs error "
             f"{first['max_abs_error']:.3g}, {first['tolerance_ratio']:.3g}x the tolerance "
             f"({first['diverging_layers']} layer(s) beyond it)"]
    if first.get("uncompared_inputs"):
        lines.append(f"{name}:   not compared before it (the divergence may start there): "
                     f"{', '.join(first['uncompared_inputs'])}")
    at = next(i for i, r in enumerate(compared) if r["layer"] == first["layer"])
    for row in compared[max(0, at - AROUND):at + AROUND + 1]:
        mark = ">" if row["layer"] == first["layer"] else " "
        scaled = row["max_scaled_error"]
        lines.append(f"{name}: {mark} {row['layer']:<32} {row['class']:<22} "
                     f"abs {row['max_abs_error']:.2e}  scaled "
                     + (f"{scaled:.2e}" if scaled is not None else "-") +
                     f"  x tol {row['tolerance_ratio']:.2g}")
    return lines
