// facewarden console: every action is a call to the JSON API with the session's CSRF token.
// All text from the server goes through textContent (never innerHTML).
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") Object.assign(node.style, v);  // CSSOM: allowed by the CSP
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function flash(message, kind = "ok") {
  const box = $("#flash");
  box.replaceChildren(el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null }, message));
}

async function api(method, url, body) {
  const opts = { method, headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(url, opts);
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: `http_${res.status}`, message: String(data) };
    if (res.status === 401) window.location.href = "/login";
    flash(`${err.message} (${err.code})`, "error");
    throw Object.assign(new Error(err.message), err);
  }
  return data;
}

const quiet = (p) => p.catch(() => undefined);  // the error is already shown
const date = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "");
const rows = (tbody, list) => $(tbody).replaceChildren(...list);

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

// -- search --------------------------------------------------------------------------------
async function initSearch() {
  const form = $("#search-form");
  const cases = await quiet(api("GET", "/api/v1/cases")) || [];
  const open = cases.filter((c) => c.status === "open");
  const select = $("#case");
  select.replaceChildren(...open.map((c) => el("option", { value: c.ref }, `${c.ref}: ${c.purpose}`)));
  const mode = $("#threshold-mode");
  const distance = $("#threshold");
  const policyHint = () => {
    const c = open.find((x) => x.ref === select.value);
    if (!c) { $("#case-policy").textContent = ""; return; }
    const policy = c.threshold_policy || form.dataset.policy;
    const setBy = c.threshold_policy ? "the case's policy" : "the deployment's policy";
    const fpir = c.target_fpir || Number(form.dataset.targetFpir);
    $("#case-policy").textContent = policy === "fpir"
      ? `Case ${c.ref} searches by target FPIR ${fpir} (${setBy}): the distance follows the ` +
        "gallery size. A fixed distance may only be stricter (a looser one is refused)."
      : `Case ${c.ref} searches at the fixed distance ${form.dataset.threshold} (${setBy}). ` +
        "A fixed distance for this search is logged with it.";
  };
  select.addEventListener("change", policyHint);
  mode.addEventListener("change", () => { distance.disabled = mode.value !== "fixed"; });
  policyHint();
  const input = $("#probe");
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    input.files = e.dataTransfer.files;
  });
  const pager = candidatePager();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = input.files[0];
    if (!file) return;
    const video = file.type.startsWith("video/") || VIDEO_NAME.test(file.name);
    const body = new FormData();
    body.append(video ? "video" : "image", file);
    body.append("case", select.value);
    body.append("top_k", $("#top-k").value);
    if (mode.value === "fixed") body.append("threshold", distance.value);
    if ($("#allow-low-quality").checked) body.append("allow_low_quality", "true");
    $("#search-btn").disabled = true;
    if (video) flash("Scanning the video: this takes about as long as the video itself.");
    try {
      if (video) showVideoResult(await api("POST", "/api/v1/search/video", body));
      else showResult(await api("POST", "/api/v1/search", body), file, pager);
    } catch { /* flashed */ } finally {
      $("#search-btn").disabled = false;
    }
  });
}

const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|mpe?g|ts|3gp|wmv)$/i;

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function policyText(result) {
  const p = result.threshold_policy || {};
  if (p.policy === "fpir") return ` (by target FPIR ${p.target_fpir} at this gallery size)`;
  if (p.set_by === "request") return " (fixed for this search)";
  return " (fixed)";
}

function showVideoResult(result) {
  $("#result").hidden = true;
  $("#video-result").hidden = false;
  $("#flash").replaceChildren();
  const v = result.video;
  $("#video-meta").textContent = `Search ${result.search_id} under case ${result.case}: ` +
    `${v.width}x${v.height}, ${(v.duration_s || 0).toFixed(1)} s; ${v.frames_sampled} frames ` +
    `sampled, ${v.detections} detections in ${v.tracks} tracks; gallery of ` +
    `${result.gallery_size}, threshold ${result.threshold}${policyText(result)}. ` +
    `Logged as audit record ${result.audit_seq}.`;
  $("#video-partial").hidden = !result.partial;
  $("#video-partial").textContent = result.partial ? `Partial result: ${result.partial_reason}` : "";
  $("#video-none").hidden = result.timeline.length > 0;
  rows("#timeline-table tbody", result.timeline.map((e) => el("tr", { dataset: { faceId: e.face_id } },
    el("td", {}, e.face_id), el("td", {}, e.best_distance.toFixed(3)),
    el("td", {}, e.ranges.map(([a, b]) => `${clock(a)}-${clock(b)}`).join(", ")),
    el("td", {}, e.track_ids.join(", ")), el("td", {}, `${e.source} (${e.jurisdiction})`),
    el("td", { class: "path" }, e.media_path))));
  $("#tracks").replaceChildren(...result.tracks.map((t) => el("section", { class: "track", dataset: { track: t.track_id } },
    el("h3", {}, `Track ${t.track_id}: ${clock(t.start_s)}-${clock(t.end_s)} · ${t.detections} detections`),
    el("div", { class: "grid" },
      el("figure", { class: "card" },
        t.thumbnail_jpeg ? el("img", { src: `data:image/jpeg;base64,${t.thumbnail_jpeg}`, alt: `track ${t.track_id}`, width: 150, height: 150 }) : "",
        el("figcaption", {}, `probe at ${clock(t.best_frame_s)} in the clip (best frame)`)),
      t.candidates.length ? t.candidates.map((c) => candidateCard(result.search_id, c))
        : el("p", { class: "notice" }, "No candidate within threshold.")))));
}

