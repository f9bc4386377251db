"""The dashboard's HTML pages: server-rendered tables plus Plotly charts drawn from embedded JSON.

No build step and no CDN: the only script besides ``APP_JS`` is the ``plotly.min.js`` of the
installed ``plotly`` package, served by the app itself.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:8px 16px}header a{color:#fff;text-decoration:none;margin-right:16px}
main{padding:12px 16px}h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#eceff1}td.l,th.l{text-align:left}.ref{color:#777}.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.card{background:#fff;border:1px solid #ddd;padding:6px}.kpi{display:flex;gap:24px;font-size:15px;margin:6px 0}
.kpi b{font-size:18px}.chart{height:340px}.ok{color:#2e7d32}.bad{color:#c62828}code{font-size:12px}
"""


def _json(data: Any) -> str:
    return json.dumps(data, default=str).replace("</", "<\\/")


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def page(title: str, body: str, data: Any = None, script: str = "", poll: float = 2.0) -> str:
    blob = "" if data is None else f'<script id="data" type="application/json">{_json(data)}</script>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)} · evolve</title>
<style>{CSS}</style><script src="/static/plotly.min.js"></script><script src="/static/app.js"></script></head>
<body data-poll="{poll}"><header><a href="/">evolve dashboard</a><span>{escape(title)}</span></header>
<main>{body}</main>{blob}<script>{script}</script></body></html>"""


def runs_page(rows: list[dict[str, Any]], poll: float) -> str:
    trs = "".join(
        f'<tr><td class="l"><a href="/runs/{escape(r["id"])}">{escape(r["id"])}</a></td><td class="l">'
        f'{escape(r["name"])}</td><td class="l">{r["status"]}</td><td>{r["budget_used"]}/{r["budget"] or "∞"}</td>'
        f'<td>{_f(r["best_fitness"], 4)}</td><td class="l">{r["created"]}</td><td class="l">'
        f'{r["last_heartbeat"] or "—"}</td></tr>' for r in rows)
    body = (f'<h1>Runs</h1><table id="runs"><tr><th class="l">run</th><th class="l">name</th><th class="l">status</th>'
            f'<th>budget used</th><th>best fitness</th><th class="l">created</th><th class="l">last heartbeat</th>'
            f'</tr>{trs}</table>')
    return page("runs", body, rows, "evolveRuns();", poll)


def run_page(view: dict[str, Any], poll: float) -> str:
    """The run page; ``view`` is `run_view`'s data plus ``pareto`` (`front_view`'s, or None)."""
    run, st, fid = view["run"], view["status"], view["fidelity"]
    best = st["best"]
    fidelity = "" if fid is None else (f'<span id="fidelity">low fidelity only <b id="low-only">{fid["low_only"]}</b>'
                                       f' · promoted <b id="promoted">{fid["promoted"]}</b>'
                                       f' <span id="low-rung" class="bad">{escape(fid["low_rung"])}</span></span>')
    body = f"""<h1>Run <span id="run-id">{escape(run["id"])}</span> · {escape(run["name"])}</h1>
