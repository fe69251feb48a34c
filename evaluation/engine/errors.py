"""The one exception the engine raises: a document, condition or serving that is invalid."""

from __future__ import annotations


class DocumentError(Exception):
    """Part of a flag document is invalid.

    `field` names the offending part (`"values"`, `"rollout.variants[1].weight"`, ...) so
    that the Django side can attach the message to a form or API field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def within(self, prefix: str) -> DocumentError:
        """The same error, its field named from an enclosing object (`rules[0].conditions[1]`)."""
        return DocumentError(f"{prefix}.{self.field}" if self.field else prefix, self.message)
