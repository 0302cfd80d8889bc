"""The library pipeline: one module per step, from a config to the report.

::

    config --build_study--> (pool, keep)                      jaxsam.pipeline.study
           --train_and_export--> RUN (logits, metrics)        jaxsam.pipeline.study
    RUN    --score_run--> report; write=True: report.json/md/html, jaxsam.pipeline.score
                          scores/, examples.parquet, by_class.csv, plots/
    RUNs   --analyze_runs--> analysis.json, plots/*.png       jaxsam.pipeline.analyze
    RUNs   --load_reports / plot_comparison--> table, ROC     jaxsam.pipeline.compare
    .npy   --import_arrays--> RUN (logits from elsewhere)     jaxsam.pipeline.import_logits

Each step calls the layer below it and nothing above: :mod:`jaxsam.data` builds the pool and
masks, :mod:`jaxsam.train` trains the models and computes their logits, :mod:`jaxsam.store`
reads and writes the run directory, :mod:`jaxsam.scoring` runs the attacks, :mod:`jaxsam.metrics`
and :mod:`jaxsam.analysis` hold the statistics, :mod:`jaxsam.report` and :mod:`jaxsam.plots`
render them. The ``jaxsam`` commands (:mod:`jaxsam.commands`) parse arguments, call one of these
functions and print; the experiment runner (:mod:`experiments.run`) calls them too.

The names below are imported on first use, so that ``import jaxsam.pipeline`` stays cheap.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "build_study": "study",
    "train_and_export": "study",
    "finish_study": "study",
    "accuracy_metrics": "study",
    "score_run": "score",
    "score_outputs": "score",
    "analyze_runs": "analyze",
    "load_reports": "compare",
    "plot_comparison": "compare",
    "import_arrays": "import_logits",
    "import_run": "import_logits",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'jaxsam.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"jaxsam.pipeline.{_WHERE[name]}"), name)
