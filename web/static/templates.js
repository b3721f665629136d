// The templates page: filter the cards by text and by tag (no request: the
// page holds every template).
"use strict";
(function () {
  const input = document.getElementById("template-filter");
  if (!input) return; // no templates at all
  const cards = [...document.querySelectorAll(".template-card")];
  const chips = [...document.querySelectorAll(".tag-filter .chip")];
  let tag = "";

  function apply() {
    const q = input.value.trim().toLowerCase();
    let shown = 0;
    for (const card of cards) {
      const ok = (!q || card.dataset.text.includes(q)) && (!tag || card.dataset.tags.split(" ").includes(tag));
      card.hidden = !ok;
      if (ok) shown += 1;
    }
    document.getElementById("no-template-match").hidden = shown > 0;
  }

  input.addEventListener("input", apply);
  for (const chip of chips) {
    chip.addEventListener("click", () => {
      tag = chip.dataset.tag;
      chips.forEach((c) => c.setAttribute("aria-pressed", String(c === chip)));
      apply();
    });
  }
})();
