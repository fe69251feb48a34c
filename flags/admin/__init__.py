"""The Admin UI: Django's admin, arranged for product managers and guarded by project roles.

Every write goes through `flags.services`; who may do what comes from `flags.roles`, the
same rules as the REST API. Each module registers its pages.
"""

from flags.admin import audit, experiments, flags, projects, rollouts, segments

__all__ = ["audit", "experiments", "flags", "projects", "rollouts", "segments"]