function candidatePager() {
  // Pages through one probe face's candidates (the search returned at most top-k of them).
  const state = { result: null, face: 0, page: 1 };
  const render = () => {
    const face = state.result.faces[state.face];
    const per = Number($("#cand-per-page").value);
    const total = face.candidates.length;
    const pages = Math.max(1, Math.ceil(total / per));
    state.page = Math.min(Math.max(1, state.page), pages);
    const from = (state.page - 1) * per;
    const shown = face.candidates.slice(from, from + per);
    $("#cand-pager").hidden = total === 0;
    $("#cand-page").textContent = `page ${state.page} of ${pages} · candidates ` +
      `${total ? from + 1 : 0}–${from + shown.length} of ${total}`;
    $("#cand-prev").disabled = state.page <= 1;
    $("#cand-next").disabled = state.page >= pages;
    $("#candidates").replaceChildren(...shown.map((c) => candidateCard(state.result.search_id, c)));
  };
  $("#cand-prev").addEventListener("click", () => { state.page -= 1; render(); });
  $("#cand-next").addEventListener("click", () => { state.page += 1; render(); });
  $("#cand-per-page").addEventListener("change", () => { state.page = 1; render(); });
  return {
    show(result, face) { Object.assign(state, { result, face, page: 1 }); render(); },
  };
}

function showResult(result, file, pager) {
  $("#video-result").hidden = true;
  $("#result").hidden = false;
  $("#flash").replaceChildren();
  const img = $("#probe-img");
  img.src = URL.createObjectURL(file);
  const found = result.faces.reduce((n, f) => n + f.candidates.length, 0);
  $("#search-meta").textContent = `Search ${result.search_id} under case ${result.case}: ` +
    `${result.faces.length} face(s) in the probe, ${found} candidate(s); gallery of ` +
    `${result.gallery_size}, top-k ${result.top_k ?? $("#top-k").value}, ` +
    `threshold ${result.threshold}${policyText(result)}. Logged as audit record ${result.audit_seq}.`;
  const draw = () => {
    const scale = img.clientWidth / img.naturalWidth;
    $("#boxes").replaceChildren(...result.faces.map((face, i) => {
      const [top, right, bottom, left] = face.box;
      return el("button", {
        type: "button", class: "box", "aria-label": `face ${i + 1}`, dataset: { face: i },
        style: {
          left: `${left * scale}px`, top: `${top * scale}px`,
          width: `${(right - left) * scale}px`, height: `${(bottom - top) * scale}px`,
        },
        on: { click: () => showFace(result, i, pager) },
      }, String(i + 1));
    }));
  };
  img.onload = draw;
  if (result.faces.length) showFace(result, 0, pager);
  else {
    $("#face-title").textContent = "No face found in the probe.";
    $("#candidates").replaceChildren();
    $("#cand-pager").hidden = true;
    $("#no-candidate").hidden = true;
  }
}

function showFace(result, i, pager) {
  const face = result.faces[i];
  document.querySelectorAll(".box").forEach((b) => b.classList.toggle("chosen", b.dataset.face == i));
  const crop = $("#face-crop");
  crop.hidden = !face.probe_crop_url;
  if (face.probe_crop_url) crop.src = face.probe_crop_url;
  $("#face-title").textContent = `Face ${i + 1} of ${result.faces.length}: ` +
    `${face.candidates.length} candidate(s)`;
  $("#face-estimate").textContent = face.expected_false_candidates == null ? ""
    : `est. false candidates if the person is not in the gallery: ` +
      `${sci(face.expected_false_candidates)} (strangers expected within distance ` +
      `${result.threshold} in a gallery of ${result.gallery_size}; calibrated estimate)`;
  const problems = face.quality_problems || [];
  $("#face-quality").textContent = `Probe quality: ${qualityText(face.quality, problems)}` +
    (!problems.length ? "" : face.searched === false ? " — below the quality bar: not searched."
      : " — below the quality bar: searched by override (logged).");
  $("#face-quality").className = problems.length ? "notice error" : "meta";
  $("#no-candidate").hidden = face.candidates.length > 0 || face.searched === false;
  pager.show(result, i);
}

function sci(x) {
  // Small probabilities as 6.3e-7, larger ones as 0.17.
  return x !== 0 && Math.abs(x) < 0.001 ? x.toExponential(1) : x.toPrecision(2);
}

