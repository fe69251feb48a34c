"""Accessibility checks of a page open in a browser test, for any browser test to use.

`unlabelled_inputs(browser)` lists the visible form boxes a screen reader cannot name:
each input, select and textarea needs a `<label for=its id>`, an `aria-label`, an
`aria-labelledby` naming elements with text, or an enclosing `<label>`. Buttons
(`type=submit|button|reset|image`) are named by their value and are not checked; hidden
boxes and those in a hidden tab are not on screen and are not checked either.
"""

from __future__ import annotations

from typing import Any

UNLABELLED = """
const named = (el) => {
  const text = (value) => (value || "").trim() !== "";
  if (text(el.getAttribute("aria-label"))) return true;
  const ids = (el.getAttribute("aria-labelledby") || "").split(/\\s+/).filter(Boolean);
  if (ids.length && ids.every((id) => document.getElementById(id))
      && ids.some((id) => text(document.getElementById(id).textContent))) return true;
  if (el.id && Array.from(document.querySelectorAll("label[for]"))
      .some((label) => label.htmlFor === el.id && text(label.textContent))) return true;
  const around = el.closest("label");
  return Boolean(around && text(around.textContent));
};
const shown = (el) => {
  if (el.getClientRects().length === 0) return false;
  const style = window.getComputedStyle(el);
  return style.visibility !== "hidden" && style.display !== "none";
};
const buttons = ["hidden", "submit", "button", "reset", "image"];
return Array.from(document.querySelectorAll("input, select, textarea"))
  .filter((el) => !(el.tagName === "INPUT" && buttons.includes(el.type)))
  .filter(shown)
  .filter((el) => !named(el))
  .map((el) => `<${el.tagName.toLowerCase()} name="${el.name}" id="${el.id}">`);
"""


def unlabelled_inputs(browser: Any) -> list[str]:
    """The visible input, select and textarea elements of the page that have no label."""
    return list(browser.execute_script(UNLABELLED))


def assert_inputs_labelled(browser: Any, where: str = "") -> None:
    """Fail naming every visible box of the page that has no label."""
    missing = unlabelled_inputs(browser)
    assert not missing, f"boxes without a label{' on ' + where if where else ''}: {missing}"
