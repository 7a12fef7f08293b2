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


class BaselineNotFoundError(NotFoundError, ValueError):
    """No baseline to compare with: none pinned, or none matching a ``tag:`` or ``branch:``."""


class BaselineError(AssayError, ValueError):
    """A baseline that cannot be used as given: a malformed spec, or the candidate itself."""


class ApiKeyNotFoundError(NotFoundError, ValueError):
    """No live API key with that name, nor any key with that id or id prefix."""


class ApiKeyError(AssayError, ValueError):
    """An API key that cannot be created as asked (its name is taken or invalid)."""


class DatasetError(AssayError, ValueError):
    """A dataset edit or load that cannot be done as asked."""


class ExperimentError(AssayError, RuntimeError):
    """An experiment that cannot run as configured, or a failure raised by ``raise_errors``."""


class BudgetExceededError(ExperimentError):
    """An experiment stopped starting calls because its estimated cost reached the budget."""


class StoreError(AssayError):
    """The store cannot be opened or migrated."""


class QueryError(AssayError, ValueError):
    """A search query that cannot be parsed or does not fit the experiment's facets.

    ``query`` is the text as given and ``position`` the character offset (from 0) of the
    offending part, or ``None`` when no single place is at fault. ``str(error)`` is the
    message followed, when there is a position, by the query and a caret under it::

        Unexpected ')' at position 11; there is no '(' for it to close
          @a:(x OR y))
                     ^
    """

    def __init__(self, message: str, *, query: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.query = query
        self.position = position

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments are not in ``args``; without this, unpickling fails.
        return (_query_error, (self.message, self.query, self.position))

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        # One display line: other whitespace would move the caret off its character.
        shown = "".join(" " if character.isspace() else character for character in self.query)
        return f"{self.message}\n  {shown}\n  {' ' * self.position}^"


def _query_error(message: str, query: str, position: int | None) -> QueryError:
    return QueryError(message, query=query, position=position)