function candidateCard(searchId, c) {
  const status = el("span", { class: "status" }, "");
  const decide = (decision) => async () => {
    try {
      const state = await api("POST", "/api/v1/confirmations",
        { search_id: searchId, face_id: c.face_id, decision });
      status.textContent = state.status;
      flash(`Face ${c.face_id}: ${decision}ed; state is now ${state.status}.`);
    } catch { /* flashed */ }
  };
  const grouped = c.subject || c.faces_matched > 1;
  return el("figure", { class: "card candidate", dataset: { faceId: c.face_id, distance: c.distance } },
    el("img", { src: c.crop_url, alt: `candidate ${c.rank}`, width: 150, height: 150 }),
    el("figcaption", {},
      el("div", {}, el("strong", {}, `#${c.rank}`),
        el("span", { class: "distance" }, ` distance ${c.distance.toFixed(3)}`),
        el("span", { class: "meta" }, ` · score ${c.score.toFixed(2)}`)),
      c.fmr == null ? "" : el("div", { class: "estimate", title: "Calibrated estimate " +
        "(LFW impostor pairs): false match rate per comparison at this distance, and the " +
        "expected number of unrelated people this close in a gallery of this size." },
        `FMR ≈ ${sci(c.fmr)} · est. strangers this close ≈ ${sci(c.expected_strangers)}`),
      grouped ? el("div", { class: "subject" },
        (c.subject ? `subject ${c.subject} · ` : "") + `${c.faces_matched} face(s) matched` +
        (c.duplicates_collapsed ? ` (${c.duplicates_collapsed} duplicate photo(s))` : "")) : "",
      c.time_s != null ? el("div", { class: "time" }, `at ${clock(c.time_s)} in its video` +
        (c.track != null ? ` (track ${c.track})` : "")) : "",
      el("div", { class: "prov" }, `${c.source} (${c.jurisdiction}) · ingested ${date(c.ingested_at).slice(0, 10)}`),
      el("div", { class: "path", title: `${c.media_path} (face ${c.face_id})` }, baseName(c.media_path))),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "confirm", on: { click: decide("confirm") } }, "Confirm"),
      el("button", { type: "button", class: "reject", on: { click: decide("reject") } }, "Reject"),
      status));
}

// -- cases ---------------------------------------------------------------------------------
async function initCases() {
  const load = async () => {
    const cases = await quiet(api("GET", "/api/v1/cases")) || [];
    rows("#cases-table tbody", cases.map((c) => el("tr", { dataset: { ref: c.ref } },
      el("td", {}, el("a", { href: "#", on: { click: (e) => { e.preventDefault(); showCase(c.ref); } } }, c.ref)),
      el("td", {}, c.status), el("td", {}, c.purpose), el("td", {}, c.legal_basis),
      el("td", {}, (c.investigators || []).join(", ")), el("td", {}, c.searches),
      el("td", {}, date(c.expires_at)),
      el("td", {}, c.status === "open" ? el("button", {
        type: "button", class: "close-case",
        on: { click: async () => { await quiet(api("POST", `/api/v1/cases/${encodeURIComponent(c.ref)}/close`)); load(); } },
      }, "Close") : ""))));
  };
  $("#open-case").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(e.target));
    f.investigators = f.investigators ? f.investigators.split(",").map((s) => s.trim()).filter(Boolean) : [];
    if (!f.offence) delete f.offence;
    try {
      await api("POST", "/api/v1/cases", f);
      flash(`Case ${f.ref} opened.`);
      e.target.reset();
      load();
    } catch { /* flashed */ }
  });
  await load();
}

async function showCase(ref) {
  const enc = encodeURIComponent(ref);
  $("#case-detail").hidden = false;
  $("#case-title").textContent = `Case ${ref}`;
  $("#case-review-link").href = `/review?case=${enc}`;
  const searches = await quiet(api("GET", `/api/v1/cases/${enc}/searches`)) || [];
  rows("#searches-table tbody", searches.map((s) => el("tr", { dataset: { searchId: s.search_id } },
    el("td", {}, s.search_id), el("td", {}, date(s.searched_at)), el("td", {}, s.searched_by),
    el("td", {}, s.probe),
    el("td", {}, `${s.candidates.length} candidate(s): `,
      ["pending", "identified", "rejected"].map((st) => {
        const n = s.candidates.filter((c) => c.status === st).length;
        return n ? el("span", { class: `state-${st}` }, `${n} ${st} `) : "";
      })))));
  const decided = await quiet(api("GET", `/api/v1/cases/${enc}/candidates`)) || [];
  rows("#decisions-table tbody", decided.map((d) => el("tr", {},
    el("td", {}, d.search_id), el("td", {}, d.face_id), el("td", { class: `state-${d.status}` }, d.status),
    el("td", {}, d.decisions.map((x) => `${x.user} ${x.decision}ed ${date(x.at)}`).join("; ")))));
}

// -- review: probe face beside each candidate -------------------------------------------------
function qualityText(q, problems) {
  if (!q) return "quality unknown";
  const text = `${q.width}×${q.height}px · blur ${Math.round(q.blur)} · yaw ${q.yaw}`;
  return problems && problems.length ? `${text} · LOW: ${problems.join(", ")}` : text;
}

