// Short polling of a live block: while its fragment says data-live="true", fetch it again
// every data-interval seconds and put the server's (escaped) HTML in its place.
(function () {
  "use strict";
  function follow(block) {
    var url = block.getAttribute("data-poll");
    var seconds = parseFloat(block.getAttribute("data-interval") || "2");
    function isLive() {
      var fragment = block.querySelector("[data-live]");
      return fragment !== null && fragment.getAttribute("data-live") === "true";
    }
    function poll() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          block.innerHTML = html;
          block.setAttribute("data-polled", String(Date.now()));
          if (isLive()) { window.setTimeout(poll, seconds * 1000); }
        })
        .catch(function () { window.setTimeout(poll, seconds * 4000); });
    }
    if (isLive()) { window.setTimeout(poll, seconds * 1000); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(follow);
  });
})();