<div class="kpi"><span>status <b id="status">{st["status"]}</b></span>
<span>evaluations <b id="done">{st["evaluations_done"]}</b>/<b id="budget">{st["budget"] or "∞"}</b></span>
<span>best <b id="best">{_f(best["fitness"], 4) if best else "—"}</b>
<a id="best-link" href="{'/candidates/' + best['id'] if best else '#'}">{best["id"] if best else ""}</a></span>
<span>failures <b id="failures">{st["failures"]}</b></span>
<span>rate <b id="rate">{_f(st["evaluations_per_hour"], 0)}</b>/h</span>{fidelity}
<span>strategy {escape(str(run["strategy"]))} · {escape(str(run["method"]))}</span></div>
<h2>Workers</h2><table id="workers"><tr><th class="l">worker</th><th class="l">state</th><th class="l">candidate</th>
<th>done</th></tr>{"".join(_worker_row(w) for w in st["workers"])}</table>
<div class="grid">
<div class="card"><div id="history-n" class="chart"></div></div>
<div class="card"><div id="history-t" class="chart"></div></div>
<div class="card"><div id="scatter" class="chart"></div></div>
<div class="card"><div id="importance" class="chart"></div></div></div>
<div id="pareto-section" class="card"{"" if view["pareto"] else " hidden"}><form id="pareto-form">objectives
<select name="x" id="pareto-x"></select> × <select name="y" id="pareto-y"></select> <button>plot</button></form>
<div id="pareto" class="chart"></div><table id="front-table"></table></div>
<div class="card"><div id="parallel" class="chart"></div></div>
<div class="card"><div id="timeline" class="chart"></div></div>
<h2>Per-task scores (references, then the best 25)</h2><div id="tasks">{tasks_table(view["tasks"])}</div>
<h2>Compare</h2><form action="/compare"><input name="a" placeholder="candidate A">
<input name="b" placeholder="candidate B"><button>compare</button></form>"""
    return page(f"run {run['id']}", body, view, "evolveRun();", poll)


def _worker_row(w: dict[str, Any]) -> str:
    cand = f'<a href="/candidates/{w["candidate"]}">{w["candidate"]}</a>' if w["candidate"] else "—"
    return (f'<tr><td class="l">{escape(w["worker"])}</td><td class="l state">{w["state"]}</td>'
            f'<td class="l">{cand}</td><td>{w["evaluations"]}</td></tr>')


def tasks_table(rows: list[dict[str, Any]]) -> str:
    tasks = sorted({t for r in rows for s in ("validation", "test") for t in r.get(s, {})})
    head = "".join(f"<th>{escape(t)} (val)</th><th>{escape(t)} (test)</th>" for t in tasks)
    body = "".join(
        f'<tr class="{"ref" if r["kind"] == "reference" else ""}"><td class="l"><a href="/candidates/{r["id"]}">'
        f'{escape(r["label"] or r["id"])}</a></td><td>{_f(r["fitness"], 4)}</td>'
        + "".join(f'<td>{_f(r["validation"].get(t), 4)}</td><td>{_f(r["test"].get(t), 4)}</td>' for t in tasks)
        + "</tr>" for r in rows)
    return f'<table><tr><th class="l">candidate</th><th>fitness</th>{head}</tr>{body}</table>'


def candidate_page(view: dict[str, Any]) -> str:
    v = view
    recipe = "".join(
        f'<tr><td class="l">{escape(r["model"])}</td><td class="l">{escape(r["parameter"])}</td><td class="l">'
        f'{escape(r["kind"] or "")}</td><td class="l">{" ".join(_f(x) for x in r["values"])}</td></tr>'
        for r in v["recipe_table"])
    tasks = sorted({t for s in v["tasks"] for t in v["tasks"][s]})
    task_rows = "".join(f'<tr><td class="l">{escape(t)}</td>' + "".join(
        f'<td>{_f(v["tasks"].get(s, {}).get(t), 4)}</td>' for s in ("validation", "test")) + "</tr>" for t in tasks)
    samples = "".join(
        f'<tr><td class="l">{s}/{escape(t)}</td><td>{sum(1 for x in xs if x > 0)}/{len(xs)}</td>'
        f'<td class="l"><code>{"".join("█" if x > 0 else "·" for x in xs)}</code></td></tr>'
        for s, per in v["samples"].items() for t, xs in per.items())
    parents = "".join(
        f'<li><a href="/candidates/{p["id"]}">{escape(p["label"] or p["id"])}</a> '
        + " ".join(f'{escape(t)}={_f(x, 4)}' for t, x in p["tasks"]["validation"].items()) + "</li>"
        for p in v["parents"]) or "<li>none (a first-generation or reference candidate)</li>"
    lineage = "".join(
        f'<li style="margin-left:{16 * (a["depth"] - 1)}px"><a href="/candidates/{a["id"]}">{a["id"]}</a> '
        f'gen {a["generation"]} (depth {a["depth"]})</li>' for a in v["lineage"]) or "<li>—</li>"
    body = f"""<h1>Candidate <span id="cand-id">{v["id"]}</span>{(" · " + escape(v["label"])) if v["label"] else ""}</h1>
