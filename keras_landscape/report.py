"""Reading a store back into plain data for `klandscape show` and scripts."""

from __future__ import annotations

from keras_landscape.store import Store


def summarize_store(path: str) -> dict:
    """Everything a reader needs from a store, as JSON-ready data.

    Works on stores of interrupted runs: each run reports its status and, when it is not
    complete, how much of it is stored (rows per dataset) instead of a result.
    """
    with Store.open(path, "r") as store:
        layout = store.read_layout() if store.has_layout() else None
        models = []
        for name in store.model_names():
            entry = store.read_model(name)
            models.append({"name": name, **entry["attrs"]})
        runs = []
        for name in store.run_names():
            run = store.run(name)
            runs.append(
                {
                    "name": name,
                    "probe": run.probe,
                    "status": run.status,
                    "config": run.config,
                    "result": run.result,
                    "stored": {key: run.length(key) for key in run.keys()},
                    **{
                        k: v
                        for k, v in run.get_attrs(None).items()
                        if k in ("started", "finished", "error", "seed")
                    },
                }
            )
        return {
            "store": store.path,
            "attrs": store.attrs(),
            "parameters": layout["size"] if layout else None,
            "variables": len(layout["paths"]) if layout else 0,
            "data": store.read_data_info(),
            "models": models,
            "runs": runs,
        }
