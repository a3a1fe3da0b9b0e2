// safeloop dashboard: fetches the JSON API, draws Plotly charts and tables, refreshes itself.
"use strict";

const REFRESH_MS = 5000;
const PALETTE = ["#2f6fde", "#e39b21", "#8e5bd6", "#2e9d5b", "#d64545", "#1aa3b8", "#a0522d"];
const EVENT_COLORS = { rollback: "#d64545", promote: "#2e9d5b", set_canary: "#e39b21" };
const colors = new Map();
// `range` is what the user chose ("auto": fit the data, up to a day; or minutes), kept in the
// URL with the model (?model=…&range=…) so a reload or a shared link shows the same view.
const MAX_MINUTES = 31 * 24 * 60;
const state = { model: null, range: "auto", minutes: 60, timer: null,
                segment: new URLSearchParams(location.search).get("segment") };

function rangeFromUrl() {
  const raw = new URLSearchParams(location.search).get("range");
  if (raw === null || raw === "auto") return "auto";
  const minutes = Number(raw);
  return Number.isInteger(minutes) && minutes >= 1 && minutes <= MAX_MINUTES ? String(minutes) : "auto";
}

function showRange() {
  const select = document.getElementById("range");
  if (![...select.options].some((o) => o.value === state.range)) {
    select.appendChild(new Option(`${state.range} min`, state.range));
  }
  select.value = state.range;
}

function keepInUrl() {
  const query = new URLSearchParams(location.search);
  if (state.model) query.set("model", state.model);
  query.set("range", state.range);
  if (state.segment) query.set("segment", state.segment); else query.delete("segment");
  const url = `${location.pathname}?${query.toString()}${location.hash}`;
  if (url !== `${location.pathname}${location.search}${location.hash}`) history.replaceState(null, "", url);
}

function describeRange(fitted) {
  const m = state.minutes;
  const text = m % 1440 === 0 ? `${m / 1440} d` : m % 60 === 0 ? `${m / 60} h` : `${m} min`;
  document.getElementById("range-shown").textContent =
    fitted ? `showing the last ${text} (fits the data)` : `showing the last ${text}`;
  document.body.dataset.minutes = String(m);
}

function colorFor(name) {
  const key = name.replace(/ \(.*\)$/, "");  // one colour per version, whatever the route
  if (!colors.has(key)) colors.set(key, PALETTE[colors.size % PALETTE.length]);
  return colors.get(key);
}

async function api(path, params) {
  const query = new URLSearchParams(params).toString();
  const response = await fetch(`/api/${path}?${query}`, { cache: "no-store" });
  let body;
  try { body = await response.json(); } catch (e) { body = {}; }
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function setMessage(div, text, bad) {
  let message = div.querySelector(".message");
  if (!text) { if (message) message.remove(); return; }
  if (!message) { message = document.createElement("div"); div.appendChild(message); }
  message.className = "message" + (bad ? " bad" : "");
  message.textContent = text;
}

function hasPoints(traces) {
  return traces.some((t) => (t.y || []).some((v) => v !== null && v !== undefined));
}

function eventMarks(events) {
  const shapes = [], annotations = [];
  for (const e of events || []) {
    const color = EVENT_COLORS[e.kind] || "#6b7385";
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: e.t, x1: e.t, y0: 0, y1: 1,
                  line: { color, width: 1, dash: "dot" } });
    annotations.push({ x: e.t, xref: "x", yref: "paper", y: 1, yanchor: "bottom", showarrow: false,
                       text: e.kind === "set_canary" ? `${e.canary_percent}%` : e.kind,
                       font: { size: 9, color }, hovertext: `${e.kind} by ${e.issuer}: ${e.reason}` });
  }
  return { shapes, annotations };
}

