"""Probe `evaluate`: loss, level function, gradient norm and parameter count of each model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import NonFiniteLossError
from keras_landscape.registry import ProbeBase
from keras_landscape.report.tables import table


def evaluate_tables(name: str, result: dict) -> list[dict] | None:
    rows = [r for r in result.get("models") or [] if isinstance(r, dict)]
    if not rows:
        return None  # not the usual shape: a generic table
    first = rows[0]
    level = f"level ({first.get('level_fn', '?')}, {first.get('split', '?')})"
    columns = ["model", "loss (train)", level, "|grad| (train)", "parameters"]
    keys = ["loss", "level", "grad_norm", "parameters"]
    notes = [
        "loss: mean training loss + regularisers on the training split; "
        "|grad|: its gradient norm; all with each model's own statistics (Keras's "
        "evaluate)"
    ]
    if any("level_recomputed" in r for r in rows):
        columns.insert(3, "level, recomputed BN stats")
        keys.insert(2, "level_recomputed")
        notes.append(
            "level, recomputed BN stats: the level the path probes see at the model "
            "(--bn-stats recompute)"
        )
    made = table(name, columns, [[r.get("model")] + [r.get(k) for k in keys] for r in rows], notes)
    return [made]


class EvaluateProbe(ProbeBase):
    """E(theta), the level function and ||grad E(theta)|| for every model given."""

    name = "evaluate"
    summary = "Loss, level function, gradient norm and parameter count of each model."
    result_fields = {
        "models": "one row per model: model, source, loss (mean training loss + regularisers "
        "on the training split), level (level function there), level_fn, split, grad_norm "
        "(||grad E|| of the training loss on the training split), parameters; all with the "
        "model's own non-trainable state, as Keras's evaluate. BatchNorm models under "
        "bn_stats=recompute add level_recomputed (the level the path probes see at this "
        "model: statistics re-estimated at its weights) and recomputed_minus_own",
    }

    @dataclass
    class Config:
        """Options of `evaluate`.

        Attributes:
            allow_nonfinite: report NaN/inf losses instead of stopping with an error.
        """

        allow_nonfinite: bool = False

    no_figure = "a table of models (see klandscape show)"

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict] | None:
        return evaluate_tables(run_name, result)

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        task = progress.task("evaluate", total=len(models))
        rows = []
        for minimum in models:
            # The model's own state: what Keras's evaluate gives for the model file.
            loss, grad = landscape.loss_and_grad(minimum.theta, state=minimum.state)
            evaluation = landscape.evaluate(minimum.theta, state=minimum.state)
            grad_norm = float(np.linalg.norm(grad.astype(np.float64)))
            if not self.config.allow_nonfinite and not all(
                math.isfinite(v) for v in (loss, evaluation.level, grad_norm)
            ):
                raise NonFiniteLossError(
                    f"The loss of model {minimum.name!r} ({minimum.source}) is not finite "
                    f"(loss {loss}, level {evaluation.level}, gradient norm {grad_norm}) on "
                    f"{landscape.describe()['spec']!r}: the weights or the data hold NaN/inf, or "
                    "the loss does not suit the outputs (e.g. log of a non-positive probability). "
                    "Set allow_nonfinite=true to report it anyway."
                )
            row = {
                "model": minimum.name,
                "source": minimum.source,
                "loss": loss,
                "level": evaluation.level,
                "level_fn": landscape.level_name,
                "split": landscape.split,
                "grad_norm": grad_norm,
                "parameters": landscape.size,
            }
            if landscape.recomputes:
                # What the path probes see at this model: statistics recomputed at theta.
                path_level = landscape.evaluate(
                    minimum.theta, state=minimum.state, recompute=True
                ).level
                row["level_recomputed"] = path_level
                row["recomputed_minus_own"] = path_level - evaluation.level
            rows.append(row)
            store.append("loss", np.float64(loss))
            store.append("level", np.float64(evaluation.level))
            store.append("grad_norm", np.float64(grad_norm))
            task.advance()
        task.close()
        return {"models": rows}
