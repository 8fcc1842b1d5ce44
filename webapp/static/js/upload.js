// Upload with visible progress: the upload itself (XHR progress events), then
// processing (polling the batch's progress). Without JavaScript the form
// still posts normally and lands on the batch page.
(function () {
  const form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest) return;
  const input = form.querySelector("input[type=file]");
  const dropzone = document.getElementById("dropzone");
  const chosen = document.getElementById("chosen");
  const strings = JSON.parse(document.getElementById("upload-strings").textContent);
  let files = [];

  function show(list) {
    files = Array.from(list);
    chosen.innerHTML = "";
    const items = files.map(function (file) {
      const item = document.createElement("li");
      item.textContent = file.name + " (" + Math.ceil(file.size / 1024) + " KB)";
      chosen.appendChild(item);
      return item;
    });
    // preview.js scores each file in the browser beside its name (issue 16).
    document.dispatchEvent(new CustomEvent("upload:chosen", { detail: { files: files, items: items } }));
  }
  input.addEventListener("change", function () { show(input.files); });
  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) { event.preventDefault(); dropzone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) { event.preventDefault(); dropzone.classList.remove("over"); });
  });
  dropzone.addEventListener("drop", function (event) { show(event.dataTransfer.files); });

  function text(id, value) { document.getElementById(id).textContent = value; }

  function poll(progressUrl) {
    fetch(progressUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (batch) {
        const bar = document.getElementById("processing-progress");
        bar.max = batch.progress.total;
        bar.value = batch.progress.finished;
        text("processing-text", batch.progress.finished + " / " + batch.progress.total + " " + strings.studiesFinished);
        if (batch.progress.finished < batch.progress.total) setTimeout(function () { poll(progressUrl); }, 1000);
      })
      .catch(function () { setTimeout(function () { poll(progressUrl); }, 3000); });
  }

  form.addEventListener("submit", function (event) {
    if (!files.length) return;  // let the browser show the field's own error
    event.preventDefault();
    const data = new FormData();
    data.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    ["population", "age", "priority"].forEach(function (name) {
      const field = form.querySelector("[name=" + name + "]");
      if (field && field.value) { data.append(name, field.value); }
    });
    files.forEach(function (file) { data.append("files", file, file.name); });
    const request = new XMLHttpRequest();
    request.open("POST", form.action || window.location.href);
    request.setRequestHeader("Accept", "application/json");
    document.getElementById("progress").hidden = false;
    document.getElementById("submit-button").disabled = true;
    request.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        const percent = Math.round((100 * e.loaded) / e.total);
        document.getElementById("upload-progress").value = percent;
        text("upload-text", percent + " %");
      }
    });
    request.addEventListener("load", function () {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (e) { body = { error: strings.failed }; }
      const refused = document.getElementById("upload-refused");
      (body.refused || []).forEach(function (item) {
        const li = document.createElement("li");
        li.textContent = item.file + ": " + item.error;
        refused.appendChild(li);
      });
      if (request.status !== 202) {
        const error = document.getElementById("upload-error");
        error.hidden = false;
        error.textContent = body.error || strings.failed;
        document.getElementById("submit-button").disabled = false;
        return;
      }
      document.getElementById("upload-progress").value = 100;
      text("upload-text", "100 %");
      document.getElementById("batch-link").href = body.url;
      document.getElementById("upload-done").hidden = false;
      poll(body.progress_url);
    });
    request.addEventListener("error", function () {
      const error = document.getElementById("upload-error");
      error.hidden = false;
      error.textContent = strings.failed;
      document.getElementById("submit-button").disabled = false;
    });
    request.send(data);
  });
})();
