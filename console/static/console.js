// Progressive enhancement only: the inbox refreshes its rows in place every few seconds, so new
// submissions appear without a reload. Without JavaScript the page works the same, minus this.
(function () {
  "use strict";
  var box = document.getElementById("inbox");
  if (!box || !window.fetch) { return; }
  var seconds = parseInt(box.getAttribute("data-refresh"), 10) || 15;
  function refresh() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null && document.activeElement.closest("#inbox") === null) { box.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ });
  }
  window.setInterval(refresh, seconds * 1000);
})();