function draw(id, traces, layout, events, range) {
  const div = document.getElementById(id);
  if (!hasPoints(traces)) {
    Plotly.purge(div);
    setMessage(div, "no data yet", false);
    return;
  }
  setMessage(div, null);
  const marks = events ? eventMarks(events) : { shapes: [], annotations: [] };
  const base = {
    margin: { l: 48, r: 12, t: 18, b: 34 }, showlegend: true,
    legend: { orientation: "h", y: -0.18, font: { size: 10 } },
    xaxis: { type: "date", gridcolor: "#eef1f5", range: range || undefined },
    yaxis: { gridcolor: "#eef1f5", rangemode: "tozero" },
    font: { size: 11 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff", hovermode: "x unified",
    shapes: marks.shapes, annotations: marks.annotations,
  };
  Plotly.react(div, traces, Object.assign(base, layout || {}), { displaylogo: false, responsive: true });
}

function failChart(id, message) {
  const div = document.getElementById(id);
  Plotly.purge(div);
  setMessage(div, message, true);
}

function line(name, x, y, extra) {
  return Object.assign({ type: "scatter", mode: "lines", name, x, y,
                         line: { color: colorFor(name), width: 2 } }, extra || {});
}

// Several figures per series share one legend entry: the line style tells them apart.
function styled(x, label, y, dash, width, first) {
  return line(`${x.name} ${label}`, x.t, y, {
    legendgroup: x.name, showlegend: first, name: first ? x.name : `${x.name} ${label}`,
    hovertemplate: `${x.name} ${label}: %{y:.3~f}<extra></extra>`,
    line: { color: colorFor(x.name), width, dash },
  });
}

function renderSeries(data) {
  const s = data.serving, ev = data.events, range = [data.since, data.until];
  draw("chart-traffic", s.map((x) => line(x.name, x.t, x.rps)), {}, ev, range);
  draw("chart-errors", s.map((x) => line(x.name, x.t, x.error_rate)),
       { yaxis: { tickformat: ".1%", rangemode: "tozero" } }, ev, range);
  const latency = [];
  for (const x of s) {
    latency.push(styled(x, "p95", x.p95, "solid", 2, true));
    latency.push(styled(x, "p50", x.p50, "dot", 1, false));
    latency.push(styled(x, "p99", x.p99, "dash", 1, false));
  }
  draw("chart-latency", latency, {}, ev, range);
  const canary = data.canary;
  draw("chart-canary", [line("canary %", canary.t, canary.percent,
       { line: { shape: "hv", color: "#e39b21", width: 2 }, fill: "tozeroy" })],
       { yaxis: { range: [0, 100] }, showlegend: false }, ev, range);
  const m = data.metrics || {};
  const perf = [];
  const dash = { accuracy: "solid", f1: "dash", roc_auc: "dot" };
  const seen = new Set();
  for (const metric of ["accuracy", "f1", "roc_auc"]) {
    for (const x of m[metric] || []) {
      perf.push(styled(x, metric, x.value, dash[metric], 2, !seen.has(x.name)));
      seen.add(x.name);
    }
  }
  draw("chart-performance", perf, { yaxis: { tickformat: ".0%", rangemode: "normal" } }, ev, range);
  const coverage = data.coverage.map((x) => styled(x, "by prediction minute", x.value, "solid", 2, true));
  for (const x of m.label_coverage || []) {
    const known = data.coverage.some((c) => c.name === x.name);
    coverage.push(styled(x, "per metrics window", x.value, "dot", 2, !known));
  }
  draw("chart-coverage", coverage, { yaxis: { tickformat: ".0%", range: [0, 1.02] } }, ev, range);
  draw("chart-shadow", (m.shadow_agreement_rate || []).map((x) => line(x.name, x.t, x.value,
       { mode: "lines+markers", marker: { size: 4 } })),
       { yaxis: { tickformat: ".0%", rangemode: "normal" } }, ev, range);
  renderTaskSeries(m, ev, range);
}

// Two figures per series on one chart, told apart by line style (multi-class and regression).
function pairChart(id, m, first, second, layout, ev, range) {
  const traces = [];
  const seen = new Set();
  for (const [metric, dash] of [[first, "solid"], [second, "dash"]]) {
    if (!metric) continue;
    for (const x of m[metric] || []) {
      traces.push(styled(x, metric, x.value, dash, 2, !seen.has(x.name)));
      seen.add(x.name);
    }
  }
  draw(id, traces, layout, ev, range);
}

function renderTaskSeries(m, ev, range) {
  if (!document.getElementById("multiclass-panels").hidden) {
    pairChart("chart-multiclass", m, "macro_f1", "micro_f1",
              { yaxis: { tickformat: ".0%", rangemode: "normal" } }, ev, range);
    pairChart("chart-logloss", m, "log_loss", null, {}, ev, range);
  }
  if (!document.getElementById("regression-panels").hidden) {
    pairChart("chart-regression", m, "mae", "rmse", {}, ev, range);
    pairChart("chart-r2", m, "r2", null, { yaxis: { rangemode: "normal" } }, ev, range);
    pairChart("chart-residuals", m, "residual_psi", "residual_mean",
              { yaxis: { rangemode: "normal" } }, ev, range);
  }
}

function renderTask(data) {
  const multi = data.series.filter((s) => s.kind === "multiclass");
  const regression = data.series.filter((s) => s.kind === "regression");
  document.getElementById("multiclass-panels").hidden = !multi.length;
  document.getElementById("regression-panels").hidden = !regression.length;
  document.body.dataset.task = data.task || "classification";
  if (multi.length) {
    // The production series first: that is the matrix an operator looks for.
    const shown = multi.find((s) => s.route === "production") || multi[0];
    const labels = shown.confusion.map((_, k) => `class ${k}`);
    text("confusion-hint", `${shown.name} · rows: true class · columns: predicted`);
    draw("chart-confusion", [{
      type: "heatmap", z: shown.confusion, x: labels, y: labels, colorscale: "Blues",
      hovertemplate: "true %{y} · predicted %{x}: %{z}<extra></extra>", showscale: false,
    }], {
      xaxis: { type: "category", title: { text: "predicted" } },
      yaxis: { type: "category", autorange: "reversed", title: { text: "true" } },
      hovermode: "closest", showlegend: false,
      annotations: shown.confusion.flatMap((row, i) => row.map((n, j) => ({
        x: labels[j], y: labels[i], text: String(n), showarrow: false, font: { size: 11 } }))),
    });
    const rows = multi.flatMap((s) => s.classes.map((c) => Object.assign({ name: s.name }, c)));
    fillTable("class-table", rows, (c) => [
      c.name, c.class, fixed(c.precision, 3), fixed(c.recall, 3), fixed(c.f1, 3), c.support,
    ], "no per-class figures yet");
    fillTable("multiclass-summary", multi, (s) => [
      s.name, pct(s.summary.accuracy), fixed(s.summary.macro_f1, 3), fixed(s.summary.micro_f1, 3),
      fixed(s.summary.log_loss, 3), fixed(s.summary.brier_score, 3),
      fixed(s.summary.expected_calibration_error, 3),
    ], "no multi-class figures yet");
  }
  if (regression.length) {
    fillTable("regression-table", regression, (s) => [
      s.name, fixed(s.summary.mae, 3), fixed(s.summary.rmse, 3), fixed(s.summary.r2, 3),
      fixed(s.summary.residual_mean, 3), fixed(s.summary.residual_bias_shift, 3),
      fixed(s.summary.residual_psi, 3),
    ], "no regression figures yet");
  }
}

function renderQuality(data) {
  const curves = data.reliability.map((c) => ({
    type: "scatter", mode: "lines+markers", name: c.name, x: c.predicted, y: c.observed,
    text: c.count.map((n) => `${n} labelled`), line: { color: colorFor(c.name), width: 2 },
    marker: { size: c.count.map((n) => 5 + Math.min(10, Math.log10(1 + n) * 3)) },
  }));
  if (curves.length) {
    curves.unshift({ type: "scatter", mode: "lines", name: "perfectly calibrated", x: [0, 1], y: [0, 1],
                     line: { color: "#b9c0cc", dash: "dash", width: 1 }, hoverinfo: "skip" });
  }
  draw("chart-reliability", curves, {
    xaxis: { title: { text: "mean predicted probability" }, range: [0, 1], type: "linear" },
    yaxis: { title: { text: "observed rate" }, range: [0, 1] }, hovermode: "closest",
    legend: { x: 0.02, y: 0.98, bgcolor: "rgba(255,255,255,0.8)", font: { size: 10 } },
    margin: { l: 48, r: 12, t: 10, b: 40 },
  });
  fillTable("drift-table", data.drift, (d) => [
    d.feature, d.version, fixed(d.psi, 3), band(d.band), fixed(d.max_psi, 3), d.sample_count,
  ], "no drift figures yet");
  fillTable("retraining-table", data.retraining, (r) => [
    when(r.t), r.version, r.should_retrain ? "yes" : "no", r.urgency, fixed(r.max_psi, 3),
    r.performance_drop === null ? "–" : `${(100 * r.performance_drop).toFixed(1)} %`,
    r.drifted_features.join(", "), r.reason,
  ], "no retraining decisions yet");
  fillTable("retraining-steps-table", data.retraining_steps || [], (r) => [
    when(r.t), r.stage, r.candidate_version || "–", r.base_version, r.actor,
    lineageText(r.lineage), r.reason,
  ], "no retraining runs yet");
}

// A candidate's lineage in one line: its decision, data window and weights' half-life.
function lineageText(lineage) {
  if (!lineage || !lineage.decision_id) return "–";
  const day = 86400000;
  const from = new Date(Number(lineage.train_from_ms)).toISOString().slice(0, 16);
  const to = new Date(Number(lineage.evaluation_to_ms)).toISOString().slice(0, 16);
  const halfLife = (Number(lineage.half_life_ms) / day).toFixed(2);
  return `${lineage.training_rows} rows ${from}…${to} UTC, half-life ${halfLife} d`;
}

function renderOverview(data) {
  const cfg = data.config;
  const byRoute = {};
  // The newest version seen on each route (the list is ordered by route, then version).
  for (const t of data.traffic) {
    const seen = byRoute[t.route];
    if (!seen || t.last_seen > seen.last_seen) byRoute[t.route] = t;
  }
  const traffic = (route) => {
    const t = byRoute[route];
    if (!t) return "no traffic in range";
    return `${t.version}: ${t.requests.toLocaleString()} req · ${pct(t.share)} · err ${pct(t.error_rate)} · p95 ${fixed(t.p95_ms, 1)} ms`;
  };
  text("prod-version", cfg ? cfg.production_version : (byRoute.production || {}).version || "–");
  text("prod-traffic", traffic("production"));
  const canaryNow = cfg ? cfg.canary_version : (byRoute.canary || {}).version;
  text("canary-version", canaryNow ? `${canaryNow}${cfg ? ` @ ${cfg.canary_percent}%` : ""}` : "none");
  text("canary-traffic", traffic("canary"));
  const shadowNow = cfg ? cfg.shadow_version : (byRoute.shadow || {}).version;
  text("shadow-version", shadowNow || "none");
  text("shadow-traffic", traffic("shadow"));
  text("rollout-step", rolloutState(cfg));
  text("rollout-since", cfg ? `${cfg.kind} since ${when(cfg.since)} UTC · seq ${cfg.sequence}${cfg.kill_switch ? " · KILL SWITCH" : ""}` : "");
  fillTable("events-table", data.events, (e) => [
    when(e.t), kind(e.kind), e.issuer, e.production_version, e.canary_version || "–",
    e.canary_percent === null ? "–" : `${e.canary_percent}%`, e.reason,
  ], "no control events in range");
}

function renderQueue(data) {
  fillTable("queue-table", data.items, (q) => [
    q.prediction_id, `${q.version} (${q.route})`, when(q.t), fixed(q.prediction, 4), fixed(q.confidence, 4),
  ], "nothing waiting for a label");
}

// Rollouts waiting for a person, every model: Approve / Reject ask for a reason, then POST it
// with the operator token; the server publishes the signed command as the CLI does.
function renderApprovals(data) {
  const writable = data.writable;
  document.getElementById("approvals-hint").textContent = writable
    ? "all models · approve or reject with the operator token"
    : "all models · read-only (SAFELOOP_DASHBOARD_OPERATOR_TOKEN not set): use `safeloop rollout approve|reject`";
  fillTable("approvals-table", data.pending, (p) => [
    p.model, p.candidate_version, p.known_good_version, `${p.canary_percent}%`, p.next,
    when(p.since), p.gate ? `${p.gate.outcome}${p.provisional ? " (provisional)" : ""}` : "–",
    p.reason, decisionButtons(p, writable),
  ], "no rollout is waiting for approval");
}

function decisionButtons(pending, writable) {
  const span = document.createElement("span");
  for (const action of ["approve", "reject"]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = action;
    button.textContent = action;
    button.dataset.model = pending.model;
    button.disabled = !writable;
    if (!writable) button.title = "the dashboard is read-only";
    button.addEventListener("click", () => openDecision(action, pending));
    span.appendChild(button);
  }
  return span;
}

// The token stays in this page's memory only (never in storage): a reload asks for it again.
const decision = { action: null, model: null, token: "" };

function openDecision(action, pending) {
  decision.action = action;
  decision.model = pending.model;
  text("decide-title", `${action} the rollout of ${pending.model}`);
  text("decide-what", action === "approve"
    ? `${pending.candidate_version} goes on from ${pending.canary_percent}% to ${pending.next}`
    : `${pending.candidate_version} is rolled back to ${pending.known_good_version} at once`);
  document.getElementById("decide-operator").value = sessionStorage.getItem("safeloop-operator") || "";
  document.getElementById("decide-token").value = decision.token;
  document.getElementById("decide-reason").value = "";
  text("decide-error", "");
  document.getElementById("decide").showModal();
}

async function submitDecision(event) {
  event.preventDefault();
  const operator = document.getElementById("decide-operator").value.trim();
  const token = document.getElementById("decide-token").value;
  const reason = document.getElementById("decide-reason").value.trim();
  const confirm = document.getElementById("decide-confirm");
  confirm.disabled = true;
  try {
    const response = await fetch(`/api/rollout/${decision.action}`, {
      method: "POST", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Safeloop-Operator-Token": token },
      body: JSON.stringify({ model: decision.model, operator, reason }),
    });
    let body;
    try { body = await response.json(); } catch (e) { body = {}; }
    if (!response.ok) {
      text("decide-error", body.error || `HTTP ${response.status}`);
      return;
    }
    // The name is kept for this tab, the token for this page, so a second decision asks less.
    sessionStorage.setItem("safeloop-operator", operator);
    decision.token = token;
    document.getElementById("decide").close();
    const status = document.getElementById("decision-status");
    status.className = "decision-status";
    const done = decision.action === "approve" ? "approved" : "rejected";
    status.textContent = `${decision.model}: ${done} by ${operator}, now ${body.phase} (sequence ${body.sequence})`;
    refresh();
  } catch (e) {
    text("decide-error", e.message);
  } finally {
    confirm.disabled = false;
  }
}

// Fairness: the segment keys the model's predictions carry, then per version one row per
// group of the chosen key and a gap row (best − worst among groups with enough sample).
const FIGURE_LABELS = { error_rate: "error rate", accuracy: "accuracy", f1: "F1", mae: "MAE", rmse: "RMSE" };

async function loadFairness(params) {
  const select = document.getElementById("fairness-key");
  const { keys } = await api("segments", params);
  select.replaceChildren(...keys.map((k) => new Option(k, k)));
  if (!keys.includes(state.segment)) state.segment = keys[0] || null;
  keepInUrl();
  if (!state.segment) {
    text("fairness-task", "");
    setFairnessHead([]);
    fillTable("fairness-table", [], () => [], "no segments in range: replicas publish them when models declare segment keys");
    return;
  }
  select.value = state.segment;
  const minSample = document.getElementById("fairness-min").value || "30";
  renderFairness(await api("fairness", Object.assign({ key: state.segment, min_sample: minSample }, params)));
}

function setFairnessHead(figures) {
  const head = document.querySelector("#fairness-table thead tr");
  const names = ["version", "group", "requests", "labelled", ...figures.map((f) => FIGURE_LABELS[f.name] || f.name)];
  head.replaceChildren(...names.map((n) => { const th = document.createElement("th"); th.textContent = n; return th; }));
}

function figureText(figure, value) {
  if (value === null || value === undefined) return "–";
  return figure.name === "mae" || figure.name === "rmse" ? fixed(value, 3) : pct(value);
}

function renderFairness(data) {
  text("fairness-task", `${data.task} · groups under ${data.min_sample} requests or labels are greyed and not in the gaps`);
  setFairnessHead(data.figures);
  const rows = [];
  for (const s of data.series) {
    for (const g of s.groups) rows.push({ series: s, group: g });
    rows.push({ series: s, gap: true });
  }
  fillTable("fairness-table", rows, (r) => {
    if (r.gap) {
      return [r.series.name, "gap (best vs worst)", "", "", ...data.figures.map((f) => gapCell(f, r.series.gaps[f.name]))];
    }
    const g = r.group;
    return [r.series.name, g.group, sampleCell(g.requests, g.requests_enough), sampleCell(g.labelled, g.labelled_enough),
      ...data.figures.map((f) => small(figureText(f, g[f.name]), g[`${f.basis}_enough`]))];
  }, "no rows with this segment key in range");
  document.querySelectorAll("#fairness-table tbody tr").forEach((tr, i) => {
    if (rows[i] && rows[i].gap) tr.className = "gap";
  });
}

function small(value, enough) {
  const span = document.createElement("span");
  // A figure with no value needs no warning about its sample.
  const marked = !enough && value !== "–";
  span.textContent = marked ? `${value} (n < min)` : value;
  if (marked) span.className = "small";
  return span;
}

function sampleCell(count, enough) {
  return small(count.toLocaleString(), enough);
}

function gapCell(figure, gap) {
  const span = document.createElement("span");
  if (!gap) { span.textContent = "–"; span.title = "fewer than two groups with enough sample"; return span; }
  span.textContent = `${figureText(figure, gap.gap)} (${gap.best} vs ${gap.worst})`;
  span.title = `best ${gap.best}: ${figureText(figure, gap.best_value)} · worst ${gap.worst}: ${figureText(figure, gap.worst_value)} · over ${gap.groups} groups`;
  return span;
}

function rolloutState(cfg) {
  if (!cfg) return "no commands yet";
  if (cfg.kill_switch) return "kill switch on";
  if (cfg.kind === "rollback") return "rolled back";
  if (cfg.kind === "promote") return `promoted ${cfg.production_version}`;
  if (cfg.canary_version) {
    return `${cfg.rollout_step ? `step ${cfg.rollout_step} · ` : ""}${cfg.canary_percent}% canary`;
  }
  return cfg.kind.replace("_", " ");
}

function when(t) { return t ? t.slice(0, 19) : "–"; }
function fixed(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function pct(v) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`; }
function text(id, value) { document.getElementById(id).textContent = value; }
function band(b) { const s = document.createElement("span"); s.className = `band ${b}`; s.textContent = b; return s; }
function kind(k) { const s = document.createElement("span"); s.className = `kind ${k}`; s.textContent = k; return s; }

function fillTable(id, rows, cells, empty) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  if (!rows || !rows.length) {
    const td = document.createElement("td");
    td.colSpan = document.querySelectorAll(`#${id} th`).length;
    td.className = "empty";
    td.textContent = empty;
    body.appendChild(document.createElement("tr")).appendChild(td);
    return;
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const value of cells(row)) {
      const td = document.createElement("td");
      if (value instanceof Node) td.appendChild(value); else td.textContent = value ?? "–";
      if (typeof value === "number" || /^-?[\d.]+( %)?$/.test(String(value))) td.className = "num";
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function showError(source, message) {
  document.querySelectorAll(`.error[data-for="${source}"]`).forEach((e) => { e.textContent = message; });
  document.querySelectorAll(`.chart[data-source="${source}"]`).forEach((c) => failChart(c.id, message));
}

async function loadModels() {
  const select = document.getElementById("model");
  const { models } = await api("models", { minutes: 10080 });
  const current = state.model || new URLSearchParams(location.search).get("model");
  select.replaceChildren(...models.map((m) => new Option(m, m)));
  state.model = models.includes(current) ? current : models[0] || null;
  if (state.model) select.value = state.model;
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    await loadModels();
  } catch (e) {
    status.textContent = `ClickHouse unavailable: ${e.message}`;
    status.className = "status bad";
    document.querySelectorAll(".chart").forEach((c) => failChart(c.id, e.message));
    document.querySelectorAll(".error").forEach((c) => { c.textContent = e.message; });
    document.body.dataset.loaded = "true";
    return;
  }
  if (!state.model) {
    status.textContent = "no data yet: no model has traffic or control events";
    status.className = "status";
    document.querySelectorAll(".chart").forEach((c) => setMessage(c, "no data yet", false));
    document.body.dataset.loaded = "true";
    return;
  }
  keepInUrl();
  if (state.range === "auto") {
    try {
      state.minutes = (await api("extent", { model: state.model })).minutes;
    } catch (e) {
      state.minutes = 60;
    }
  } else {
    state.minutes = Number(state.range);
  }
  describeRange(state.range === "auto");
  const params = { model: state.model, minutes: state.minutes };
  // The task view first: it decides which of the multi-class or regression panels show.
  try {
    renderTask(await api("task", params));
  } catch (e) {
    showError("task", e.message);
  }
  const parts = [
    ["overview", renderOverview], ["series", renderSeries],
    ["quality", renderQuality], ["labelling", renderQueue], ["approvals", renderApprovals],
  ];
  const results = await Promise.allSettled(parts.map(([path]) => api(path, params)));
  let failures = 0;
  results.forEach((result, i) => {
    const [source, render] = parts[i];
    if (result.status === "fulfilled") {
      document.querySelectorAll(`.error[data-for="${source}"]`).forEach((e) => { e.textContent = ""; });
      try { render(result.value); } catch (e) { failures += 1; showError(source, `cannot draw: ${e.message}`); }
    } else {
      failures += 1;
      showError(source, result.reason.message);
    }
  });
  try {
    await loadFairness(params);
    document.querySelectorAll('.error[data-for="fairness"]').forEach((e) => { e.textContent = ""; });
  } catch (e) {
    failures += 1;
    showError("fairness", e.message);
  }
  status.textContent = `${failures ? failures + " panel(s) failed · " : ""}updated ${new Date().toLocaleTimeString()}`;
  status.className = failures ? "status bad" : "status";
  document.body.dataset.loaded = "true";
}

function schedule() {
  clearInterval(state.timer);
  if (document.getElementById("auto").checked) state.timer = setInterval(refresh, REFRESH_MS);
}

document.getElementById("model").addEventListener("change", (e) => { state.model = e.target.value; refresh(); });
document.getElementById("range").addEventListener("change", (e) => { state.range = e.target.value; refresh(); });
state.range = rangeFromUrl();
showRange();
document.getElementById("auto").addEventListener("change", schedule);
document.getElementById("fairness-key").addEventListener("change", (e) => { state.segment = e.target.value; refresh(); });
document.getElementById("fairness-min").addEventListener("change", () => refresh());
document.getElementById("decide-form").addEventListener("submit", submitDecision);
document.getElementById("decide-cancel").addEventListener("click", () => document.getElementById("decide").close());
refresh();
schedule();