<div class="kpi"><span>run <a href="/runs/{v["run"]}">{v["run"]}</a></span><span>{v["kind"]} #{v["number"]}
gen {v["generation"]}</span><span>{escape(v["recipe"]["merge_method"])}</span><span>status <b>{v["status"]}</b></span>
<span>fitness <b id="fitness">{_f(v["fitness"], 4)}</b></span></div>
<div class="grid"><div class="card"><div id="heatmap" class="chart"></div></div>
<div class="card"><div id="samples" class="chart"></div></div></div>
<h2>Recipe</h2><table id="recipe"><tr><th class="l">model</th><th class="l">parameter</th><th class="l">kind</th>
<th class="l">values per layer group</th></tr>{recipe}</table>
<h2>Per-task results</h2><table id="task-results"><tr><th class="l">task</th><th>validation</th><th>test</th></tr>
{task_rows}</table>
<h2>Per-sample results</h2><table id="sample-results">{samples}</table>
<h2>Parents</h2><ul id="parents">{parents}</ul><h2>Lineage</h2><ul id="lineage">{lineage}</ul>"""
    return page(f"candidate {v['id']}", body, v, "evolveCandidate();")


def compare_page(data: dict[str, Any]) -> str:
    a, b = data["a"], data["b"]
    rows = "".join(f'<tr><td class="l">{s}/{escape(t)}</td><td>{_f(x["a"], 4)}</td><td>{_f(x["b"], 4)}</td></tr>'
                   for s, per in data["tasks"].items() for t, x in per.items())
    recipe = "".join(
        f'<tr><td class="l">{escape(r["model"])}</td><td class="l">{escape(r["parameter"])}</td>'
        f'<td class="l">{" ".join(_f(x) for x in r["a"] or ["—"])}</td>'
        f'<td class="l">{" ".join(_f(x) for x in r["b"] or ["—"])}</td></tr>' for r in data["recipe"])
    samples = "".join(
        f'<tr><td class="l">{s}/{escape(t)}</td><td>{x["both"]}/{x["n"]}</td><td class="only-a">{len(x["only_a"])} '
        f'{x["only_a"]}</td><td class="only-b">{len(x["only_b"])} {x["only_b"]}</td></tr>'
        for s, per in data["samples"].items() for t, x in per.items())
    name = {k: escape(d["label"] or d["id"]) for k, d in (("a", a), ("b", b))}
    body = f"""<h1>Compare <a href="/candidates/{a["id"]}">{name["a"]}</a> (A) with
<a href="/candidates/{b["id"]}">{name["b"]}</a> (B)</h1>
<div class="card"><div id="compare-chart" class="chart"></div></div>
<h2>Scores</h2><table id="compare-scores"><tr><th class="l">task</th><th>A</th><th>B</th></tr>
<tr><td class="l">fitness</td><td>{_f(a["fitness"], 4)}</td><td>{_f(b["fitness"], 4)}</td></tr>{rows}</table>
<h2>Recipes</h2><table id="compare-recipe"><tr><th class="l">model</th><th class="l">parameter</th><th class="l">A</th>
<th class="l">B</th></tr>{recipe}</table>
<h2>Samples</h2><table id="compare-samples"><tr><th class="l">task</th><th>both solve</th><th>only A solves</th>
<th>only B solves</th></tr>{samples}</table>"""
    return page("compare", body, data, "evolveCompare();")


def error_page(status: int, message: str) -> str:
    return page(f"{status}", f'<h1>{status}</h1><p id="error">{escape(message)}</p>')


APP_JS = r"""
const $ = id => document.getElementById(id);
const DATA = () => JSON.parse($("data").textContent);
const POLL = () => 1000 * parseFloat(document.body.dataset.poll || "2");
const L = (title, extra) => Object.assign({title: {text: title, font: {size: 14}}, margin: {l: 50, r: 20, t: 36, b: 40}}, extra || {});
const CFG = {displaylogo: false, responsive: true};
const fmt = (x, d) => x === null || x === undefined ? "—" : Number(x).toFixed(d === undefined ? 3 : d);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

