"""Training many shadow models at once, and exporting their logits.

``train_and_export`` and ``accuracy_metrics`` belong to the pipeline
(:mod:`jaxsam.pipeline.study`, which builds on this package); they are importable from here
too, loaded on first use.
"""

from jaxsam.train.loop import export_logits, train_ensemble

__all__ = ["accuracy_metrics", "export_logits", "train_and_export", "train_ensemble"]


def __getattr__(name: str):
    if name in ("train_and_export", "accuracy_metrics"):
        from jaxsam.pipeline import study

        return getattr(study, name)
    raise AttributeError(f"module 'jaxsam.train' has no attribute {name!r}")
