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
    // The copy event sets the exact text (a textarea's value would turn CRLF into LF).
    function onCopy(e) { e.clipboardData.setData("text/plain", text); e.preventDefault(); }
    document.addEventListener("copy", onCopy);
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
    document.removeEventListener("copy", onCopy);
    return ok;
  }
  if (button && pre) {
    button.hidden = false;
    button.addEventListener("click", function () {
      // The HTML parser turns CRLF into LF; the SDP is copied as it was sent.
      let text = pre.textContent;
      if (pre.dataset.newline === "crlf") text = text.replace(/\r?\n/g, "\r\n");
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