function evolveRuns() {
  async function tick() {
    try {
      const rows = await (await fetch("/api/runs", {credentials: "same-origin"})).json();
      const t = $("runs");
      t.querySelectorAll("tr:not(:first-child)").forEach(r => r.remove());
      for (const r of rows) {
        const tr = t.insertRow();
        tr.innerHTML = `<td class="l"><a href="/runs/${esc(r.id)}">${esc(r.id)}</a></td><td class="l">${esc(r.name)}</td>` +
          `<td class="l">${r.status}</td><td>${r.budget_used}/${r.budget || "∞"}</td><td>${fmt(r.best_fitness, 4)}</td>` +
          `<td class="l">${r.created}</td><td class="l">${r.last_heartbeat || "—"}</td>`;
      }
    } catch (e) {}
    setTimeout(tick, POLL());
  }
  setTimeout(tick, POLL());
}

function drawRun(d) {
  const st = d.status;
  $("status").textContent = st.status;
  $("done").textContent = st.evaluations_done;
  $("failures").textContent = st.failures;
  $("rate").textContent = fmt(st.evaluations_per_hour, 0);
  if (st.best) { $("best").textContent = fmt(st.best.fitness, 4); $("best-link").textContent = st.best.id;
                 $("best-link").href = "/candidates/" + st.best.id; }
  const w = $("workers");
  w.querySelectorAll("tr:not(:first-child)").forEach(r => r.remove());
  for (const x of st.workers) {
    const tr = w.insertRow();
    const c = x.candidate ? `<a href="/candidates/${x.candidate}">${x.candidate}</a>` : "—";
    tr.innerHTML = `<td class="l">${esc(x.worker)}</td><td class="l state">${x.state}</td><td class="l">${c}</td><td>${x.evaluations}</td>`;
  }
  const h = d.history;
  const line = x => [{type: "scattergl", x: h[x], y: h.fitness, mode: "markers", name: "fitness",
                       marker: {size: 4, color: "#90a4ae"}},
                      {x: h[x], y: h.best, mode: "lines", name: "best so far", line: {shape: "hv", color: "#d32f2f"}}];
  Plotly.react("history-n", line("n"), L("best so far vs evaluations", {xaxis: {title: {text: "evaluations"}}}), CFG);
  Plotly.react("history-t", line("t"), L("best so far vs time", {xaxis: {title: {text: "seconds since start"}}}), CFG);
  const sc = d.scatter;
  const pick = (state, a) => a.filter((_, i) => sc.state[i] === state && sc.fitness[i] !== null);
  const scatter = [{type: "scattergl", mode: "markers", name: "full fidelity", x: pick("complete", sc.number),
    y: pick("complete", sc.fitness), text: pick("complete", sc.id), marker: {size: 5,
    color: pick("complete", sc.generation), colorscale: "Viridis", showscale: true, colorbar: {title: {text: "gen"}}}}];
  // A low-fidelity result is an estimate on a few documents: drawn hollow, never ranked.
  if (d.fidelity) scatter.push({type: "scattergl", mode: "markers", x: pick("low", sc.number), y: pick("low", sc.fitness),
    text: pick("low", sc.id), name: "low fidelity" + (d.fidelity.low_limit ? ` (${d.fidelity.low_limit} documents per task)` : ""),
    marker: {size: 6, symbol: "circle-open", color: "#9e9e9e"}});
  Plotly.react("scatter", scatter, L("every candidate (fitness vs ask order)", {xaxis: {title: {text: "candidate #"}},
    showlegend: !!d.fidelity, legend: {orientation: "h", y: -0.2}}), CFG);
  if (d.fidelity) {
    $("low-only").textContent = d.fidelity.low_only; $("promoted").textContent = d.fidelity.promoted;
    $("low-rung").textContent = d.fidelity.low_rung;
  }
  drawPareto(d);
  const imp = d.importance.parameter ? d.coordinates : [];
  Plotly.react("importance", [
    {type: "bar", orientation: "h", y: imp.map(c => c.label), x: imp.map(c => c.variance), name: "variance explained"},
    {type: "bar", orientation: "h", y: imp.map(c => c.label), x: imp.map(c => c.correlation), name: "|correlation|"}],
    L("parameter importance", {barmode: "group", margin: {l: 160, r: 20, t: 36, b: 40}}), CFG);
  const par = d.parallel;
  // Parallel coordinates are the slowest chart (WebGL): drawn after the rest, so the page is usable at once.
  if (par.values.length && par.fitness.length) setTimeout(() => {
    const dims = d.coordinates.map((c, i) => ({label: c.label, values: par.values[i], range: [c.lower, c.upper]}));
    dims.push({label: "fitness", values: par.fitness});
    Plotly.react("parallel", [{type: "parcoords", dimensions: dims,
      line: {color: par.fitness, colorscale: "Viridis", showscale: true}}],
      L("parallel coordinates over the genome" + (par.fitness.length < par.total ?
        ` (best ${Math.floor(par.fitness.length / 3)} and an even sample: ${par.fitness.length} of ${par.total})` : ""), {margin: {l: 60, r: 60, t: 70, b: 30}}), CFG);
  }, 0);
  const colors = {merge: "#ffb300", eval: "#1e88e5", failed: "#e53935", running: "#8e24aa"};
  const tl = ["merge", "eval", "failed", "running"].map(ph => {
    // One line segment per phase of each evaluation (scattergl: fast with thousands of them).
    const x = [], y = [], text = [];
    for (const s of d.timeline) if (s.phase === ph) {
      x.push(s.start, s.start + s.seconds, null); y.push(s.worker, s.worker, null); text.push(s.id, s.id, null); }
    return {type: "scattergl", mode: "lines", name: ph, x: x, y: y, text: text, connectgaps: false,
            line: {width: 14, color: colors[ph]}, hoverinfo: "text+name"};
  });
  Plotly.react("timeline", tl, L("worker timeline (merge / evaluate / idle gaps)",
    {xaxis: {title: {text: "seconds since start"}}, yaxis: {type: "category"}}), CFG);
  $("tasks").innerHTML = tasksTable(d.tasks);
}

