"""The pure-Python flag evaluation engine: compile a flag document, evaluate flags.

Imports nothing from Django or the rest of the project, so SDKs can embed it.
"""

from .conditions import OPERATORS, Operator, check_condition
from .errors import DocumentError
from .results import ErrorCode, EvaluationResult, Reason
from .snapshot import BOOLEAN_VARIANTS, Snapshot, check_serving, compile_document

__all__ = [
    "BOOLEAN_VARIANTS",
    "OPERATORS",
    "DocumentError",
    "ErrorCode",
    "EvaluationResult",
    "Operator",
    "Reason",
    "Snapshot",
    "check_condition",
    "check_serving",
    "compile_document",
]