function pairCard(item, onDecided) {
  const kept = item.probe_kept;
  const probe = el("figure", { class: "probe" },
    kept ? el("img", { src: item.probe_crop_url, alt: `probe face ${item.probe_face + 1} of search ${item.search_id}` })
      : el("div", { class: "placeholder" }, "probe not kept"),
    el("figcaption", {}, el("strong", {}, "Probe"),
      item.probe_time_s != null ? ` at ${clock(item.probe_time_s)} in the clip` : "",
      el("br"), qualityText(item.probe_quality, item.probe_quality_problems)));
  const cand = el("figure", { class: "candidate-face" },
    item.erased ? el("div", { class: "placeholder cand" }, "ERASED")
      : el("img", { src: item.crop_url, alt: `candidate face ${item.face_id}` }),
    el("figcaption", {}, el("strong", {}, `Candidate #${item.rank}`),
      item.time_s != null ? ` at ${clock(item.time_s)} in its video` : "",
      el("br"), item.erased ? "no longer held" : qualityText(item.candidate_quality, [])));
  const status = el("span", { class: `status state-${item.erased ? "erased" : item.status}` },
    item.erased ? "erased" : item.status);
  const decide = (decision) => async () => {
    try {
      const state = await api("POST", "/api/v1/confirmations",
        { search_id: item.search_id, face_id: item.face_id, decision });
      flash(`Face ${item.face_id} of search ${item.search_id}: ${decision}ed; state is now ${state.status}.`);
      onDecided();
    } catch { /* flashed */ }
  };
  const showSource = () => {
    $("#source-title").textContent = `Search ${item.search_id}, face ${item.face_id}: ${item.media_path}`;
    $("#source-img").src = item.source_url;
    $("#source-dialog").showModal();
  };
  const actions = item.erased ? [] : [
    item.status === "pending" ? el("button", { type: "button", class: "confirm", "aria-keyshortcuts": "c", on: { click: decide("confirm") } }, "Confirm") : "",
    item.status === "pending" ? el("button", { type: "button", class: "reject", "aria-keyshortcuts": "r", on: { click: decide("reject") } }, "Reject") : "",
    item.time_s == null ? el("button", { type: "button", class: "source", title: "Source photo with the face boxed (s)", "aria-keyshortcuts": "s", on: { click: showSource } }, "Source") : "",
  ];
  return el("article", {
    class: `pair${item.erased ? " erased" : ""}`, tabindex: 0,
    dataset: { searchId: item.search_id, faceId: item.face_id, status: item.erased ? "erased" : item.status },
    "aria-label": `search ${item.search_id}, probe face ${item.probe_face + 1}, candidate ${item.rank}`,
  },
    el("div", { class: "faces" }, probe, cand),
    el("div", { class: "verdict" }, el("span", { class: "distance" }, `distance ${item.distance.toFixed(3)}`), status, ...actions),
    item.erased ? el("div", { class: "prov" }, "Erased since the search: nothing to decide.")
      : el("div", { class: "prov", title: item.media_path },
        `${item.source} (${item.jurisdiction}) · ingested ${date(item.ingested_at)} · ${baseName(item.media_path)}`),
    el("div", { class: "prov" }, `search ${item.search_id} by ${item.searched_by} ${date(item.searched_at)} · probe ${item.probe}`),
    item.decisions.length ? el("div", { class: "prov decisions" },
      item.decisions.map((d) => `${d.user} ${d.decision}ed ${date(d.decided_at)}`).join("; ")) : "");
}

function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

async function initReview() {
  const params = new URLSearchParams(window.location.search);
  const cases = await quiet(api("GET", "/api/v1/cases")) || [];
  const select = $("#review-case");
  select.replaceChildren(...cases.map((c) => el("option", { value: c.ref }, `${c.ref} (${c.status})`)));
  if (params.get("case")) select.value = params.get("case");
  let page = Number(params.get("page") || 1);
  let pages = 1;
  const load = async (focus = 0) => {
    if (!select.value) { $("#review-empty").hidden = false; return; }
    const per = $("#review-per-page").value;
    const sheet = await quiet(api("GET",
      `/api/v1/cases/${encodeURIComponent(select.value)}/review?page=${page}&per_page=${per}`));
    if (!sheet) return;
    pages = sheet.pages;
    $("#review-page").textContent = `page ${sheet.page} of ${sheet.pages} · ${sheet.total} candidate(s)`;
    $("#review-prev").disabled = page <= 1;
    $("#review-next").disabled = page >= pages;
    $("#review-empty").hidden = sheet.total > 0;
    const cards = sheet.items.map((item) => pairCard(item, () => load(index(item))));
    const index = (item) => sheet.items.indexOf(item);
    $("#review-grid").replaceChildren(...cards);
    if (cards.length) cards[Math.min(focus, cards.length - 1)].focus();
    history.replaceState(null, "", `/review?case=${encodeURIComponent(select.value)}&page=${page}`);
  };
  select.addEventListener("change", () => { page = 1; load(); });
  $("#review-per-page").addEventListener("change", () => { page = 1; load(); });
  $("#review-prev").addEventListener("click", () => { if (page > 1) { page -= 1; load(); } });
  $("#review-next").addEventListener("click", () => { if (page < pages) { page += 1; load(); } });
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    if ($("#source-dialog").open) return;
    const cards = [...document.querySelectorAll("#review-grid .pair")];
    const at = cards.indexOf(document.activeElement.closest(".pair"));
    const move = (d) => { if (cards.length) cards[Math.max(0, Math.min(cards.length - 1, at + d))].focus(); };
    const press = (cls) => { if (at >= 0) cards[at].querySelector(`button.${cls}`)?.click(); };
    const keys = {
      ArrowRight: () => move(1), ArrowLeft: () => move(-1), j: () => move(1), k: () => move(-1),
      c: () => press("confirm"), r: () => press("reject"), s: () => press("source"),
      n: () => $("#review-next").click(), p: () => $("#review-prev").click(),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  await load();
}

// -- ingest --------------------------------------------------------------------------------
async function initIngest() {
  const loadSources = async () => {
    const sources = await quiet(api("GET", "/api/v1/sources")) || [];
    $("#source").replaceChildren(...sources.map((s) =>
      el("option", { value: s.name }, `${s.name} (${s.jurisdiction}, ${s.media} media)`)));
  };
  $("#source-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/api/v1/sources", Object.fromEntries(new FormData(e.target)));
      flash("Source registered.");
      e.target.reset();
      loadSources();
    } catch { /* flashed */ }
  });
  $("#ingest-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("source", $("#source").value);
    for (const f of $("#files").files) form.append("files", f);
    try {
      const job = await api("POST", "/api/v1/ingest", form);
      watchJob(job.job_id);
    } catch { /* flashed */ }
  });
  await loadSources();
}

