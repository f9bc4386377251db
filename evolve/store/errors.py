"""Errors raised by the store.

Every error the store raises is a `StoreError`. Database driver failures
(`sqlalchemy.exc.SQLAlchemyError`) are wrapped in a plain `StoreError` with the original as
`__cause__`. Errors a user can fix themselves (a bad URL, an old schema) are also
`search_spaces.errors.UserError`, so the CLI prints them as one line without a traceback.
"""

from search_spaces.errors import UserError


class StoreError(Exception):
    """Base class of everything the store raises; also wraps database driver errors."""


class NotFoundError(StoreError, LookupError, UserError):
    """A run, candidate or evaluation id that is not in the store (usually a mistyped id)."""


class EvaluationStateError(StoreError, RuntimeError):
    """An operation that the evaluation's current status does not allow."""


class FinishedEvaluationError(EvaluationStateError):
    """A write to an evaluation that is already COMPLETE, FAILED or STALE (immutable)."""


class StoreConfigError(StoreError, UserError):
    """A store URL that cannot be used."""


class SchemaVersionError(StoreError, UserError):
    """The database schema is not the one this version of the code expects."""


class StoreUnreachableError(StoreError, UserError):
    """The database server does not answer, or refuses the connection."""
