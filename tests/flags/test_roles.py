"""The role rules themselves: each action is its own, with the least role that may take it."""

import pytest

from flags.roles import Action, allows
from tests import factories

pytestmark = pytest.mark.django_db


def test_editing_a_flag_is_not_configuring_a_protected_environment():
    # Renaming a flag or adding a variant is the editor's, whichever environment is in view;
    # only a flag's configuration in a protected environment needs a publisher.
    project = factories.project()
    production = factories.environment(project, "production")
    editor = factories.member(project, "editor")
    assert allows(editor, project, Action.EDIT_FLAGS, production)
    assert not allows(editor, project, Action.CONFIGURE, production)
    assert allows(editor, project, Action.CONFIGURE, factories.environment(project, "staging"))


def test_every_action_is_its_own_member():
    assert len(Action) == 5
    assert Action.EDIT_FLAGS is not Action.CONFIGURE
