"""Formatting and the one markdown renderer of every results table (make_tables.py, and through
it memory_table.py and e2e_table.py): numbers with units, mean ± std, hardware names, the
command that fills a missing cell, markdown and LaTeX escaping."""

import re
import statistics

GIB = 2**30


BYTE_UNITS = ((GIB, "GB"), (2**20, "MB"), (2**10, "KB"), (1, "B"))


DURATION_UNITS = ((3600, "h"), (60, "min"), (1, "s"))


def cpu_model(name):
    """'Intel Xeon', 'AMD EPYC 7763': a CPU's model name without trademarks, core counts,
    clock speeds and the words CPU/Processor; None for none."""
    if not name:
        return None
    text = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b|\d+-Core|@.*", " ", str(name))
    return " ".join(text.split()) or str(name)


def hardware_label(rec):
    """The hardware a record ran on, by model: the GPU's (e.g. H100) if it used one, else the
    CPU's (e.g. AMD EPYC); "cpu" when the record names neither."""
    gpu = rec["provenance"].get("gpu")
    if not gpu:
        return cpu_model(rec["provenance"].get("cpu")) or "cpu"
    words = str(gpu).replace("NVIDIA", "").split()
    for w in words:  # model numbers look like A100, H100, V100, L40S
        if w[:1].isalpha() and any(c.isdigit() for c in w) and not w.endswith("GB"):
            return w
    return words[-1] if words else "gpu"


def fmt_num(x, decimals):
    return f"{x + 0.0:.{decimals}f}".replace("-0." + "0" * decimals, "0." + "0" * decimals)


def fmt_signed(x, decimals):
    """'+0.18', '-2.39'; '+0.00' when x rounds to zero, whatever its sign."""
    text = fmt_num(x, decimals)
    return text if text.startswith("-") else f"+{text}"


def pick_unit(x, units):
    for factor, name in units:
        if abs(x) >= factor:
            return factor, name
    return units[-1]


def mean_std(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def fmt_mean_std(values, decimals=2, units=None, hide_zero_std=False):
    """'97.10 ± 0.21', or '97.10' for one value; with units, scaled to the mean's unit."""
    mean, std = mean_std(values)
    factor, unit = pick_unit(mean, units) if units else (1, "")
    if unit == "B":  # whole bytes: decimals would only suggest precision that is not there
        decimals = 0
    text = fmt_num(mean / factor, decimals)
    if std is not None and not (hide_zero_std and std == 0):
        text += f" ± {fmt_num(std / factor, decimals)}"
    return f"{text} {unit}" if unit else text


SAME_RUN = "″ (same run)"


def command(task, optim, scale, overrides=""):
    """The run that fills a cell; ``overrides`` (e.g. "scale.epochs=0") go before the seed."""
    extra = f" {overrides}" if overrides else ""
    return f"`python run.py task={task} optim={optim} scale={scale}{extra} seed=0`"


def md_table(header, rows):
    """The one markdown renderer: a header and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def md_columns(layout, rows, **fill):
    """A table from a layout, [(header, cell function of a row)], and rows; headers are
    str.format templates filled from ``fill``."""
    return md_table([h.format(**fill) for h, _ in layout], [[cell(r) for _, cell in layout]
                                                           for r in rows])


def tex_escape(text):
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("±", r"$\pm$"),
        ("Δ", r"$\Delta$"),
        ("—", "--"),
    ):
        text = text.replace(a, b)
    return text
