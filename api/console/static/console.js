// The console's own script: forms post JSON (the API's edge takes no other body), and refusals show as a banner.
(function () {
  "use strict";

  // JSON bodies for htmx requests, as the json-enc extension does (https://github.com/bigskysoftware/htmx-extensions,
  // src/json-enc): every form field a string; a repeated name becomes a list.
  htmx.defineExtension("json-enc", {
    onEvent: function (name, evt) {
      if (name === "htmx:configRequest") {
        evt.detail.headers["Content-Type"] = "application/json";
      }
    },
    encodeParameters: function (xhr, parameters) {
      xhr.overrideMimeType("text/json");
      var body = {};
      parameters.forEach(function (value, key) {
        if (Object.prototype.hasOwnProperty.call(body, key)) {
          body[key] = [].concat(body[key], value);
        } else {
          body[key] = value;
        }
      });
      return JSON.stringify(body);
    },
  });

  function flash(text) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  // A refused request (4xx/5xx): say why, from the JSON {"detail": ...} every refusal carries.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var text = xhr.status + " " + xhr.statusText;
    try {
      var detail = JSON.parse(xhr.responseText).detail;
      if (typeof detail === "string") {
        text = detail;
      } else if (Array.isArray(detail)) {
        text = detail.map(function (d) { return (d.loc || []).join(".") + ": " + d.msg; }).join("; ");
      }
    } catch (e) {
      // not JSON: keep the status line
    }
    flash(text);
  });
  document.addEventListener("htmx:sendError", function () {
    flash("the console did not answer: is `orchestrator api` still running?");
  });
  // The live part of a thread page (templates/live.html): while a run goes, follow its server-sent events; each
  // "live" event is the part re-rendered, "done" means the run ended: reload to show its messages and questions.
  function followLive() {
    var live = document.getElementById("live");
    if (!live || !live.dataset.stream || !window.EventSource) return;
    var source = new EventSource(live.dataset.stream);
    source.addEventListener("live", function (evt) {
      var current = document.getElementById("live");
      if (current) current.outerHTML = evt.data;
    });
    source.addEventListener("done", function () {
      source.close();
      window.location.reload();
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", followLive);
  } else {
    followLive();
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (evt.detail.requestConfig && evt.detail.requestConfig.verb !== "get") flash("");
  });
})();
