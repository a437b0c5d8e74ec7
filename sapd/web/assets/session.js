// sapd session page: the copy button (Clipboard API where the page is a secure
// context, a selection and execCommand("copy") elsewhere, e.g. plain http beyond
// loopback), and a notice when the session leaves the directory.
"use strict";
(function () {
  const button = document.getElementById("copy");
  const pre = document.getElementById("sdp");
  const status = document.getElementById("copied");
  function say(text) { if (status) status.textContent = text; }
  function fallbackCopy(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
    area.remove();
    return ok;
  }
  if (button && pre) {
    button.hidden = false;
    button.addEventListener("click", function () {
      const text = pre.textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { say("Copied (clipboard)"); },
          function () { say(fallbackCopy(text) ? "Copied" : "Copy failed: select the text"); });
      } else {
        say(fallbackCopy(text) ? "Copied" : "Copy failed: select the text");
      }
    });
  }
  const section = document.querySelector("section[data-id]");
  const notice = document.getElementById("gone");
  if (!section || !notice || !window.EventSource) return;
  const id = section.dataset.id;
  const source = new EventSource("/v1/events");
  function left(e) {
    try {
      const event = JSON.parse(e.data);
      if (event.id !== id) return;
      notice.textContent = "This session has left the directory (" +
        (event.event === "expired" ? "expired" : "deleted") + ").";
      notice.hidden = false;
    } catch (err) { /* ignore */ }
  }
  source.addEventListener("deleted", left);
  source.addEventListener("expired", left);
})();
