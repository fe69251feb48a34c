"use strict";
// The search box Select2 opens for a flag search (a prerequisite's required flag) gets the
// name of the box it searches for, so that a screen reader says what is being searched.
// Bound once the page is read: the admin's jQuery may be loaded after this script.
window.addEventListener("DOMContentLoaded", () => {
  django.jQuery(document).on("select2:open", (event) => {
    const name = event.target.getAttribute("aria-label") || "flag";
    const search = document.querySelector(".select2-container--open .select2-search__field");
    if (search) {
      search.setAttribute("aria-label", `Search for ${name}`);
    }
  });
});
