// Submit page: a browser preview of each chosen file's score while the upload runs, and a
// "preview only" box that scores one image without sending anything (issue 16). The scoring
// itself is preview-engine.js; this file is the page. Without JavaScript, or when the
// server says the browser's copy of the model is not the served one, nothing here shows.
(function () {
  "use strict";
  const configNode = document.getElementById("preview-config");
  if (!configNode || !window.fetch || !window.createImageBitmap || !window.PneumoPreviewEngine) return;
  const config = JSON.parse(configNode.textContent);
  if (!config.enabled) return;
  const strings = JSON.parse(document.getElementById("preview-strings").textContent);
  const Engine = window.PneumoPreviewEngine;
  const lang = document.documentElement.lang || undefined;
  let loading = null;
  let queue = Promise.resolve();
  // A preview costs about a quarter of a second of this browser's CPU per image; a
  // thousand-file batch would keep it busy for minutes, so only the first ones are previewed.
  const MOST_PREVIEWS = 50;

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }

  // Scoring runs in preview-worker.js, off the page's thread; the same engine on this thread
  // is the fallback where a worker cannot start. Either way it resolves to something with
  // scoreFile(file, limits).
  function inWorker() {
    const worker = new Worker(config.workerUrl);
    const waiting = {};
    let next = 0;
    function ask(message) {
      return new Promise(function (resolve, reject) {
        message.id = ++next;
        waiting[message.id] = { resolve: resolve, reject: reject };
        worker.postMessage(message);
      });
    }
    worker.onmessage = function (event) {
      const reply = event.data;
      const pending = waiting[reply.id];
      delete waiting[reply.id];
      if (reply.error) pending.reject(new Error(reply.error));
      else pending.resolve(reply.result);
    };
    worker.onerror = function (event) {
      event.preventDefault();
      Object.keys(waiting).forEach(function (id) { waiting[id].reject(new Error("preview worker failed")); delete waiting[id]; });
    };
    return ask({
      type: "load", scripts: config.scripts.concat([config.engineUrl]),
      modelUrl: config.modelUrl, weightsUrl: config.weightsUrl, exportId: config.exportId,
    }).then(function () {
      return { where: "worker", scoreFile: function (file, limits) { return ask({ type: "score", file: file, limits: limits }); } };
    });
  }

  function onThisThread() {
    return config.scripts
      .reduce(function (done, src) { return done.then(function () { return loadScript(src); }); }, Promise.resolve())
      .then(function () { return Engine.load(window.tf, config.modelUrl, config.weightsUrl, config.exportId); })
      .then(function (loaded) { loaded.where = "page"; return loaded; });
  }

  // tf.js and the model are fetched from this site once, on first use, not with every page view.
  function engine() {
    if (!loading) {
      const started = new Promise(function (resolve) {
        if (!window.Worker || !window.OffscreenCanvas) throw new Error("no worker");
        resolve(inWorker());
      });
      loading = started
        .catch(function () { return onThisThread(); })
        .then(function (e) {
          const box = document.getElementById("preview-only");
          if (box) box.dataset.runs = e.where; // "worker" or "page", for the tests
          return e;
        });
    }
    return loading;
  }

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, name) { return values[name]; });
  }

  function number(p) {
    return p.toLocaleString(lang, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  // The submitter's declaration decides before the image check on the server; an
  // adult or an age outside the validated range means no preview here.
  function declaredOutside() {
    const population = document.querySelector("#upload-form [name=population]");
    const age = document.querySelector("#upload-form [name=age]");
    if (population && population.value === "adult") return true;
    if (age && age.value.trim() !== "") {
      const years = Number(age.value.trim());
      return !(years >= config.ages[0] && years < config.ages[1]);
    }
    return false;
  }

  function show(target, result) {
    target.dataset.ms = result.ms === undefined ? "" : result.ms.toFixed(0);
    if (result.refused) {
      target.dataset.status = "none";
      target.dataset.reason = result.refused;
      target.textContent = format(strings.none, { reason: strings.reasons[result.refused] || strings.reasons.unreadable });
      return;
    }
    // The label follows the operating threshold on the model's scale; a site's adopted
    // prevalence shifts the number shown, as on the study page.
    let shown = result.probability;
    if (config.prevalenceShift !== null) shown = Engine.sigmoid(Engine.logit(shown) + config.prevalenceShift);
    const label = Math.abs(result.probability - config.threshold) < 0.01
      ? strings.nearThreshold
      : result.probability >= config.threshold ? strings.pneumonia : strings.normal;
    target.dataset.status = "scored";
    target.dataset.probability = String(result.probability);
    target.textContent = format(strings.scored, { p: number(shown), label: label });
  }

  function score(file, target) {
    target.dataset.status = "pending";
    target.textContent = strings.pending;
    queue = queue.then(function () {
      if (!target.isConnected) return undefined; // the list was replaced by a new choice of files
      if (declaredOutside()) return show(target, { refused: Engine.KIND.OUTSIDE });
      return engine()
        .then(function (e) { return e.scoreFile(file, { maxBytes: config.maxBytes, maxPixels: config.maxPixels }); })
        .then(function (result) { show(target, result); })
        .catch(function (error) {
          if (window.console) console.error("preview:", error);
          show(target, { refused: "failed" });
        });
    });
    return queue;
  }

  // Beside each file upload.js lists.
  document.addEventListener("upload:chosen", function (event) {
    const legend = document.getElementById("preview-legend");
    if (legend) legend.hidden = false;
    event.detail.files.forEach(function (file, i) {
      const span = document.createElement("span");
      span.className = "preview";
      span.title = strings.legend;
      event.detail.items[i].appendChild(document.createTextNode(" "));
      event.detail.items[i].appendChild(span);
      if (i < MOST_PREVIEWS) score(file, span);
      else show(span, { refused: "too_many" });
    });
  });

  // Preview only: its input has no name and sits outside the upload form, so the
  // browser never sends it, and this script only reads it.
  const only = document.getElementById("preview-only");
  if (only) {
    only.hidden = false;
    const input = document.getElementById("preview-only-file");
    const result = document.getElementById("preview-only-result");
    only.addEventListener("toggle", function () {
      if (!only.open) return;
      engine()
        .then(function () { only.dataset.ready = "true"; })
        .catch(function () { only.dataset.ready = "failed"; });
    });
    input.addEventListener("change", function () {
      if (!input.files.length) return;
      result.hidden = false;
      document.getElementById("preview-only-name").textContent = input.files[0].name;
      score(input.files[0], document.getElementById("preview-only-score"));
    });
  }
})();
