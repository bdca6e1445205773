/* Live updates: an EventSource on the element's data-sse URL; each event named in
   its data-sse-events (space-separated) carries HTML for the element of that id
   (the overview: summary, charts, tables; a topic: partitions; a group: its state,
   tiles, lag chart and tables). The browser closes the stream when the page goes,
   and the console then asks the broker nothing for it. A "refused" event (the
   console's limit of live pages or watched groups reached) is a message shown at
   the top of the element; the stream is then closed, not retried. */
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
    source.addEventListener("refused", function (event) {
      source.close();
      box.insertAdjacentHTML("afterbegin", event.data);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", connect);
  else connect();
})();