async function watchJob(id) {
  $("#job").hidden = false;
  for (;;) {
    const job = await quiet(api("GET", `/api/v1/jobs/${id}`));
    if (!job) return;
    const bar = $("#job-progress");
    bar.max = job.total || 1;
    bar.value = job.done;
    $("#job-state").textContent = `${job.state}: ${job.done}/${job.total ?? "?"} ${job.current || ""}`;
    if (["done", "failed", "cancelled"].includes(job.state)) {
      const s = job.summary || {};
      rows("#job-summary tbody", ["images", "faces", "duplicates", "faces_rejected", "faces_suppressed"]
        .map((k) => el("tr", {}, el("th", {}, k.replace("_", " ")), el("td", { "data-key": k }, s[k] ?? 0))));
      rows("#skipped tbody", (s.skipped || []).map((x) =>
        el("tr", {}, el("td", {}, x.path), el("td", {}, x.reason), el("td", {}, x.code))));
      if (job.error) flash(`${job.error.message} (${job.error.code})`, "error");
      else flash(`Ingest ${job.state}: ${s.images} image(s), ${s.faces} face(s).`);
      return;
    }
    await new Promise((r) => setTimeout(r, 400));
  }
}

// -- data protection -----------------------------------------------------------------------
function faceTable(matches, withCheckbox) {
  return matches.map((m) => el("figure", { class: "card", dataset: { faceId: m.face_id } },
    el("img", { src: `/api/v1/faces/${m.face_id}/crop`, alt: `face ${m.face_id}`, width: 120, height: 120 }),
    el("figcaption", {},
      withCheckbox ? el("label", {}, el("input", { type: "checkbox", class: "erase-pick", value: m.face_id, checked: m.proposal !== "review" }), ` face ${m.face_id}`) : `face ${m.face_id}`,
      el("br"), `distance ${Number(m.distance).toFixed(3)}`,
      m.proposal === "review" ? el("span", { class: "warn review-band" }, " · beyond the strict threshold: may be someone else; unticked faces are withheld from search for review") : "",
      el("br"), el("span", { class: "path" }, m.media_path || ""),
      el("br"), `${m.source || ""} ${m.jurisdiction ? `(${m.jurisdiction})` : ""}`)));
}

