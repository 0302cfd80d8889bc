"""Training many shadow models at once, and exporting their logits."""

from jaxsam.train.loop import accuracy_metrics, export_logits, train_and_export, train_ensemble

__all__ = ["accuracy_metrics", "export_logits", "train_and_export", "train_ensemble"]
