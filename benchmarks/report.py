"""Writing a suite run: ``results.json``, ``results.md`` and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_line
from negotiation_env.jsonl import write_atomic, write_text_atomic


def _f(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    config = results["config"]
    judge = results["judge"]
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine_line(results['machine'])}  ",
        f"Judge: {judge.get('model')} ({judge.get('mode', '-')}, rubric {judge.get('rubric', '-')}); "
        f"agreement: {results['agreement_detector']}  ",
        f"Tier {config['tier']}: {len(results['scenarios'])} held-out scenarios x seeds {config['seeds']} x "
        f"decoding {config['decodings']}; judge failures: {results['judge_failures']}; "
        f"agreement checks failed: {results.get('agreement_check_failures', 0)}",
        "",
        "| agent | CA score [95% CI] | direct CA | agreement | rounds | tokens/dialogue | perplexity | instr. (prompt / instr.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["agents"]:
        ca = row["ca"]
        direct = row.get("direct_ca")
        capability = row.get("capability", {})
        lines.append(
            f"| {row['agent']} | {_f(ca['mean'])} [{_f(ca['ci95'][0])}, {_f(ca['ci95'][1])}] (n={ca['n']}) | "
            f"{_f(direct['mean']) if direct else '-'} | {_f(row['agreement_rate'])} | {_f(row['rounds_to_agreement'])} | "
            f"{_f(row['tokens_per_dialogue'], '.0f')} | {_f(capability.get('perplexity'))} | "
            f"{_f(capability.get('prompt_level_accuracy'))} / {_f(capability.get('instruction_level_accuracy'))} |"
        )
    observed = [row for row in results["agents"] if "observer" in row]
    if observed:
        lines += [
            "",
            "## Runtime constraints (observer)",
            "",
            "| agent | violations per episode | interventions per episode |",
            "|---|---|---|",
        ]
        for row in observed:
            summary = row["observer"]
            violations = (
                ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(summary["violations_per_episode"].items())
                )
                or "none"
            )
            interventions = (
                ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(summary["interventions_per_episode"].items())
                )
                or "none"
            )
            lines.append(f"| {row['agent']} | {violations} | {interventions} |")
    for criterion, title in (("ca", "CA"), ("conflict", "Conflict-resolution")):
        matrix = results["win_rates"][criterion]
        if not matrix:
            continue
        names = list(matrix)
        lines += [
            "",
            f"## {title} win rate (row vs column, by the judge's position-free verdict; ties in brackets)",
            "",
            "| | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for a in names:
            cells = []
            for b in names:
                if a == b:
                    cells.append("-")
                else:
                    w = matrix[a][b]
                    cells.append(
                        f"{_f(w['win_rate'])} ({_f(w['tie_rate'])})" if w["judged"] else "-"
                    )
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(
    results: dict[str, Any], out: Path, records: list[dict[str, Any]] | None = None
) -> list[Path]:
    """The suite's figures (scores, win-rate matrices, rounds to agreement, training curves)
    as PNG files in ``out``; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    written = [_plot_scores(results["agents"], out)]
    for criterion in ("ca", "conflict"):
        if results["win_rates"][criterion]:
            written.append(_plot_win_rates(results["win_rates"][criterion], criterion, out))
    if records:
        names = [r["agent"] for r in results["agents"]]
        written.append(_plot_rounds(records, names, results["config"]["max_turns"], out))
    for run_dir in results["config"].get("run_dirs") or []:
        path = training_curves(Path(run_dir), out)
        if path:
            written.append(path)
    return written


