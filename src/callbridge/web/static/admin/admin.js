// callbridge operator pages: times in the operator's own time zone, and a call list kept
// fresh by the server's live events (Server-Sent Events), with a slow poll as fallback.
(function () {
  "use strict";

  // <time datetime="…UTC…" title="… UTC"> → the local date and time; UTC stays on hover.
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function localText(d) {
    var offset = -d.getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    var abs = Math.abs(offset);
    var zone = "UTC" + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " (" + zone + ")";
  }
  function localiseTimes(root) {
    var times = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      if (el.getAttribute("data-local")) continue;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      el.textContent = localText(d);
      el.setAttribute("data-local", "1");
    }
  }
  localiseTimes(document);

  var rows = document.getElementById("call-rows");
  var text = document.getElementById("live-text");
  if (!rows || !window.fetch) return;
  var url = rows.getAttribute("data-rows-url");
  var streamUrl = rows.getAttribute("data-stream-url");
  var slowPoll = 30000;
  var live = text ? text.parentNode : null;
  var pending = null;
  var poller = null;

  function stamp(label, paused) {
    if (!text) return;
    text.textContent = label;
    if (live) live.classList.toggle("live--paused", !!paused);
  }

  function refresh(how) {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { stamp("Signed out — reload to sign in", true); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (html.trim() !== rows.innerHTML.trim()) { rows.innerHTML = html; localiseTimes(rows); }
        stamp("Live · updated " + new Date().toLocaleTimeString() + how, false);
      })
      .catch(function () { stamp("Live updates paused — retrying", true); });
  }

  // Several changes at once (a call placed, queued, ringing) make one refresh.
  function soon() {
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(""); }, 250);
  }

  function startPolling() {
    if (poller) return;
    poller = setInterval(function () { if (!document.hidden) refresh(" (polling)"); }, slowPoll);
  }
  function stopPolling() { if (poller) { clearInterval(poller); poller = null; } }

  if (window.EventSource && streamUrl) {
    var source = new EventSource(streamUrl);
    source.addEventListener("change", soon);
    source.onopen = function () { stopPolling(); stamp("Live", false); rows.setAttribute("data-live", "events"); };
    source.onerror = function () { rows.setAttribute("data-live", "polling"); startPolling(); };
  } else {
    startPolling();
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) soon(); });
})();
