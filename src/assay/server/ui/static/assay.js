// Assay's web UI: the few behaviours htmx does not give. No build step, no dependencies.
(function () {
  "use strict";

  // The facet form carries the query of the search bar, as the user is typing it.
  document.addEventListener("input", function (event) {
    if (event.target && event.target.id === "q") {
      var hidden = document.getElementById("facet-q");
      if (hidden) hidden.value = event.target.value;
    }
  });

  // "Compare selected" needs two experiments or more.
  function updateCompare() {
    var button = document.getElementById("compare-button");
    if (!button) return;
    var chosen = document.querySelectorAll('#compare-form input[name="e"]:checked').length;
    button.disabled = chosen < 2;
    button.textContent = chosen >= 2 ? "Compare " + chosen + " experiments" : "Compare selected";
  }
  document.addEventListener("change", function (event) {
    if (event.target && event.target.name === "e") updateCompare();
  });
  document.addEventListener("DOMContentLoaded", updateCompare);

  // A record's runs open under its row; a second click closes them without a request.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var button = event.detail.elt;
    if (!button.classList || !button.classList.contains("expand")) return;
    var target = document.querySelector(button.getAttribute("hx-target"));
    if (target && target.innerHTML.trim() !== "") {
      event.preventDefault();
      target.innerHTML = "";
      button.setAttribute("aria-expanded", "false");
      button.textContent = button.textContent.replace("▾", "▸");
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var button = event.detail.requestConfig && event.detail.requestConfig.elt;
    if (button && button.classList && button.classList.contains("expand")) {
      button.setAttribute("aria-expanded", "true");
      button.textContent = button.textContent.replace("▸", "▾");
    }
  });
})();
