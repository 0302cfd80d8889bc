"""Training many shadow models at once, and exporting their logits.

The driver that takes a config to a finished run directory, ``train_and_export``, is the
pipeline's (:mod:`jaxsam.pipeline.study`): this package is the layer below it.
"""

from jaxsam.train.loop import export_logits, train_ensemble

__all__ = ["export_logits", "train_ensemble"]
