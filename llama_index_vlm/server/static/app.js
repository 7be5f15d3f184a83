// The page of `llama-index-vlm serve`: ask (answers streamed as server-sent events), see the
// cited pages, upload documents, delete them. Plain JavaScript; the API is the same JSON API
// any client uses, authenticated by the session cookie when the server has a token.
"use strict";

const $ = (id) => document.getElementById(id);
let serverInfo = null;
let lastQuery = "";

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    showBanner("This server needs its token: reload the page to log in.");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (ignored) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// ------------------------------------------------------------------------ server state

async function loadInfo() {
  for (;;) {
    const health = await fetch("/health", { credentials: "same-origin" });
    if (health.status === 401) { showBanner("This server needs its token: reload the page to log in."); return; }
    const status = (await health.json()).status;
    if (status === "ready") break;
    if (status === "failed") { showBanner("The server could not load its models; see its log."); return; }
    $("summary").textContent = "Loading the models…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  serverInfo = await (await api("/info")).json();
  const models = serverInfo.vlm ? `answers by ${serverInfo.vlm}` : "search only (no answering model)";
  $("summary").textContent =
    `${plural(serverInfo.pages, "page")} in ${plural(serverInfo.documents, "document")} · ${models}`;
  $("ask").hidden = !serverInfo.vlm;
  document.body.dataset.ready = "true";
}

// ------------------------------------------------------------------------ asking

function parseEvents(buffer, onEvent) {
  // Server-sent events are separated by a blank line; returns what is left of `buffer`.
  let end;
  while ((end = buffer.indexOf("\n\n")) !== -1) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (data.length) onEvent(event, JSON.parse(data.join("\n")));
  }
  return buffer;
}

async function ask(question, k) {
  const answer = $("answer");
  answer.textContent = "";
  setStatus("Finding the pages…");
  const response = await api("/ask", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ question, k, stream: true }),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finished = false;
  const onEvent = (event, data) => {
    if (event === "queued") setStatus(`Waiting for the model (${plural(data.waiting, "asker")} ahead)…`);
    else if (event === "token") { setStatus("Answering…"); answer.textContent += data.text; }
    else if (event === "pages") showPages(data.pages);
    else if (event === "done") { finished = true; setStatus("Answer from the pages below."); }
    else if (event === "error") { finished = true; setStatus(`The answer failed: ${data.error}`); }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), onEvent);
  }
  if (!finished) setStatus("The answer was cut short.");
}

async function search(query, k) {
  $("answer").textContent = "";
  setStatus("Searching…");
  const response = await api("/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k }),
  });
  const { results } = await response.json();
  showPages(results);
  setStatus(results.length ? "The best pages, best first:" : "No pages found.");
}

function setStatus(text) {
  $("answer-box").hidden = false;
  $("answer-status").textContent = text;
}

function showPages(pages) {
  const cited = $("cited");
  cited.replaceChildren();
  for (const page of pages) {
    const figure = document.createElement("figure");
    figure.className = "thumbnail";
    const button = document.createElement("button");
    button.type = "button";
    button.title = "Enlarge, with where the question matched";
    const image = document.createElement("img");
    image.src = `/pages/${encodeURIComponent(page.page_id)}/image?size=400`;
    image.alt = page.label;
    image.loading = "lazy";
    button.append(image);
    button.addEventListener("click", () => openViewer(page));
    const caption = document.createElement("figcaption");
    const score = page.score === null ? "" : ` · score ${page.score.toFixed(2)}`;
    caption.textContent = `${page.label}${score}`;
    figure.append(button, caption);
    cited.append(figure);
  }
}

function openViewer(page) {
  const viewer = $("viewer");
  const image = $("viewer-image");
  const toggle = $("viewer-map");
  const id = encodeURIComponent(page.page_id);
  const show = () => {
    image.src = toggle.checked && lastQuery
      ? `/pages/${id}/map?size=1600&query=${encodeURIComponent(lastQuery)}`
      : `/pages/${id}/image`;
  };
  $("viewer-title").textContent = page.label;
  image.alt = page.label;
  toggle.onchange = show;
  show();
  viewer.showModal();
}

async function onAsk(event, searchOnly) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  const k = Number($("k").value);
  lastQuery = question;
  $("cited").replaceChildren();
  for (const id of ["ask", "search"]) $(id).disabled = true;
  try {
    if (searchOnly || !serverInfo || !serverInfo.vlm) await search(question, k);
    else await ask(question, k);
  } catch (error) {
    setStatus(error.message);
  } finally {
    for (const id of ["ask", "search"]) $(id).disabled = false;
  }
}

// ------------------------------------------------------------------------ documents

async function loadDocuments() {
  const { documents } = await (await api("/documents")).json();
  const list = $("documents");
  list.replaceChildren();
  for (const document_ of documents) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = document_.file_name || document_.doc_id;
    const pages = document.createElement("span");
    pages.className = "muted";
    pages.textContent = plural(document_.pages, "page");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${name.textContent}`);
    remove.addEventListener("click", () => deleteDocument(document_, name.textContent));
    item.append(name, pages, remove);
    list.append(item);
  }
  if (!documents.length) {
    const item = document.createElement("li");
    item.className = "muted";
    item.textContent = "No documents yet.";
    list.append(item);
  }
}

async function deleteDocument(document_, name) {
  if (!confirm(`Delete ${name} (${plural(document_.pages, "page")}) from the index?`)) return;
  try {
    await api(`/documents/${encodeURIComponent(document_.doc_id)}`, { method: "DELETE" });
  } catch (error) {
    showBanner(`Could not delete ${name}: ${error.message}`);
  }
  await Promise.all([loadDocuments(), loadInfo()]);
}

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const item = document.createElement("li");
  const label = document.createElement("div");
  const bar = document.createElement("progress");
  label.textContent = `Uploading ${[...files].map((file) => file.name).join(", ")}…`;
  item.append(label, bar);
  $("jobs").prepend(item);
  try {
    let job = await (await api("/documents", { method: "POST", body: form })).json();
    while (job.state === "queued" || job.state === "running") {
      label.textContent = `Indexing ${job.file_names.join(", ")}: ${job.pages_done} of ${job.pages_total} pages`;
      if (job.pages_total) { bar.max = job.pages_total; bar.value = job.pages_done; }
      await new Promise((resolve) => setTimeout(resolve, 400));
      job = await (await api(`/jobs/${job.job_id}`)).json();
    }
    bar.max = 1;
    bar.value = 1;
    const failures = job.failed.map((failure) => `${failure.file_name}: ${failure.reason}`);
    if (job.state === "failed") failures.push(job.error);
    label.textContent = `${job.file_names.join(", ")}: ${plural(job.pages_added, "page")} added` +
      (job.pages_unchanged ? `, ${job.pages_unchanged} already there` : "");
    if (failures.length) {
      item.classList.add("failed");
      label.textContent += `; not indexed: ${failures.join("; ")}`;
    }
  } catch (error) {
    item.classList.add("failed");
    label.textContent = `Upload failed: ${error.message}`;
    bar.remove();
  }
  await Promise.all([loadDocuments(), loadInfo()]);
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => { upload([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    upload([...event.dataTransfer.files]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  $("ask-form").addEventListener("submit", (event) => onAsk(event, false));
  $("search").addEventListener("click", (event) => onAsk(event, true));
  setUpDropZone();
  try {
    await loadInfo();
    await loadDocuments();
  } catch (error) {
    showBanner(error.message);
  }
});
