// Runs preview-engine.js in a dedicated worker, so that scoring (about a quarter of a second of
// CPU per image) never freezes the submit page or its upload progress. preview.js sends
// {type: "load"} once, then {type: "score", file} per image; each reply carries the message's id.
// Files reach the worker by structured clone: nothing here talks to the server after loading.
"use strict";
let engine = null;

self.onmessage = function (event) {
  const message = event.data;
  let work;
  if (message.type === "load") {
    work = new Promise(function (resolve) {
      self.importScripts.apply(self, message.scripts); // tf.js core and CPU backend, then preview-engine.js
      resolve();
    })
      .then(function () { return self.PneumoPreviewEngine.load(self.tf, message.modelUrl, message.weightsUrl, message.exportId); })
      .then(function (loaded) { engine = loaded; return null; });
  } else {
    work = engine.scoreFile(message.file, message.limits);
  }
  work
    .then(function (result) { self.postMessage({ id: message.id, result: result }); })
    .catch(function (error) { self.postMessage({ id: message.id, error: String(error) }); });
};