async function initDpo() {
  let lastFormat = "json";
  $("#access-form").addEventListener("click", (e) => { if (e.target.name === "format") lastFormat = e.target.value; });
  $("#access-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    form.set("format", lastFormat);
    try {
      const report = await api("POST", "/api/v1/subjects/access", form);
      if (lastFormat === "html") {
        download("subject-access-report.html", report, "text/html");
        flash("HTML report produced and downloaded; the request is logged.");
        return;
      }
      $("#access-result").replaceChildren(
        el("p", {}, `Request ${report.request_id}: ${report.matches.length} face(s) held at threshold ${report.threshold}. `,
          el("a", { href: "#", on: { click: (ev) => { ev.preventDefault(); download("subject-access.json", JSON.stringify(report, null, 2), "application/json"); } } }, "Download JSON")),
        el("p", { class: "hint" }, report.review_note),
        el("div", { class: "grid" }, faceTable(report.matches, false)));
      reloadDpo();
    } catch { /* flashed */ }
  });
  let selfieForm = null;
  $("#erase-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    selfieForm = new FormData(e.target);
    const preview = new FormData();
    preview.append("selfie", selfieForm.get("selfie"));
    try {
      const matches = await api("POST", "/api/v1/subjects/erase/preview", preview);
      $("#erase-preview").hidden = false;
      $("#erase-receipt").hidden = true;
      $("#erase-candidates").replaceChildren(...faceTable(matches, true));
      if (!matches.length) flash("No face of this person is held.");
    } catch { /* flashed */ }
  });
  $("#erase-btn").addEventListener("click", async () => {
    if (!$("#erase-reviewed").checked) { flash("Tick the review box first: erasure cannot be undone.", "error"); return; }
    const ids = [...document.querySelectorAll(".erase-pick:checked")].map((c) => c.value);
    if (!ids.length) { flash("No face selected.", "error"); return; }
    const form = new FormData();
    form.append("selfie", selfieForm.get("selfie"));
    form.append("reference", selfieForm.get("reference") || "");
    form.append("confirm", "true");
    ids.forEach((id) => form.append("face_ids", id));
    try {
      const receipt = await api("POST", "/api/v1/subjects/erase", form);
      $("#erase-preview").hidden = true;
      const pre = $("#erase-receipt");
      pre.hidden = false;
      pre.textContent = JSON.stringify(receipt, null, 2);
      flash(`Erased ${receipt.faces} face(s); receipt ${receipt.receipt_sha256 || ""}`);
      reloadDpo();
    } catch { /* flashed */ }
  });
  const showReceipt = (r) => { const pre = $("#purge-receipt"); pre.hidden = false; pre.textContent = JSON.stringify(r, null, 2); };
  $("#purge-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(e.target));
    if (f.confirm !== "PURGE") { flash("Type PURGE to confirm.", "error"); return; }
    const body = {};
    if (f.jurisdiction) body.jurisdiction = f.jurisdiction.toUpperCase();
    if (f.source) body.source = f.source;
    try { showReceipt(await api("POST", "/api/v1/purge", body)); flash("Purged."); } catch { /* flashed */ }
  });
  $("#retention-btn").addEventListener("click", async () => {
    try { showReceipt(await api("POST", "/api/v1/retention/run")); flash("Retention run done."); } catch { /* flashed */ }
  });
  const loadRequests = async () => {
    const list = await quiet(api("GET", "/api/v1/subjects/requests")) || [];
    rows("#requests-table tbody", list.map((r) => el("tr", {},
      el("td", {}, r.id), el("td", {}, r.kind), el("td", {}, r.reference || ""),
      el("td", {}, date(r.received_at)), el("td", {}, date(r.completed_at)), el("td", {}, r.handled_by),
      el("td", {}, `${r.faces} face(s)`, r.pending_review && r.pending_review.length
        ? el("div", { class: "grid pending-review", dataset: { requestId: r.id } },
          r.pending_review.map((id) => pendingCard(r.id, id)))
        : ""))));
  };
  const pendingCard = (requestId, faceId) => {
    const decide = (what) => async () => {
      try {
        await api("POST", `/api/v1/subjects/erasures/${requestId}/review`, { [what]: [faceId] });
        flash(`Face ${faceId}: ${what === "erase" ? "erased" : "released to search"}.`);
        reloadDpo();
      } catch { /* flashed */ }
    };
    return el("figure", { class: "card", dataset: { faceId } },
      el("img", { src: `/api/v1/faces/${faceId}/crop`, alt: `face ${faceId}`, width: 90, height: 90 }),
      el("figcaption", {}, `face ${faceId}: pending review`),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "reject", on: { click: decide("erase") } }, "Erase"),
        el("button", { type: "button", on: { click: decide("release") } }, "Not this person")));
  };
  const receipts = receiptList();
  const loadAll = async () => { await loadRequests(); await receipts.load(); };
  reloadDpo = loadAll;
  await loadAll();
}

let reloadDpo = async () => undefined;

const KIND_TEXT = {
  erasure: "erasure", "erasure-review": "erasure review", access: "access",
  restriction: "restriction", lifted: "restriction lifted", purge: "physical purge",
};

