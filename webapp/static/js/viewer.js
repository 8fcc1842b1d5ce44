// Image viewer: wheel to zoom, drag to pan, brightness/contrast sliders.
// Everything is a CSS transform/filter on the displayed PNG: the pixels sent
// by the server are never changed.
(function () {
  const stage = document.getElementById("stage");
  const image = document.getElementById("xray");
  const layers = document.getElementById("layers");
  const heatmap = document.getElementById("heatmap");
  const heatmapToggle = document.getElementById("heatmap-toggle");
  const heatmapOpacity = document.getElementById("heatmap-opacity");
  if (!stage || !image) return;
  const brightness = document.getElementById("brightness");
  const contrast = document.getElementById("contrast");
  let scale = 1, x = 0, y = 0, dragging = null;
  function apply() {
    layers.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    image.style.filter = `brightness(${brightness.value}%) contrast(${contrast.value}%)`;
    if (heatmap) {
      heatmap.hidden = !heatmapToggle.checked;
      heatmap.style.opacity = heatmapOpacity.value / 100;
    }
  }
  stage.addEventListener("wheel", function (event) {
    event.preventDefault();
    scale = Math.max(0.5, Math.min(8, scale * (event.deltaY < 0 ? 1.15 : 1 / 1.15)));
    apply();
  }, { passive: false });
  stage.addEventListener("pointerdown", function (event) { dragging = { x: event.clientX - x, y: event.clientY - y }; stage.setPointerCapture(event.pointerId); });
  stage.addEventListener("pointermove", function (event) { if (dragging) { x = event.clientX - dragging.x; y = event.clientY - dragging.y; apply(); } });
  stage.addEventListener("pointerup", function () { dragging = null; });
  brightness.addEventListener("input", apply);
  if (heatmap) {
    heatmapToggle.addEventListener("change", apply);
    heatmapOpacity.addEventListener("input", apply);
    document.addEventListener("keydown", function (event) {
      if (event.key === "h" && !event.target.closest("input, textarea, select")) { heatmapToggle.checked = !heatmapToggle.checked; apply(); }
    });
  }
  contrast.addEventListener("input", apply);
  document.getElementById("reset").addEventListener("click", function () { scale = 1; x = 0; y = 0; brightness.value = 100; contrast.value = 100; apply(); });
  apply();
})();
