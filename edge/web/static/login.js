"use strict";
// A login link may carry the token after '#' (never sent to the server, so never in
// a log): fill the form with it, forget it from the address bar, and log in.
(function () {
  function fromLink() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (!match) { return; }
    history.replaceState(null, "", window.location.pathname);
    document.getElementById("token").value = decodeURIComponent(match[1]);
    document.getElementById("login-form").submit();
  }
  // A link opened while the login page is shown changes only the '#' part.
  window.addEventListener("hashchange", fromLink);
  fromLink();
})();
