// AgentSkills console: drag and drop, the folder picker, upload progress and copy buttons.
// Plain JavaScript with no build step; every page works without it but the upload.
"use strict";

(function () {
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  // Copy buttons: data-copy names the element whose text is copied.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent;
    var label = button.textContent;
    var done = function (ok) {
      button.textContent = ok ? "Copied" : "Select and copy by hand";
      setTimeout(function () { button.textContent = label; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(selectText(source)); });
    } else {
      done(selectText(source));
    }
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { return document.execCommand("copy"); } catch (e) { return false; }
  }

  var zone = document.getElementById("upload-dropzone");
  if (!zone) { return; }
  var filesInput = document.getElementById("upload-files");
  var folderInput = document.getElementById("upload-folder");
  var progress = document.getElementById("upload-progress");
  var progressLabel = document.getElementById("upload-progress-label");
  var results = document.getElementById("upload-results");

  // Other systems' litter, which the server leaves out of zips too.
  function isLitter(path) {
    var name = path.split("/").pop();
    return path.indexOf("__MACOSX/") === 0 || path.indexOf("/__MACOSX/") >= 0 || name === ".DS_Store" ||
      name === "Thumbs.db" || name === "desktop.ini" || name.indexOf("._") === 0;
  }

  // Files with their paths; a folder's common top folder is dropped, so paths are inside the skill.
  function prepare(entries) {
    var kept = entries.filter(function (e) { return !isLitter(e.path); });
    var skipped = entries.length - kept.length;
    var tops = {};
    kept.forEach(function (e) { tops[e.path.split("/")[0]] = true; });
    var names = Object.keys(tops);
    if (names.length === 1 && kept.every(function (e) { return e.path.indexOf("/") > 0; })) {
      var prefix = names[0] + "/";
      kept = kept.map(function (e) { return { file: e.file, path: e.path.slice(prefix.length) }; });
    }
    return { files: kept, skipped: skipped };
  }

  function fromInput(input) {
    var list = [];
    for (var i = 0; i < input.files.length; i++) {
      var f = input.files[i];
      list.push({ file: f, path: f.webkitRelativePath || f.name });
    }
    return list;
  }

  // Walks dropped folders (FileSystemEntry) into files with their relative paths.
  function walk(entry, path, out) {
    return new Promise(function (resolve) {
      if (entry.isFile) {
        entry.file(function (file) { out.push({ file: file, path: path + file.name }); resolve(); }, function () { resolve(); });
      } else if (entry.isDirectory) {
        var reader = entry.createReader();
        var all = [];
        var more = function () {
          reader.readEntries(function (batch) {
            if (!batch.length) {
              Promise.all(all.map(function (child) { return walk(child, path + entry.name + "/", out); })).then(resolve);
            } else {
              all = all.concat(Array.prototype.slice.call(batch));
              more();
            }
          }, function () { resolve(); });
        };
        more();
      } else {
        resolve();
      }
    });
  }

  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = text; }
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function showAnswer(status, body, skipped) {
    results.textContent = "";
    var box = el("div", null, { id: "upload-answer", "data-status": String(status) });
    if (status === 201 && body) {
      box.className = "ok";
      var skills = body.skills || [];
      box.appendChild(el("p", skills.length === 1 ? "Uploaded one skill." : "Uploaded " + skills.length + " skills."));
      var list = el("ul", null, { id: "upload-skills" });
      skills.forEach(function (s) {
        var item = el("li", null, { "data-testid": "upload-skill" });
        var link = el("a", s.name, { href: "/skills/" + encodeURIComponent(s.id) });
        item.appendChild(link);
        item.appendChild(document.createTextNode((s.created ? " created, " : " updated, ") + s.uploaded_files.length + " file(s)"));
        if (s.warnings && s.warnings.length) {
          var warnings = el("ul");
          s.warnings.forEach(function (w) {
            warnings.appendChild(el("li", w.field + ": " + w.message, { "data-testid": "upload-warning", "data-code": w.code }));
          });
          item.appendChild(warnings);
        }
        list.appendChild(item);
      });
      box.appendChild(list);
      if (body.ignored && body.ignored.length) {
        box.appendChild(el("p", "Left out: " + body.ignored.join(", "), { id: "upload-ignored" }));
      }
    } else {
      box.className = "error";
      box.setAttribute("role", "alert");
      box.appendChild(el("p", body && body.detail ? body.detail : "The upload failed (HTTP " + status + ")."));
      if (body && body.errors && body.errors.length) {
        var errors = el("ul", null, { id: "upload-errors" });
        body.errors.forEach(function (e) {
          errors.appendChild(el("li", e.field + ": " + e.message, { "data-testid": "upload-error" }));
        });
        box.appendChild(errors);
      }
    }
    if (skipped) { box.appendChild(el("p", skipped + " file(s) of other systems' litter (.DS_Store, __MACOSX) were not sent.")); }
    results.appendChild(box);
  }

  function upload(entries) {
    var prepared = prepare(entries);
    if (!prepared.files.length) { showAnswer(0, { detail: "Nothing to upload." }, prepared.skipped); return; }
    var form = new FormData();
    prepared.files.forEach(function (e) { form.append("files", e.file, e.path); });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/skills/upload");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    progress.hidden = false;
    progressLabel.hidden = false;
    progress.value = 0;
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) { progress.value = Math.round(event.loaded * 100 / event.total); }
    });
    xhr.addEventListener("load", function () {
      progress.value = 100;
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      showAnswer(xhr.status, body, prepared.skipped);
      progressLabel.hidden = true;
    });
    xhr.addEventListener("error", function () {
      showAnswer(0, { detail: "The connection failed before the server answered." }, prepared.skipped);
      progressLabel.hidden = true;
    });
    xhr.send(form);
  }

  filesInput.addEventListener("change", function () { upload(fromInput(filesInput)); filesInput.value = ""; });
  folderInput.addEventListener("change", function () { upload(fromInput(folderInput)); folderInput.value = ""; });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    var items = event.dataTransfer.items;
    var out = [];
    if (items && items.length && items[0].webkitGetAsEntry) {
      var entries = [];
      for (var i = 0; i < items.length; i++) {
        var entry = items[i].webkitGetAsEntry();
        if (entry) { entries.push(entry); }
      }
      Promise.all(entries.map(function (entry) { return walk(entry, "", out); })).then(function () { upload(out); });
    } else {
      var files = event.dataTransfer.files;
      for (var j = 0; j < files.length; j++) { out.push({ file: files[j], path: files[j].name }); }
      upload(out);
    }
  });
})();
