// Keyboard navigation of the worklist: j/k move the selection, Enter opens it.
(function () {
  const rows = Array.from(document.querySelectorAll("#worklist tbody tr[data-href]"));
  if (!rows.length) return;
  let current = 0;
  function select(index) {
    rows[current].classList.remove("selected");
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows[current].classList.add("selected");
    rows[current].scrollIntoView({ block: "nearest" });
  }
  rows[0].classList.add("selected");
  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "j") select(current + 1);
    else if (event.key === "k") select(current - 1);
    else if (event.key === "Enter") window.location = rows[current].dataset.href;
  });
  rows.forEach(function (row, index) { row.addEventListener("click", function (e) { if (!e.target.closest("a")) select(index); }); });
})();
