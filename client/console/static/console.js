/* The overview's live updates: an EventSource on the element's data-sse URL; each
   named event's data is HTML for the element of that id (summary, charts, tables). The
   browser closes the stream when the page goes, and the console's sampler stops
   when no stream is open. */
(function () {
  function connect() {
    var box = document.querySelector("[data-sse]");
    if (!box || box.dataset.connected) return;
    box.dataset.connected = "1";
    var source = new EventSource(box.dataset.sse);
    ["summary", "charts", "tables"].forEach(function (name) {
      source.addEventListener(name, function (event) {
        var target = document.getElementById(name);
        if (target) target.innerHTML = event.data;
      });
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", connect);
  else connect();
})();
