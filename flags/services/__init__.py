"""Every write to the flag store: validate, check the role, write, audit, bump the version.

The admin, the REST API and the command line all call these functions, so a rule is
enforced once. Side effects that must follow a commit (cache, pub/sub) are registered with
`transaction.on_commit` here, never in model signals. Each module owns one part of the
store (projects, members, flags, configurations, segments, keys, experiments); this package
re-exports their public functions, so callers write `services.flag_update(...)`.
"""

from flags.services.bulk import FlagError, flags_create_many
from flags.services.configs import (
    CONFIG_FIELDS,
    RULE_FIELDS,
    change_preview,
    flag_config_update,
    flag_targets_change,
    flag_toggle,
    version_restore,
)
from flags.services.experiments import (
    EXPERIMENT_FIELDS,
    METRIC_FIELDS,
    experiment_create,
    experiment_start,
    experiment_stop,
    experiment_update,
    metric_create,
    metric_update,
)
from flags.services.flags import FLAG_FIELDS, flag_create, flag_meta, flag_update, rollout_variants
from flags.services.keys import KEY_PREFIXES, api_key_create, api_key_revoke, key_digest
from flags.services.members import membership_set
from flags.services.projects import (
    DEFAULT_ENVIRONMENTS,
    ENVIRONMENT_FIELDS,
    PROJECT_FIELDS,
    SECURE_MODE_SECRET_PREFIX,
    environment_create,
    environment_secure_mode_secret_rotate,
    environment_update,
    project_create,
    project_update,
    secure_mode_secret_prefix,
)
from flags.services.segments import (
    SEGMENT_FIELDS,
    SegmentError,
    segment_create,
    segment_delete,
    segment_update,
    segment_users,
    segments_create_many,
)
from flags.services.steps import (
    SOURCES,
    ConflictError,
    audit,
    checked_comment,
    environments_changed,
)

__all__ = [
    "CONFIG_FIELDS",
    "DEFAULT_ENVIRONMENTS",
    "ENVIRONMENT_FIELDS",
    "EXPERIMENT_FIELDS",
    "FLAG_FIELDS",
    "KEY_PREFIXES",
    "METRIC_FIELDS",
    "PROJECT_FIELDS",
    "RULE_FIELDS",
    "SECURE_MODE_SECRET_PREFIX",
    "SEGMENT_FIELDS",
    "SOURCES",
    "ConflictError",
    "FlagError",
    "api_key_create",
    "api_key_revoke",
    "audit",
    "change_preview",
    "checked_comment",
    "environment_create",
    "environment_secure_mode_secret_rotate",
    "environment_update",
    "environments_changed",
    "experiment_create",
    "experiment_start",
    "experiment_stop",
    "experiment_update",
    "flag_config_update",
    "flag_create",
    "flag_meta",
    "flag_targets_change",
    "flag_toggle",
    "flag_update",
    "flags_create_many",
    "key_digest",
    "membership_set",
    "metric_create",
    "metric_update",
    "project_create",
    "project_update",
    "rollout_variants",
    "secure_mode_secret_prefix",
    "SegmentError",
    "segment_create",
    "segment_delete",
    "segment_update",
    "segment_users",
    "segments_create_many",
    "version_restore",
]
