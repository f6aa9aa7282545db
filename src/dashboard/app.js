// keyseat dashboard: progressive enhancement only. Every action works
// without this script; it adds a copy button for a new key's secret and a
// quiet refresh of pages marked data-refresh (live sessions, overview).
(function () {
  "use strict";
  function setupCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (btn) {
      var target = document.getElementById(btn.getAttribute("data-copy"));
      if (!target || !navigator.clipboard) return;
      btn.hidden = false;
      btn.addEventListener("click", function () {
        navigator.clipboard.writeText(target.textContent.trim()).then(function () {
          var status = document.getElementById("copy-status");
          if (status) status.textContent = "Copied to the clipboard.";
          btn.textContent = "Copied";
        }, function () {
          var status = document.getElementById("copy-status");
          if (status) status.textContent = "Copy failed; select the key and copy it by hand.";
        });
      });
    });
  }
  function setupRefresh() {
    var main = document.getElementById("main");
    if (!main) return;
    var secs = parseInt(main.getAttribute("data-refresh") || "", 10);
    if (!secs) return;
    setInterval(function () {
      if (document.hidden) return;
      var active = document.activeElement;
      // Never pull the page away from someone typing or about to click.
      if (active && active !== document.body && main.contains(active)) return;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("main");
          if (fresh) main.innerHTML = fresh.innerHTML;
        })
        .catch(function () {});
    }, secs * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    setupCopy();
    setupRefresh();
  });
})();
