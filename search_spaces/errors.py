"""Errors a user can fix by changing their input.

The CLI prints these as one line and exits with code 2, without a traceback. Anything
that is not a `UserError` is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: a missing file, a malformed recipe, an out-of-range value."""


class RecipeError(UserError):
    """A recipe (ours or mergekit's) that cannot be used as written."""


class InvalidGenomeError(UserError):
    """A genome vector that does not decode to a recipe in its space."""