def _plot_scores(rows: list[dict[str, Any]], out: Path) -> Path:
    """CA scores with intervals, negotiated next to direct answers."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["agent"] for r in rows]
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.2, "ca", "negotiated"), (0.2, "direct_ca", "direct answer")):
        means = [r[key]["mean"] if key in r else np.nan for r in rows]
        low = [r[key]["mean"] - r[key]["ci95"][0] if key in r else 0 for r in rows]
        high = [r[key]["ci95"][1] - r[key]["mean"] if key in r else 0 for r in rows]
        axis.bar(
            x + offset,
            means,
            0.4,
            yerr=[np.nan_to_num(low), np.nan_to_num(high)],
            capsize=4,
            label=label,
        )
    axis.set_xticks(x, [_short(n) for n in names], rotation=20, ha="right")
    axis.set_ylabel("CA score (0-5), mean and 95% CI")
    axis.set_ylim(0, 5)
    axis.legend()
    axis.set_title("Collective Agency of the resolutions")
    figure.tight_layout()
    return _save(figure, out / "scores.png")


def _plot_win_rates(matrix: dict[str, Any], criterion: str, out: Path) -> Path:
    """One criterion's pairwise win rates, row agent against column agent."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(matrix)
    values = np.array(
        [
            [
                matrix[a][b]["win_rate"] if a != b and matrix[a][b]["judged"] else np.nan
                for b in labels
            ]
            for a in labels
        ],
        dtype=float,
    )
    figure, axis = plt.subplots(figsize=(1.3 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    image = axis.imshow(values, vmin=0, vmax=1, cmap="RdYlGn")
    for i, j in np.ndindex(values.shape):
        if not np.isnan(values[i, j]):
            axis.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=9)
    axis.set_xticks(range(len(labels)), [_short(n) for n in labels], rotation=30, ha="right")
    axis.set_yticks(range(len(labels)), [_short(n) for n in labels])
    axis.set_title(
        f"{'CA' if criterion == 'ca' else 'Conflict-resolution'} win rate (row beats column)"
    )
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    return _save(figure, out / f"win_rates_{criterion}.png")


def _plot_rounds(
    records: list[dict[str, Any]], names: list[str], max_turns: int, out: Path
) -> Path:
    """The share of each agent's episodes that agreed after 1, 2, ... turns, or never."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7, 4))
    bins = list(range(1, max_turns + 1)) + ["none"]
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        episodes = [r for r in records if r["agent"] == name and r["kind"] == "negotiated"]
        if not episodes:
            continue
        counts = [sum(r["rounds_to_agreement"] == b for r in episodes) for b in bins[:-1]]
        counts.append(sum(not r["agreement"] for r in episodes))
        axis.bar(
            np.arange(len(bins)) + index * width,
            np.array(counts) / len(episodes),
            width,
            label=_short(name),
        )
    axis.set_xticks(np.arange(len(bins)) + 0.4 - width / 2, [str(b) for b in bins])
    axis.set_xlabel("turns until agreement")
    axis.set_ylabel("share of episodes")
    axis.legend(fontsize=8)
    axis.set_title("Rounds to agreement")
    figure.tight_layout()
    return _save(figure, out / "rounds.png")


def training_curves(run_dir: Path, out: Path) -> Path | None:
    """Reward, CA, agreement and loss against the step, from a training run's TensorBoard logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    panels = [
        ("train/reward", "reward"),
        ("train/negotiation/ca_mean", "CA of judged resolutions"),
        ("train/negotiation/agreement_rate", "agreement rate"),
        ("train/loss", "loss"),
    ]
    panels = [(tag, title) for tag, title in panels if tag in series]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for axis, (tag, title) in zip(axes[0], panels, strict=True):
        points = sorted(series[tag])
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        axis.set_title(title)
        axis.set_xlabel("step")
    figure.suptitle(f"Training: {run_dir}")
    figure.tight_layout()
    return _save(figure, out / f"training_{run_dir.name}.png")


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=120), binary=True)
    plt.close(figure)
    return path


def write_results(out: Path, results: dict[str, Any], text: str) -> None:
    """A standalone benchmark's ``results.json`` (numbers written as floats) and its
    ``results.md`` (``text``), each replaced atomically; the markdown is also printed."""
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    write_text_atomic(out / "results.md", text)
    print(text)


def write_report(results: dict[str, Any], out: Path) -> None:
    """``results.md``, the plots and ``results.json``; each replaced atomically, so a run
    killed while writing leaves the previous report files whole."""
    from negotiation_env.jsonl import read_jsonl_records

    records_path = out / "records.jsonl"
    records = read_jsonl_records(records_path) if records_path.is_file() else []
    write_text_atomic(out / "results.md", markdown(results))
    results["plots"] = [str(p) for p in plot(results, out, records)]
    write_text_atomic(
        out / "results.json",
        json.dumps({**results, "episodes": records}, indent=2, default=str) + "\n",
    )