function receiptList() {
  let shown = null;
  let cursors = [null];  // before_seq of each page seen; the last is the current page
  let next = null;  // before_seq of the next (older) page, null on the last
  let loads = 0;
  let asked = 0;
  const dash = (v) => (v == null ? "—" : String(v));
  const collateral = (c) => (c.collateral_beyond_strict == null ? "—"
    : `${c.collateral_beyond_strict} erased beyond strict · ${c.collateral_withheld} withheld for review`);
  const faces = (r) => {
    const c = r.counts;
    if (r.kind === "access") return `${c.matches} found`;
    if (r.kind === "erasure-review") return `${c.faces_erased} erased · ${c.released} released · ${c.still_pending} pending`;
    if (r.kind === "restriction" || r.kind === "lifted") return `${c.media} media`;
    if (r.kind === "purge") {
      return `${c.deletions_covered} deletion(s) purged` +
        (c.erasure_requests ? ` · ${c.erasure_requests} erasure request(s)` : "");
    }
    return `${c.faces_erased} erased`;
  };
  const fileName = (r) => `facewarden-receipt-${r.id}.json`;
  const save = (r) => download(fileName(r), JSON.stringify(r.receipt, null, 2), "application/json");
  const view = (r) => {
    shown = r;
    const kind = KIND_TEXT[r.kind] || r.kind;
    $("#receipt-title").textContent = `${kind[0].toUpperCase()}${kind.slice(1)} receipt · ` +
      (r.request_id ? `request ${r.request_id}` : `audit record ${r.audit_seq}`) +
      (r.reference ? ` · ${r.reference}` : "");
    const covers = r.kind === "purge" ? [["Covers", `audit records ${r.receipt.covers_audit_seqs.join(", ") || "none"}` +
      (r.receipt.covers_request_ids && r.receipt.covers_request_ids.length
        ? ` · erasure requests ${r.receipt.covers_request_ids.join(", ")}` : "")]] : [];
    const facts = [
      ["Date (UTC)", date(r.at)], ["Handled by", r.by], ["Audit record", dash(r.audit_seq)],
      ["Faces", faces(r)], ["Collateral", collateral(r.counts)], ["Residue", dash(r.counts.residue)],
      ...covers,
      ["Receipt SHA-256", r.receipt_sha256 || "—"], ["Audit record hash", r.audit_hash || "—"],
    ];
    $("#receipt-summary").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("#receipt-json").textContent = JSON.stringify(r.receipt, null, 2);
    $("#receipt-dialog").showModal();
  };
  $("#receipt-download").addEventListener("click", () => { if (shown) save(shown); });
  $("#receipt-close").addEventListener("click", () => $("#receipt-dialog").close());
  const render = (list) => {
    $("#receipts-none").hidden = list.length > 0;
    rows("#receipts-table tbody", list.map((r) => el("tr", { dataset: { receipt: r.id, kind: r.kind, seq: r.audit_seq } },
      el("td", {}, date(r.at)), el("td", {}, KIND_TEXT[r.kind] || r.kind),
      el("td", {}, r.reference || "—"), el("td", {}, r.by),
      el("td", { class: "faces" }, faces(r)),
      el("td", { class: "collateral", title: r.counts.collateral_beyond_strict == null
        ? "not reported: no distance involved (access, restriction, purge, or an erasure by subject reference)" : null },
      collateral(r.counts)),
      el("td", { class: `residue${r.counts.residue ? " warn" : ""}` }, dash(r.counts.residue)),
      el("td", {},
        el("button", { type: "button", class: "view", on: { click: () => view(r) } }, "View"), " ",
        el("button", { type: "button", class: "download", on: { click: () => save(r) } }, "Download")))));
    const n = cursors.length;
    $("#receipts-page").textContent = list.length
      ? `page ${n} · audit records ${list[0].audit_seq}–${list[list.length - 1].audit_seq}` : `page ${n}`;
    $("#receipts-newer").disabled = n <= 1;
    $("#receipts-older").disabled = next == null;
    const table = $("#receipts-table");
    table.dataset.loads = String(++loads);
  };
  const load = async () => {
    const f = Object.fromEntries([...new FormData($("#receipts-filter"))].filter(([, v]) => String(v).trim()));
    const q = new URLSearchParams(f);
    const before = cursors[cursors.length - 1];
    if (before) q.set("before_seq", before);
    const mine = ++asked;
    const page = await quiet(api("GET", `/api/v1/subjects/receipts?${q}`));
    if (!page || mine !== asked) return;  // failed (flashed), or a later request superseded it
    next = page.next;
    render(page.receipts);
  };
  const first = () => { cursors = [null]; return load(); };
  let typing = null;
  $("#receipts-filter").addEventListener("change", (e) => { if (e.target.name !== "reference") first(); });
  $("#receipts-filter").addEventListener("input", (e) => {
    if (e.target.name !== "reference") return;
    clearTimeout(typing);
    typing = setTimeout(first, 300);
  });
  $("#receipts-filter").addEventListener("submit", (e) => { e.preventDefault(); first(); });
  $("#receipts-older").addEventListener("click", () => { if (next != null) { cursors.push(next); load(); } });
  $("#receipts-newer").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  return { load: first };
}

// -- audit ---------------------------------------------------------------------------------
function detailSummary(ev) {
  // One line a person can read: the error first, then each detail (lists as counts).
  const d = ev.details || {};
  const parts = [];
  if (ev.error) parts.push(ev.error);
  if (ev.threshold != null && d.threshold == null) parts.push(`threshold ${ev.threshold}`);
  if (ev.probe_hash) parts.push(`probe ${ev.probe_hash.slice(0, 10)}…`);
  for (const [k, v] of Object.entries(d)) {
    if (v === null || v === undefined || v === "") continue;
    const key = k.replace(/_/g, " ");
    if (Array.isArray(v)) parts.push(`${key}: ${v.length}`);
    else if (typeof v === "object") {
      const inner = Object.entries(v).filter(([, x]) => x !== null && x !== undefined);
      parts.push(`${key}: ${inner.slice(0, 3).map(([a, x]) => `${a.replace(/_/g, " ")} ${
        Array.isArray(x) ? x.length : typeof x === "object" ? "…" : x}`).join(", ")}${inner.length > 3 ? ", …" : ""}`);
    }
    else {
      const text = String(v);
      parts.push(`${key} ${text.length > 40 ? `${text.slice(0, 40)}…` : text}`);
    }
  }
  const line = parts.join(" · ");
  return line.length > 220 ? `${line.slice(0, 220)}…` : line;
}