function drawPareto(d) {
  const p = d.pareto;
  $("pareto-section").hidden = !p;
  if (!p) return;
  for (const [axis, value] of [["x", p.x], ["y", p.y]]) {
    const select = $("pareto-" + axis);
    if ([...select.options].map(o => o.value).join("\n") !== p.objectives.join("\n"))
      select.innerHTML = p.objectives.map(o => `<option>${esc(o)}</option>`).join("");
    select.value = value;
  }
  const pt = p.points, fr = p.front, rf = p.references;
  const hover = `%{text}<br>${esc(p.x)} %{x:.4f}<br>${esc(p.y)} %{y:.4f}<extra></extra>`;
  Plotly.react("pareto", [
    {type: "scattergl", mode: "markers", name: "merges", x: pt.x, y: pt.y, text: pt.id, customdata: pt.id,
     hovertemplate: hover, marker: {size: 6, color: "#90a4ae"}},
    {type: "scatter", mode: "lines+markers", name: `Pareto front (${fr.id.length})`, x: fr.x, y: fr.y, text: fr.id,
     customdata: fr.id, hovertemplate: hover, marker: {size: 10, color: "#d32f2f"}, line: {color: "#d32f2f"}},
    {type: "scatter", mode: "markers+text", name: "source models", x: rf.x, y: rf.y, text: rf.label,
     customdata: rf.id, textposition: "top center", hovertemplate: hover, marker: {symbol: "diamond", size: 9, color: "#455a64"}}],
    L(`Pareto front on validation: ${p.x} × ${p.y} (click a point for its candidate)`,
      {xaxis: {title: {text: p.x}}, yaxis: {title: {text: p.y}}}), CFG);
  const chart = $("pareto");
  if (!chart.dataset.linked) {
    chart.on("plotly_click", ev => { location.href = "/candidates/" + ev.points[0].customdata; });
    chart.dataset.linked = "1";
  }
  $("front-table").innerHTML = `<tr><th class="l">front member</th><th>${esc(p.x)}</th><th>${esc(p.y)}</th>` +
    `<th>fitness</th><th class="l">export</th></tr>` + fr.id.map((id, i) =>
      `<tr><td class="l"><a href="/candidates/${id}">${id}</a></td><td>${fmt(fr.x[i], 4)}</td><td>${fmt(fr.y[i], 4)}</td>` +
      `<td>${fmt(fr.fitness[i], 4)}</td><td class="l"><code>evolve export ${esc(d.run.id)} --candidate ${id} --out DIR</code></td></tr>`).join("");
}

