"""The flag page's review step, as the test client goes through it."""

from flags.admin.flag_review import TOKEN_FIELD


def is_review(response) -> bool:
    return response.status_code in (200, 400) and "reviews" in (response.context or {})


def confirm_review(client, response, comment: str = "", **fields):
    """Post the review page back as a browser would: its hidden fields, a comment for each
    protected environment it reviews (and `fields`, which override)."""
    assert is_review(response), response.status_code
    context = response.context
    data: dict[str, list[str]] = {}
    for name, value in context["hidden"]:
        data.setdefault(name, []).append(value)
    data[TOKEN_FIELD] = [context["token"]]
    for review in context["reviews"]:
        data[review.comment_name] = [comment]
        if review.mode == "propose":
            data[review.title_name] = [review.title]
    data["_review_save"] = ["Save"]
    for name, value in fields.items():
        data[name] = [value]
    url = response.wsgi_request.get_full_path()
    return client.post(url, data)