async function initAudit() {
  const form = $("#audit-filter");
  let filters = {};
  let cursors = [null];  // before_seq of each page seen; the last is the current page
  let hasOlder = false;
  const seen = new Set();  // user names seen, offered in the user filter
  const utc = (local) => (local.length === 16 ? `${local}:00Z` : `${local}Z`);
  const load = async () => {
    const per = Number($("#audit-per-page").value);
    const q = new URLSearchParams({ ...filters, limit: String(per + 1) });
    const before = cursors[cursors.length - 1];
    if (before) q.set("before_seq", before);
    const events = await quiet(api("GET", `/api/v1/audit/events?${q}`));
    if (!events) return;
    hasOlder = events.length > per;
    const page = events.slice(0, per);
    page.forEach((ev) => seen.add(ev.actor));
    $("#audit-users").replaceChildren(...[...seen].sort().map((u) => el("option", { value: u })));
    rows("#audit-table tbody", page.map((ev) => el("tr", { class: `outcome-${ev.outcome}`, dataset: { seq: ev.seq } },
      el("td", {}, ev.seq), el("td", { class: "nowrap" }, date(ev.ts)), el("td", { class: "nowrap" }, ev.actor),
      el("td", { class: "role" }, String(ev.role || "").replace(/,/g, ", ")), el("td", { class: "nowrap" }, ev.action),
      el("td", { class: "nowrap" }, ev.case_ref || ""),
      el("td", { class: `outcome state-${ev.outcome === "ok" ? "identified" : "rejected"}` }, ev.outcome),
      el("td", { class: "details" },
        el("a", { href: "#", title: "the whole record", on: { click: (e) => {
          e.preventDefault();
          $("#event-title").textContent = `Audit record ${ev.seq}: ${ev.action} by ${ev.actor}`;
          $("#event-json").textContent = JSON.stringify(ev, null, 2);
          $("#event-dialog").showModal();
        } } }, detailSummary(ev) || "(no details)")))));
    $("#audit-none").hidden = page.length > 0;
    const table = $("#audit-table");
    table.dataset.loads = String(Number(table.dataset.loads || 0) + 1);
    const n = cursors.length;
    $("#audit-page").textContent = page.length
      ? `page ${n} · records ${page[0].seq}–${page[page.length - 1].seq}` : `page ${n}`;
    $("#newer").disabled = n <= 1;
    $("#older").disabled = !hasOlder;
    const exp = new URLSearchParams();
    if (filters.case) exp.set("case", filters.case);
    if (filters.since) exp.set("since", filters.since);
    $("#export-jsonl").href = `/api/v1/audit/export?${new URLSearchParams({ format: "jsonl", ...Object.fromEntries(exp) })}`;
    $("#export-csv").href = `/api/v1/audit/export?${new URLSearchParams({ format: "csv", ...Object.fromEntries(exp) })}`;
  };
  const apply = () => {
    const f = Object.fromEntries([...new FormData(form)].filter(([k, v]) => v && k !== "per_page"));
    if (f.since) f.since = utc(f.since);
    if (f.until) f.until = utc(f.until);
    filters = f;
    cursors = [null];
    return load();
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  form.addEventListener("reset", () => setTimeout(apply, 0));
  $("#audit-per-page").addEventListener("change", apply);
  $("#older").addEventListener("click", () => {
    const last = $("#audit-table tbody tr:last-child");
    if (hasOlder && last) { cursors.push(Number(last.dataset.seq)); load(); }
  });
  $("#newer").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  $("#event-close").addEventListener("click", () => $("#event-dialog").close());
  const chain = await quiet(api("POST", "/api/v1/audit/verify", {}));
  if (chain) {
    const box = $("#chain");
    box.classList.add(chain.ok ? "ok" : "error");
    box.textContent = chain.ok
      ? `Hash chain intact: ${chain.records} records verified.`
      : `Hash chain BROKEN at record ${chain.first_bad_seq}: ${chain.reason}`;
  }
  await load();
}

// -- users (admin) ---------------------------------------------------------------------------
function showToken(name, token) {
  const box = $("#new-token");
  box.hidden = false;
  box.replaceChildren(`API token of ${name}, shown once: `, el("code", { id: "token-value" }, token));
}

async function initUsers() {
  const load = async () => {
    const users = await quiet(api("GET", "/api/v1/users")) || [];
    rows("#users-table tbody", users.map((u) => {
      const act = (label, method, url, after) => el("button", { type: "button", on: { click: async () => {
        const res = await quiet(api(method, url));
        if (res) { if (after) after(res); await load(); }
      } } }, label);
      const path = `/api/v1/users/${encodeURIComponent(u.name)}`;
      return el("tr", { dataset: { user: u.name } },
        el("td", {}, u.name), el("td", {}, u.roles.join(", ")),
        el("td", {}, (u.active ? "active" : "disabled") + (u.token_expired ? ", token expired" : "")),
        el("td", {}, date(u.token_expires_at) || "never"), el("td", {}, date(u.last_used_at) || "never"),
        el("td", {},
          u.active ? act("Disable", "POST", `${path}/disable`) : act("Enable", "POST", `${path}/enable`),
          act("Rotate token", "POST", `${path}/token`, (r) => showToken(r.name, r.token))));
    }));
  };
  $("#user-add").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const roles = String(form.get("roles")).split(",").map((r) => r.trim()).filter(Boolean);
    const res = await quiet(api("POST", "/api/v1/users", { name: form.get("name"), roles }));
    if (res) { showToken(res.name, res.token); e.target.reset(); await load(); }
  });
  await load();
}

const PAGES = {
  search: initSearch, cases: initCases, review: initReview, ingest: initIngest, dpo: initDpo, audit: initAudit,
  users: initUsers,
};
document.addEventListener("DOMContentLoaded", () => {
  const init = PAGES[document.body.dataset.page];
  if (init) init().then(() => document.body.setAttribute("data-ready", "1"));
});
