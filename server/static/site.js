/* C2Seg participant pages (/team): progressive enhancement, nothing more.

   Every form on these pages works without this script: it posts, and the server answers with a
   redirect back to /team and its message. With the script:
   - the upload form sends with XMLHttpRequest, shows the upload's progress in a labelled
     <progress> with its percentage, checks the file's name (its extension, from data-accept)
     and size (data-max-bytes) before sending and says what is wrong in plain words (the server
     still decides), then shows the server's answer in #upload-result and refreshes the team's
     submissions, quota and picks from /team without reloading the page;
   - the metadata and final-pick forms post with fetch and show the answer beside the form;
   - each <time class="utc" datetime="..."> gains the viewer's local time, its zone named.

   The server answers a POST sent with "Accept: application/json" with
   {"ok": bool, "status": int, "message": "plain words", "submission": {...} | null}.
   No framework, no build step, nothing loaded from elsewhere; no inline style (the pages' CSP). */
(function () {
  "use strict";

  var ANSWER_JSON = { Accept: "application/json" };
  /* The parts of /team that an answer can change, swapped in from a fresh copy of the page. */
  var REGIONS = ["#submissions", "#quota", "#phases", "#final-picks", "#disqualified"];
  /* A script may send the form's CSRF token in this header: the server checks it before the body. */
  var CSRF_HEADER = "X-CSRF-Token";

  /* --- small helpers ------------------------------------------------------------------------ */

  function bytesText(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  /* Show `text` in a live region, marked as good news or a refusal (for the stylesheet). */
  function say(region, text, ok) {
    if (!region) { return; }
    region.textContent = text;
    region.classList.remove("ok", "refused", "busy", "error");
    region.classList.add(ok === null ? "busy" : ok ? "ok" : "refused");
  }

  /* The message of a JSON answer, or plain words for an answer that is not one (a proxy's page,
     a dropped connection). */
  function answerOf(status, body) {
    var data = null;
    try { data = JSON.parse(body); } catch (e) { data = null; }
    if (data && typeof data === "object") {
      var message = data.message || data.detail;
      if (typeof message !== "string") { message = "The server answered " + status + "."; }
      return { ok: data.ok === true || (data.ok === undefined && status < 400), status: data.status || status,
               message: message, submission: data.submission || null };
    }
    if (status === 0) {
      return { ok: false, status: 0, submission: null,
               message: "The connection to the server failed before an answer came. Check your connection and try again." };
    }
    return { ok: status < 400, status: status, submission: null, message: "The server answered " + status + "." };
  }

  /* The public scores of a scored submission, in words ("" when it has none). */
  function scoresText(sub) {
    if (!sub || !sub.scores) { return ""; }
    var s = sub.scores;
    var parts = [];
    [["miou", "mIoU"], ["oa", "OA"], ["f1", "F1"], ["kappa", "kappa"]].forEach(function (pair) {
      if (typeof s[pair[0]] === "number") { parts.push(pair[1] + " " + s[pair[0]].toFixed(4)); }
    });
    return parts.length ? "Submission " + sub.id + ", public scores: " + parts.join(", ") + "." : "";
  }

  /* --- local times ---------------------------------------------------------------------------- */

  function localTimes(root) {
    var zone;
    var fmt;
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
      fmt = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric",
                                                 hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
    } catch (e) {
      return;
    }
    root.querySelectorAll("time.utc[datetime]").forEach(function (t) {
      var next = t.nextElementSibling;
      if (next && next.classList.contains("local-time")) { return; }
      var when = new Date(t.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      var local = fmt.format(when);
      var named = zone && local.indexOf(zone) < 0 ? ", " + zone : "";
      t.insertAdjacentElement("afterend", el("span", { "class": "local-time" }, " (your time: " + local + named + ")"));
    });
  }

  /* --- refreshing the page's parts -------------------------------------------------------------- */

  /* Which control had the focus, so it can have it again after its region is swapped. */
  function focusKey() {
    var a = document.activeElement;
    if (!a || a === document.body) { return null; }
    var form = a.form || a.closest("form");
    return { id: a.id || null, name: a.getAttribute("name"), value: a.getAttribute("value"),
             tag: a.tagName, form: form ? formKey(form) : null };
  }

  function restoreFocus(key) {
    if (!key || (document.activeElement && document.activeElement !== document.body)) { return; }
    var target = key.id ? document.getElementById(key.id) : null;
    if (!target && key.form) {
      var form = findForm(key.form);
      if (form) {
        var candidates = form.querySelectorAll(key.tag.toLowerCase());
        target = Array.prototype.find.call(candidates, function (c) {
          return c.getAttribute("name") === key.name && c.getAttribute("value") === key.value;
        }) || null;
      }
    }
    if (target) { target.focus(); }
  }

  function formKey(form) {
    if (form.classList.contains("metadata")) { return "metadata:" + form.getAttribute("data-id"); }
    if (form.classList.contains("picks")) { return "picks:" + form.getAttribute("data-track"); }
    return form.id ? "id:" + form.id : null;
  }

  function findForm(key) {
    if (!key) { return null; }
    var kind = key.slice(0, key.indexOf(":"));
    var value = key.slice(key.indexOf(":") + 1);
    var forms = document.querySelectorAll(kind === "id" ? "form[id]" : "form." + kind);
    return Array.prototype.find.call(forms, function (f) { return formKey(f) === kind + ":" + value; }) || null;
  }

  /* Fetch /team again and swap in the regions an answer may have changed; the messages shown
     beside forms are kept, and the focus goes back to the control that had it when the form was
     sent (`focus`, from focusKey() then: a disabled button loses it meanwhile). Resolves to false
     when the page could not be read (then nothing moves). */
  function refresh(focus) {
    var notes = {};
    document.querySelectorAll(".form-result[data-for]").forEach(function (n) {
      notes[n.getAttribute("data-for")] = { text: n.textContent, cls: n.className };
    });
    return fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" },
                                             cache: "no-store", redirect: "follow" })
      .then(function (r) {
        if (!r.ok || r.redirected) { return false; }
        return r.text().then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var done = [];
          REGIONS.forEach(function (sel) {
            var now = document.querySelector(sel);
            var next = fresh.querySelector(sel);
            if (!now || !next || done.some(function (d) { return d.contains(now); })) { return; }
            var node = document.importNode(next, true);
            now.replaceWith(node);
            done.push(node);
          });
          /* Forms outside those regions (final picks kept apart from the table) are swapped too. */
          fresh.querySelectorAll("form.picks, form.metadata").forEach(function (f) {
            var now = findForm(formKey(f));
            if (now && !done.some(function (d) { return d.contains(now); })) { now.replaceWith(document.importNode(f, true)); }
          });
          Object.keys(notes).forEach(function (key) {
            var form = findForm(key);
            if (form) { resultFor(form).textContent = notes[key].text; resultFor(form).className = notes[key].cls; }
          });
          localTimes(document);
          restoreFocus(focus);
          return true;
        });
      })
      .catch(function () { return false; });
  }

  /* The live region that shows a form's answer: the one the page has, or one made after the form. */
  function resultFor(form) {
    var key = formKey(form);
    var existing = Array.prototype.find.call(document.querySelectorAll(".form-result[data-for]"), function (n) {
      return n.getAttribute("data-for") === key;
    });
    if (existing) { return existing; }
    var region = el("p", { "class": "form-result", role: "status", "aria-live": "polite", "data-for": key });
    form.insertAdjacentElement("afterend", region);
    return region;
  }

  /* --- the upload --------------------------------------------------------------------------------- */

  function acceptedEndings(form) {
    return (form.getAttribute("data-accept") || "").split(",").map(function (s) {
      return s.trim().toLowerCase();
    }).filter(Boolean);
  }

  /* What is wrong with the chosen file, in plain words, or "" (the server still decides). */
  function fileProblem(form, file) {
    if (!file) { return "Choose a file to upload first."; }
    var endings = acceptedEndings(form);
    var name = file.name.toLowerCase();
    if (endings.length && !endings.some(function (e) { return name.slice(-e.length) === e; })) {
      return "\u201c" + file.name + "\u201d is not a submission file: its name must end in " +
             endings.join(", ") + ". Write one with `c2seg predict`, or pack per-tile images with `c2seg pack`.";
    }
    var max = Number(form.getAttribute("data-max-bytes"));
    if (max > 0 && file.size > max) {
      return "\u201c" + file.name + "\u201d is " + bytesText(file.size) + ": the server takes at most " +
             bytesText(max) + ". Write it with compression (the kit's writers compress by default).";
    }
    if (file.size === 0) { return "\u201c" + file.name + "\u201d is empty."; }
    return "";
  }

  function progressFor(form) {
    var box = form.querySelector(".upload-progress");
    if (!box) {
      box = el("p", { "class": "upload-progress", hidden: "" });
      var label = el("label", { "for": "upload-progress" }, "Upload progress");
      var bar = el("progress", { id: "upload-progress", max: "100", value: "0" });
      var pct = el("span", { "class": "progress-text", "aria-hidden": "true" }, "0 %");
      box.append(label, " ", bar, " ", pct);
      var button = form.querySelector("#upload-button");
      if (button) { button.insertAdjacentElement("afterend", box); } else { form.appendChild(box); }
    }
    return box;
  }

  function setProgress(box, fraction, text) {
    var bar = box.querySelector("progress");
    var pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
    bar.value = pct;
    bar.setAttribute("aria-valuetext", text || pct + " %");
    box.querySelector(".progress-text").textContent = text || pct + " %";
  }

  function enhanceUpload(form) {
    var result = document.getElementById("upload-result");
    var input = form.querySelector("#file");
    var button = form.querySelector("#upload-button");
    var busy = false;
    /* The answer shows where the person is: under the form (without the script it is at the top of
       the page the server sends back). */
    if (result && !result.textContent.trim()) { form.insertAdjacentElement("afterend", result); }
    if (input) {
      input.addEventListener("change", function () {
        var file = input.files && input.files[0];
        var problem = file ? fileProblem(form, file) : "";
        input.setCustomValidity(problem);
        if (problem) { say(result, problem, false); } else if (file) {
          say(result, "\u201c" + file.name + "\u201d (" + bytesText(file.size) + ") is ready to upload.", null);
        }
      });
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (busy) { return; }
      var file = input && input.files ? input.files[0] : null;
      var problem = fileProblem(form, file);
      if (problem) {
        say(result, problem, false);
        if (input) { input.focus(); }
        return;
      }
      busy = true;
      var focus = focusKey();
      if (button) { button.disabled = true; }
      var box = progressFor(form);
      box.hidden = false;
      setProgress(box, 0);
      say(result, "Uploading \u201c" + file.name + "\u201d (" + bytesText(file.size) + ")\u2026", null);
      var xhr = new XMLHttpRequest();
      var track = form.querySelector("#track");
      var csrf = form.querySelector('input[name="csrf"]');
      /* The track and the CSRF token go in the request's head too: a wrong one is refused before
         the file is sent. */
      var action = new URL(form.getAttribute("action") || form.action, window.location.href);
      if (track && track.value) { action.searchParams.set("track", track.value); }
      xhr.open("POST", action.href);
      xhr.setRequestHeader("Accept", "application/json");
      if (csrf && csrf.value) { xhr.setRequestHeader(CSRF_HEADER, csrf.value); }
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable && e.total > 0) { setProgress(box, e.loaded / e.total); }
      });
      xhr.upload.addEventListener("load", function () {
        setProgress(box, 1, "100 %: sent; scoring\u2026");
        say(result, "Sent. The server is checking and scoring \u201c" + file.name + "\u201d\u2026", null);
      });
      function finish(status, body) {
        var answer = answerOf(status, body);
        var text = answer.message;
        var scores = answer.ok ? scoresText(answer.submission) : "";
        if (scores && text.indexOf("mIoU") < 0) { text += " " + scores; }
        setProgress(box, 1, answer.ok ? "100 %: done" : "stopped");
        busy = false;
        if (button) { button.disabled = false; }
        if (answer.status === 401) {
          say(result, text + " Sign in again.", false);
          restoreFocus(focus);
          return;
        }
        var after = answer.ok ? refresh(focus) : Promise.resolve(true);
        after.then(function () {
          say(result, text, answer.ok);
          restoreFocus(focus);
          if (answer.ok && input) { input.value = ""; }
          if (answer.submission) {
            var row = document.querySelector('#my-submissions tr[data-id="' + answer.submission.id + '"]');
            if (row) { row.classList.add("just-added"); }
          }
        });
      }
      xhr.addEventListener("load", function () { finish(xhr.status, xhr.responseText); });
      xhr.addEventListener("error", function () { finish(0, ""); });
      xhr.addEventListener("abort", function () { finish(0, ""); });
      xhr.send(new FormData(form));
    });
  }

  /* --- metadata and final picks ------------------------------------------------------------------- */

  function postForm(form, submitter) {
    var region = resultFor(form);
    var data = new FormData(form);
    if (submitter && submitter.name) { data.append(submitter.name, submitter.value); }
    var multipart = (form.getAttribute("enctype") || "").toLowerCase() === "multipart/form-data";
    var body = multipart ? data : new URLSearchParams(data);
    var focus = focusKey();
    var buttons = form.querySelectorAll("button, input[type=submit]");
    buttons.forEach(function (b) { b.disabled = true; });
    say(region, "Saving\u2026", null);
    return fetch(form.getAttribute("action") || form.action, {
      method: "POST", body: body, credentials: "same-origin", headers: ANSWER_JSON, redirect: "error",
    }).then(function (r) {
      return r.text().then(function (text) { return answerOf(r.status, text); });
    }, function () {
      return answerOf(0, "");
    }).then(function (answer) {
      buttons.forEach(function (b) { b.disabled = false; });
      say(region, answer.message, answer.ok);
      if (!answer.ok) { restoreFocus(focus); }
      return answer.ok ? refresh(focus) : true;
    });
  }

  /* --- wiring --------------------------------------------------------------------------------------- */

  function start() {
    document.documentElement.classList.add("js");
    localTimes(document);
    var upload = document.getElementById("upload");
    if (upload && window.FormData && window.XMLHttpRequest) { enhanceUpload(upload); }
    /* Delegated: the forms inside refreshed regions are new nodes. */
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || !window.fetch) { return; }
      if (!form.classList.contains("metadata") && !form.classList.contains("picks")) { return; }
      event.preventDefault();
      postForm(form, event.submitter || null);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
