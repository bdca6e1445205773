/* Live updates: an EventSource on the element's data-sse URL; each event named in
   its data-sse-events (space-separated) carries HTML for the element of that id
   (the overview: summary, charts, tables; a topic: partitions). The browser closes
   the stream when the page goes, and the console then asks the broker nothing
   for it. */
(function () {
  function connect() {
    var box = document.querySelector("[data-sse]");
    if (!box || box.dataset.connected) return;
    box.dataset.connected = "1";
    var source = new EventSource(box.dataset.sse);
    (box.dataset.sseEvents || "").split(" ").filter(Boolean).forEach(function (name) {
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
