"""The admin's lists and pages read a bounded number of queries, however much data there is."""

import html
from urllib.parse import quote, urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from flags import services
from flags.models import Segment
from tests import factories

pytestmark = pytest.mark.django_db

SYSTEM = factories.SYSTEM


def in_segment(key: str) -> dict:
    return {"operator": "in_segment", "values": [key]}


def grow(project, count: int) -> list:
    """`count` more segments and flags, each flag's rules asking for a segment in every
    environment, with a target and a prerequisite on the flag before it."""
    start = project.flags.count()
    flags = []
    for index in range(start, start + count):
        services.segment_create(project=project, key=f"seg-{index:03}", data={}, **SYSTEM)
        flag = factories.flag(project, f"flag-{index:03}", tags=[f"team-{index % 3}"])
        for environment in ("development", "staging", "production"):
            data = {
                "rules": [
                    {
                        "conditions": [in_segment(f"seg-{index:03}")],
                        "serve": {"variant": "on"},
                    }
                ],
                "targets": [{"variant": "on", "values": [f"user-{index}"]}],
            }
            if flags:
                data["prerequisites"] = [{"flag": flags[-1].key, "variants": ["on"]}]
            factories.configure(flag, environment, **data)
        flags.append(flag)
    return flags


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


@pytest.fixture
def admin_client_of(client):
    def log_in(project):
        client.force_login(factories.user(superuser=True))
        return client

    return log_in


def test_segment_list_queries_do_not_grow_with_segments_and_rules(
    admin_client_of, django_assert_max_num_queries
):
    project = factories.project("shop")
    client = admin_client_of(project)
    url = reverse("admin:flags_segment_changelist")
    grow(project, 5)
    few = queries(client, url)
    grow(project, 45)
    with django_assert_max_num_queries(few):
        response = client.get(url)
    assert response.context["cl"].result_count == 50


def test_segment_list_names_the_flags_whose_rules_use_each_segment(admin_client_of):
    project = factories.project("shop")
    grow(project, 2)
    shared = services.segment_create(project=project, key="beta", data={}, **SYSTEM)
    users = [factories.flag(project, f"beta-{index}") for index in range(7)]
    for flag in users:
        rule = {"conditions": [in_segment("beta")], "serve": {"variant": "on"}}
        factories.configure(flag, "staging", rules=[rule])
    client = admin_client_of(project)
    page = html.unescape(client.get(reverse("admin:flags_segment_changelist")).content.decode())
    assert "beta-0, beta-1, beta-2, beta-3, beta-4 and 2 more" in page
    assert ">flag-000<" in page and ">flag-001<" in page
    change = client.get(reverse("admin:flags_segment_change", args=[shared.pk]))
    assert ", ".join(f"beta-{index}" for index in range(7)) in change.content.decode()
    unused = services.segment_create(project=project, key="nobody", data={}, **SYSTEM)
    change = client.get(reverse("admin:flags_segment_change", args=[unused.pk]))
    assert "no flag" in change.content.decode()


def test_segment_list_ignores_other_projects_rules_of_the_same_segment_key(admin_client_of):
    shop, other = factories.project("shop"), factories.project("other")
    grow(shop, 1)
    services.segment_create(project=other, key="seg-000", data={}, **SYSTEM)
    flag = factories.flag(other, "elsewhere")
    rule = {"conditions": [in_segment("seg-000")], "serve": {"variant": "on"}}
    factories.configure(flag, rules=[rule])
    client = admin_client_of(shop)
    segment = Segment.objects.get(project=shop, key="seg-000")
    change = client.get(reverse("admin:flags_segment_change", args=[segment.pk]))
    page = change.content.decode()
    assert "flag-000" in page and "elsewhere" not in page


def test_flag_list_queries_do_not_grow_with_flags(admin_client_of, django_assert_max_num_queries):
    project = factories.project("shop")
    client = admin_client_of(project)
    url = reverse("admin:flags_flag_changelist")
    grow(project, 5)
    few = queries(client, url)
    grow(project, 45)
    with django_assert_max_num_queries(few):
        response = client.get(url)
    assert response.context["cl"].result_count == 50


def test_flag_change_page_queries_do_not_grow_with_the_project(
    admin_client_of, django_assert_max_num_queries
):
    project = factories.project("shop")
    client = admin_client_of(project)
    flags = grow(project, 5)
    few = queries(client, reverse("admin:flags_flag_change", args=[flags[-1].pk]))
    flags = grow(project, 45)
    with django_assert_max_num_queries(few):
        response = client.get(reverse("admin:flags_flag_change", args=[flags[-1].pk]))
    assert response.status_code == 200


def test_flag_page_holds_its_prerequisites_not_a_menu_of_every_flag(admin_client_of):
    project = factories.project("shop")
    flags = grow(project, 30)
    client = admin_client_of(project)
    page = client.get(reverse("admin:flags_flag_change", args=[flags[-1].pk])).content.decode()
    assert f'value="{flags[-2].pk}" selected>flag-028<' in page
    assert "flag-010" not in page and "flag-027" not in page


def prerequisite_search(client, term: str, of) -> dict:
    """The prerequisite box's search; `of` goes into the query string as given (escaped)."""
    query = urlencode(
        {"app_label": "flags", "model_name": "prerequisite", "field_name": "required_flag"}
    )
    url = f"{reverse('admin:autocomplete')}?{query}&term={quote(term)}&prerequisite_of={of}"
    response = client.get(url)
    assert response.status_code == 200
    return response.json()


def test_prerequisite_search_finds_the_other_flags_of_the_project(admin_client_of):
    shop, other = factories.project("shop"), factories.project("other")
    checkout = factories.flag(shop, "checkout")
    factories.flag(shop, "checkout-v2")
    factories.flag(shop, "payments")
    factories.flag(other, "checkout-elsewhere")
    client = admin_client_of(shop)
    found = prerequisite_search(client, "checkout", checkout.pk)
    assert [result["text"] for result in found["results"]] == ["checkout-v2"]
    assert len(prerequisite_search(client, "", checkout.pk)["results"]) == 2


def test_prerequisite_search_shows_a_member_only_flags_they_may_read(client):
    shop, other = factories.project("shop"), factories.project("other")
    mine = factories.flag(shop, "checkout")
    theirs = factories.flag(other, "secret")
    factories.flag(other, "secret-2")
    client.force_login(factories.member(shop, "viewer"))
    assert prerequisite_search(client, "", mine.pk)["results"] == []  # only the flag itself
    assert prerequisite_search(client, "secret", theirs.pk)["results"] == []


@pytest.mark.parametrize("of", ["x%00", "%ED%A0%80", "%C2%B2", "9" * 40, "-1", ""])
def test_prerequisite_search_with_a_hostile_flag_finds_nothing_or_searches_all(admin_client_of, of):
    project = factories.project("shop")
    factories.flag(project, "checkout")
    found = prerequisite_search(admin_client_of(project), "checkout", of)
    assert found["results"] == (
        [] if of else [{"id": str(project.flags.get().pk), "text": "checkout"}]
    )


def test_admin_index_queries_do_not_grow_with_projects(
    admin_client_of, django_assert_max_num_queries
):
    client = admin_client_of(factories.project("shop"))
    for key in ("a", "b"):
        factories.flag(factories.project(key), f"{key}-flag")
    few = queries(client, reverse("admin:index"))
    for index in range(6):
        factories.flag(factories.project(f"more-{index}"), f"flag-{index}")
    with django_assert_max_num_queries(few):
        response = client.get(reverse("admin:index"))
    assert "more-5" in response.content.decode()
