"""Rich output for the CLI: progress on stderr, tables on stdout."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.markup import escape
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

from keras_landscape.report.tables import result_tables
from keras_landscape.report.text import printable, printable_data
from keras_landscape.store.strings import verdict_words

out = Console()
err = Console(stderr=True)


class _RichTask:
    def __init__(self, owner: RichProgress, task_id):
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


class _PlainTask:
    def __init__(self, owner: PlainProgress, description: str, total: float | None):
        self._owner, self.description, self.total = owner, description, total
        self.done, self.started, self.status = 0.0, time.monotonic(), ""
        self._said = self.started

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        self._maybe_say()

    def update(self, *, total: float | None = None, status: str | None = None) -> None:
        if total is not None:
            self.total = total
        if status is not None:
            self.status = status
        self._maybe_say()

    def _maybe_say(self) -> None:
        now = time.monotonic()
        if now - self._said >= self._owner.interval:
            self._said = now
            self._owner.say(f"{self.description}: {self._count()}{self._status()}")

    def _count(self) -> str:
        total = f"/{self.total:g}" if self.total else ""
        return f"{self.done:g}{total}, {time.monotonic() - self.started:.0f} s"

    def _status(self) -> str:
        return f", {self.status}" if self.status else ""

    def close(self) -> None:
        self._owner.say(f"{self.description}: done ({self._count()})")


class PlainProgress:
    """Progress for logs and pipes (stderr not a terminal): one line when a stage starts, one
    when it ends, and a status line at most every `interval` seconds in between."""

    def __init__(self, interval: float = 30.0):
        self.interval = interval

    @staticmethod
    def say(message: str) -> None:
        err.print(
            f"{time.strftime('%H:%M:%S')} {message}", highlight=False, markup=False, soft_wrap=True
        )

    def task(self, description: str, total: float | None = None) -> _PlainTask:
        self.say(f"{description}: started")
        return _PlainTask(self, description, total)

    def note(self, message: str) -> None:
        self.say(message)


def progress_display():
    """A live display on a terminal, plain lines anywhere else (CI logs, pipes)."""
    return RichProgress() if err.is_terminal else PlainProgress()


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


def print_tables(tables: list[dict]) -> None:
    """Tables from keras_landscape.report.tables.result_tables, with their notes below them."""
    for spec in tables:
        table = Table(title=escape(printable(spec["title"])), title_justify="left")
        for column in spec["columns"]:
            table.add_column(escape(printable(column, newlines=False)), overflow="fold")
        for row in spec["rows"]:
            table.add_row(*(escape(printable(cell, newlines=False)) for cell in row))
        out.print(table)
        for note in spec["notes"]:
            out.print(f"  [dim]{escape(printable(note))}[/dim]", highlight=False)


def results_summary(document: dict, probes: dict | None = None) -> None:
    """The results of a `probe`/`run`/`demo` document: compact tables, then the store."""
    for name, result in document["results"].items():
        print_tables(result_tables(name, (probes or {}).get(name, name), result))
    out.print(
        f"store: [bold]{escape(printable(document['store']))}[/bold]",
        highlight=False,
        soft_wrap=True,
    )


def _options_line(config: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in (config or {}).items()) or "(none)"


def _unfinished(run: dict, summary: dict) -> None:
    progress = run.get("progress") or {}
    strings = run.get("strings") or []
    expected = progress.get("strings_expected")
    finished = progress.get("strings_finished", 0)
    in_progress = progress.get("strings_in_progress") or []
    not_started = progress.get("not_started")
    parts = [f"{finished} finished", f"{len(in_progress)} in progress"]
    if not_started is not None:
        parts.append(f"{len(not_started)} not started")
    of = f" of {expected} expected" if expected is not None else ""
    out.print(
        f"no result yet. DSS strings: {', '.join(parts)}{of}.", highlight=False, soft_wrap=True
    )
    if "partners_expected" in progress:
        out.print(
            f"partners trained: {progress['partners_trained']} of {progress['partners_expected']}",
            highlight=False,
            soft_wrap=True,
        )
    if strings:
        table = Table(title=escape(f"{run['name']}: stored strings"), title_justify="left")
        for column in ("string", "state", "beads", "depth done", "level u"):
            table.add_column(column)
        for s in strings:
            if s["finished"]:
                state = verdict_words(s["connected"], s["reason"])
            else:
                state = "in progress"
            table.add_row(
                escape(s["key"] or "(run)"),
                escape(state),
                str(s["beads"]),
                str(s["depth_done"]),
                "n/a" if s["level"] is None else f"{s['level']:.4g}",
            )
        out.print(table)
    if not_started:
        shown = ", ".join(not_started[:12]) + (", ..." if len(not_started) > 12 else "")
        out.print(f"missing (not started): {escape(shown)}", highlight=False, soft_wrap=True)
    if not strings and not not_started:
        stored = ", ".join(f"{k}: {n} rows" for k, n in run["stored"].items()) or "nothing yet"
        out.print(f"stored so far: {stored}", highlight=False, soft_wrap=True)
    out.print(
        f"to continue: [bold]{escape(str(run.get('resume')))}[/bold]",
        highlight=False,
        soft_wrap=True,
    )


def store_tables(summary: dict) -> None:
    summary = printable_data(summary)  # a store is anyone's file: no escape sequences out
    attrs = summary["attrs"]
    out.print(
        f"[bold]{escape(summary['store'])}[/bold]  "
        + escape(
            f"{attrs.get('format')} v{attrs.get('format_version')}, "
            f"keras-landscape {attrs.get('package_version')}, keras {attrs.get('keras_version')}, "
            f"backend {attrs.get('backend')}, created {attrs.get('created')}"
        ),
        highlight=False,
    )
    if attrs.get("command"):
        out.print(f"command: {escape(attrs['command'])}", highlight=False, soft_wrap=True)
    data = summary.get("data") or {}
    out.print(
        escape(
            f"data: {data.get('spec')}  loss: {data.get('loss')}  level: {data.get('level_fn')} "
            f"on {data.get('split')}  parameters: {summary.get('parameters')}"
            + (f"  BatchNorm statistics: {data['bn_stats']}" if data.get("bn_stats") else "")
        ),
        highlight=False,
    )
    models = Table(title="Models", title_justify="left")
    for column in ("name", "source", "role"):
        models.add_column(column)
    for model in summary["models"]:
        models.add_row(*(escape(str(model.get(k, ""))) for k in ("name", "source", "role")))
    out.print(models)
    for run in summary["runs"]:
        status = run["status"]
        colour = {"complete": "green", "running": "yellow", "interrupted": "yellow"}.get(
            status, "red"
        )
        when = f"started {run.get('started') or '?'}"
        if run.get("finished"):
            when += f", finished {run['finished']}"
        out.print(
            f"\n[bold]run {escape(run['name'])}[/bold] (probe {escape(run['probe'])}): "
            f"[{colour}]{escape(status)}[/{colour}]  [dim]{escape(when)}[/dim]",
            highlight=False,
        )
        if status == "running":
            out.print(
                "  [yellow]not marked finished: if no klandscape process is writing this "
                "store, the run was killed[/yellow]",
                soft_wrap=True,
            )
        out.print(
            f"[dim]options: {escape(_options_line(run['config']))}[/dim]",
            highlight=False,
            soft_wrap=True,
        )
        if run.get("error"):
            out.print(f"error: {escape(run['error'])}", highlight=False, soft_wrap=True)
        if run["result"] is not None and status == "complete":
            print_tables(result_tables(run["name"], run["probe"], run["result"]))
        else:
            _unfinished(run, summary)


def plot_report(report: dict) -> None:
    """What `klandscape plot` wrote (stdout) and skipped (stderr)."""
    report = printable_data(report)  # run names and reasons come from the store
    figures = report["figures"]
    out.print(
        f"wrote {len(figures)} figure(s) to [bold]{escape(report['directory'])}[/bold]",
        highlight=False,
        soft_wrap=True,
    )
    for figure in figures:
        name = figure["path"].rsplit("/", 1)[-1]
        out.print(
            f"  {escape(name)}  [dim]{escape(figure['caption'])}[/dim]",
            highlight=False,
            soft_wrap=True,
        )
    for skip in report["skipped"]:
        what = " ".join(str(skip[k]) for k in ("run", "kind", "string") if skip.get(k))
        err.print(
            f"[dim]no figure for {escape(what or 'the store')}: {escape(skip['reason'])}[/dim]",
            highlight=False,
            soft_wrap=True,
        )