function tasksTable(rows) {
  const tasks = [...new Set(rows.flatMap(r => [...Object.keys(r.validation), ...Object.keys(r.test)]))].sort();
  let html = `<table><tr><th class="l">candidate</th><th>fitness</th>` +
    tasks.map(t => `<th>${esc(t)} (val)</th><th>${esc(t)} (test)</th>`).join("") + "</tr>";
  for (const r of rows) html += `<tr class="${r.kind === "reference" ? "ref" : ""}"><td class="l"><a href="/candidates/${r.id}">` +
    `${esc(r.label || r.id)}</a></td><td>${fmt(r.fitness, 4)}</td>` +
    tasks.map(t => `<td>${fmt(r.validation[t], 4)}</td><td>${fmt(r.test[t], 4)}</td>`).join("") + "</tr>";
  return html + "</table>";
}

function evolveRun() {
  let d = DATA();
  drawRun(d);
  let version = d.version;
  async function tick() {
    try {
      d = await (await fetch("/api/runs/" + d.run.id + location.search, {credentials: "same-origin"})).json();
      if (d.version !== version) { version = d.version; drawRun(d); }
      else { drawRunStatusOnly(d); }
    } catch (e) {}
    if (d.status.status === "RUNNING") setTimeout(tick, POLL());
  }
  if (d.status.status === "RUNNING") setTimeout(tick, POLL());
}
function drawRunStatusOnly(d) { $("status").textContent = d.status.status; }

function evolveCandidate() {
  const d = DATA();
  const names = Object.keys(d.heatmaps);
  if (names.length) {
    const traces = names.map((n, i) => ({type: "heatmap", z: d.heatmaps[n].z, x: d.heatmaps[n].groups,
      y: d.heatmaps[n].models, colorscale: "RdBu", reversescale: true, xaxis: "x" + (i ? i + 1 : ""),
      yaxis: "y" + (i ? i + 1 : ""), showscale: i === 0, hovertemplate: n + " %{y} %{x}: %{z:.3f}<extra></extra>"}));
    const layout = L("recipe: " + names.join(", ") + " (layer groups × models)",
      {grid: {rows: names.length, columns: 1, pattern: "independent"}, margin: {l: 110, r: 20, t: 36, b: 40}});
    Plotly.react("heatmap", traces, layout, CFG);
  }
  const rows = [];
  for (const [split, per] of Object.entries(d.samples)) for (const [t, xs] of Object.entries(per)) rows.push([split + "/" + t, xs]);
  if (rows.length) Plotly.react("samples", [{type: "heatmap", z: rows.map(r => r[1]), y: rows.map(r => r[0]),
    zmin: 0, zmax: 1, colorscale: [[0, "#eeeeee"], [1, "#2e7d32"]], showscale: false}],
    L("per-sample results (green = solved)", {xaxis: {title: {text: "sample"}}, margin: {l: 140, r: 20, t: 36, b: 40}}), CFG);
}

function evolveCompare() {
  const d = DATA();
  const labels = [], a = [], b = [];
  for (const [split, per] of Object.entries(d.tasks)) for (const [t, x] of Object.entries(per)) {
    labels.push(t + " (" + split + ")"); a.push(x.a); b.push(x.b); }
  Plotly.react("compare-chart", [{type: "bar", name: "A " + (d.a.label || d.a.id), x: labels, y: a},
    {type: "bar", name: "B " + (d.b.label || d.b.id), x: labels, y: b}], L("per-task scores", {barmode: "group"}), CFG);
}
"""
