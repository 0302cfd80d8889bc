"""jaxsam: membership-inference audits of SAM vs SGD with many shadow models at once."""

__version__ = "0.1.0"
