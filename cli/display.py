"""Rich output for the CLI: progress on stderr, tables on stdout."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

out = Console()
err = Console(stderr=True)


class _RichTask:
    def __init__(self, owner: "RichProgress", task_id):
        self._owner, self._id = owner, task_id

    def advance(self, amount: float = 1) -> None:
        self._owner.bar.advance(self._id, amount)

    def update(self, *, total: float | None = None, status: str | None = None) -> None:
        fields = {}
        if total is not None:
            fields["total"] = total
        if status is not None:
            fields["status"] = status
        self._owner.bar.update(self._id, **fields)

    def close(self) -> None:
        self._owner.bar.update(self._id, visible=False)
        self._owner.finish_if_idle()


class RichProgress:
    """Progress bars with elapsed time and ETA, on stderr (stdout stays clean for --json)."""

    def __init__(self):
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=err,
            transient=True,
        )
        self._started = False

    def task(self, description: str, total: float | None = None) -> _RichTask:
        if not self._started:
            self.bar.start()
            self._started = True
        return _RichTask(self, self.bar.add_task(description, total=total, status=""))

    def note(self, message: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")

    def finish_if_idle(self) -> None:
        if self._started and all(t.finished or not t.visible for t in self.bar.tasks):
            self.bar.stop()
            self._started = False


def probes_table(entries, broken) -> None:
    table = Table(title="Probes")
    table.add_column("name", style="bold")
    table.add_column("summary")
    table.add_column("from")
    for entry in entries.values():
        table.add_row(entry.name, entry.summary, entry.origin)
    out.print(table)
    for plugin in broken:
        err.print(f"[yellow]skipped plugin {plugin.name} ({plugin.origin}): {plugin.error}")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return text if len(text) < 80 else text[:77] + "..."
    return str(value)


def _result_table(title: str, result: dict) -> Table:
    rows = result.get("models") if isinstance(result, dict) else None
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        table = Table(title=title)
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_format(row.get(c)) for c in rows[0]))
        return table
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in (result or {}).items():
        table.add_row(key, _format(value))
    return table


def results_summary(document: dict) -> None:
    for name, result in document["results"].items():
        out.print(_result_table(name, result))
    out.print(f"store: [bold]{document['store']}[/bold]")


def store_tables(summary: dict) -> None:
    attrs = summary["attrs"]
    out.print(
        f"[bold]{summary['store']}[/bold]  {attrs.get('format')} v{attrs.get('format_version')}, "
        f"keras-landscape {attrs.get('package_version')}, keras {attrs.get('keras_version')}, "
        f"backend {attrs.get('backend')}, created {attrs.get('created')}"
    )
    if attrs.get("command"):
        out.print(f"command: {attrs['command']}")
    data = summary.get("data") or {}
    out.print(
        f"data: {data.get('spec')}  loss: {data.get('loss')}  level: {data.get('level_fn')} "
        f"on {data.get('split')}  parameters: {summary.get('parameters')}"
    )
    models = Table(title="Models")
    for column in ("name", "source", "role"):
        models.add_column(column)
    for model in summary["models"]:
        models.add_row(model["name"], str(model.get("source", "")), str(model.get("role", "")))
    out.print(models)
    for run in summary["runs"]:
        status = run["status"]
        colour = {"complete": "green", "running": "yellow", "interrupted": "yellow"}.get(status, "red")
        out.print(f"\n[bold]run {run['name']}[/bold] (probe {run['probe']}): [{colour}]{status}[/{colour}]")
        out.print(f"config: {json.dumps(run['config'])}")
        if run.get("error"):
            out.print(f"error: {run['error']}")
        if run["result"] is not None:
            out.print(_result_table(f"{run['name']} result", run["result"]))
        else:
            stored = ", ".join(f"{k}: {n} rows" for k, n in run["stored"].items()) or "nothing yet"
            out.print(f"incomplete; stored so far: {stored}. Resume with --resume --out {summary['store']}.")
