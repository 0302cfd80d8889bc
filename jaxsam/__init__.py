"""jaxsam: membership-inference audits of SAM vs SGD with many shadow models at once."""

__version__ = "0.1.0"


def load_run(path, *, verify: bool = True):
    """Reads a finished run directory: ``.keep``, ``.logits``, ``.labels``, ``.config``, ...

    ``verify=False`` skips the check of every file against the digests recorded when the run
    finished. See :func:`jaxsam.store.load_run`.
    """
    from jaxsam.store import load_run as _load_run

    return _load_run(path, verify=verify)


__all__ = ["__version__", "load_run"]
