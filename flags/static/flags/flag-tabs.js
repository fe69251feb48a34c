/* The flag page's tabs: one per environment, then History, Evaluations, Scheduled changes
 * and Audit. Every panel is rendered by the server; without this script they are shown one
 * after another. The tab opened is the one with an error, else the one in the address
 * (#env-production), else the one last opened on this flag's page. */
"use strict";

(function () {
  function setUp(root) {
    const tabs = Array.from(root.querySelectorAll('[role="tab"]'));
    const panels = tabs.map((tab) => document.getElementById(tab.getAttribute("aria-controls")));
    const remembered = "flag-tab:" + window.location.pathname;

    function show(index, focus) {
      tabs.forEach((tab, i) => {
        const selected = i === index;
        tab.setAttribute("aria-selected", selected ? "true" : "false");
        tab.tabIndex = selected ? 0 : -1;
        panels[i].hidden = !selected;
      });
      try {
        window.sessionStorage.setItem(remembered, panels[index].id);
      } catch (error) {
        /* storage refused: the tab is simply not remembered */
      }
      if (focus) {
        tabs[index].focus();
      }
    }

    tabs.forEach((tab, index) => {
      tab.addEventListener("click", (event) => {
        event.preventDefault();
        show(index, false);
        window.history.replaceState(null, "", "#" + panels[index].id);
      });
      tab.addEventListener("keydown", (event) => {
        const moves = { ArrowRight: 1, ArrowLeft: -1 };
        if (event.key in moves) {
          event.preventDefault();
          show((index + moves[event.key] + tabs.length) % tabs.length, true);
        } else if (event.key === "Home" || event.key === "End") {
          event.preventDefault();
          show(event.key === "Home" ? 0 : tabs.length - 1, true);
        }
      });
    });

    let start = panels.findIndex((panel) => panel.querySelector(".errorlist"));
    if (start < 0) {
      start = panels.findIndex((panel) => "#" + panel.id === window.location.hash);
    }
    if (start < 0) {
      let id = null;
      try {
        id = window.sessionStorage.getItem(remembered);
      } catch (error) {
        id = null;
      }
      start = panels.findIndex((panel) => panel.id === id);
    }
    root.classList.add("flag-tabs-ready");
    show(Math.max(start, 0), false);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-flag-tabs]").forEach(setUp);
  });
})();
