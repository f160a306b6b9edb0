// callbridge operator pages: keep the call list fresh (poll a server-rendered fragment).
(function () {
  "use strict";
  var rows = document.getElementById("call-rows");
  var text = document.getElementById("live-text");
  if (!rows || !window.fetch) return;
  var url = rows.getAttribute("data-rows-url");
  var every = 5000;
  var live = text ? text.parentNode : null;

  function stamp(label, paused) {
    if (!text) return;
    text.textContent = label;
    if (live) live.classList.toggle("live--paused", !!paused);
  }

  function refresh() {
    if (document.hidden) { stamp("Paused while this tab is hidden", true); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { stamp("Signed out — reload to sign in", true); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (html.trim() !== rows.innerHTML.trim()) rows.innerHTML = html;
        stamp("Live · updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function () { stamp("Live updates paused — retrying", true); });
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
})();
