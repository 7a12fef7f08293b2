"""Every exception Assay raises on purpose.

Messages name the bad value and say how to fix it; the CLI prints ``str(error)`` as its
one line and the server turns it into one JSON:API error.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base class of every error Assay raises on purpose."""


class NotEnabledError(AssayError, ValueError):
    """An SDK call that needs ``LLMObs.enable()`` was made before it."""


class ConfigurationError(AssayError, ValueError):
    """A setting or environment variable has a value Assay cannot use."""


class NotFoundError(AssayError, LookupError):
    """Something looked up by id or name does not exist."""


class DatasetNotFoundError(NotFoundError, ValueError):
    """No dataset with that id or name (``ValueError`` too, as in ddtrace)."""


class ExperimentNotFoundError(NotFoundError, ValueError):
    """No experiment with that id, id prefix or name."""


class DatasetError(AssayError, ValueError):
    """A dataset edit or load that cannot be done as asked."""


class ExperimentError(AssayError, RuntimeError):
    """An experiment that cannot run as configured, or a failure raised by ``raise_errors``."""


class BudgetExceededError(ExperimentError):
    """An experiment stopped starting calls because its estimated cost reached the budget."""


class StoreError(AssayError):
    """The store cannot be opened or migrated."""
