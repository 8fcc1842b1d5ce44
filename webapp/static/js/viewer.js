// Image viewer: wheel to zoom, drag to pan, brightness/contrast sliders.
// Everything is a CSS transform/filter on the displayed PNG: the pixels sent
// by the server are never changed.
(function () {
  const stage = document.getElementById("stage");
  const image = document.getElementById("xray");
  if (!stage || !image) return;
  const brightness = document.getElementById("brightness");
  const contrast = document.getElementById("contrast");
  let scale = 1, x = 0, y = 0, dragging = null;
  function apply() {
    image.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    image.style.filter = `brightness(${brightness.value}%) contrast(${contrast.value}%)`;
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
  contrast.addEventListener("input", apply);
  document.getElementById("reset").addEventListener("click", function () { scale = 1; x = 0; y = 0; brightness.value = 100; contrast.value = 100; apply(); });
  apply();
})();
