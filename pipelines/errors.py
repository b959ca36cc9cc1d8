"""The project's error types, in a module light enough for the command line to import at start-up."""

from __future__ import annotations


class BadInputError(ValueError):
    """Input the user can fix (data, params, arguments): the CLI prints the message and exits with code 2."""


class CrmDataError(BadInputError):
    """The CRM data breaks the contract; the message names table, column and example rows."""


class ParamsError(BadInputError):
    """params.yaml is missing, malformed or breaks the typed contract."""


class DatabaseUnavailableError(BadInputError):
    """The database cannot be reached or refuses the connection; the message names it (password masked)."""
