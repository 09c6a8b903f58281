// shipyard dashboard: charts (uPlot, shipped with the package), the live table, the theme.
// Data arrives as JSON islands the server rendered, or from /ui/api/live; text is always set
// with textContent, never parsed as markup.
"use strict";

(function () {
  const root = document.documentElement;
  const saved = localStorage.getItem("shipyard-theme");
  if (saved === "dark" || saved === "light") root.dataset.theme = saved;

  function css(name) {
    return getComputedStyle(root).getPropertyValue(name).trim() || "#888";
  }
  const palette = () => [css("--series-1"), css("--series-2"), css("--series-3"), css("--series-4")];

  // y-axis labels never clipped: the axis is as wide as its longest label
  function axisSize(self, values, axisIdx, cycleNum) {
    const axis = self.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
    if (longest !== "") {
      self.ctx.font = axis.font[0];
      size += self.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 4;
  }

  function axes(spec, labels) {
    const stroke = css("--muted");
    const grid = { stroke: css("--line"), width: 1 };
    const x = { stroke, grid, ticks: grid };
    if (spec.x_label) x.label = spec.x_label;
    if (labels) {
      x.values = (self, ticks) => ticks.map((i) => (Number.isInteger(i) && labels[i] !== undefined ? labels[i] : ""));
      x.rotate = -30;
      x.size = 60;
    }
    const y = { stroke, grid, ticks: grid, size: axisSize };
    if (spec.y_label) { y.label = spec.y_label; y.labelSize = 18; }
    return [x, y];
  }

  const charts = [];

  function draw(figure) {
    const island = document.getElementById(figure.dataset.chart);
    const plot = figure.querySelector(".plot");
    if (!island || !plot || typeof uPlot === "undefined") return;
    const spec = JSON.parse(island.textContent);
    const colours = palette();
    const width = Math.max(280, plot.clientWidth || 600);
    let opts, data;
    if (spec.kind === "bars") {
      const n = spec.labels.length;
      const xs = Array.from({ length: n }, (_, i) => i);
      const bars = uPlot.paths.bars;
      opts = {
        width, height: 240,
        scales: { x: { time: false, range: [-0.5, n - 0.5] }, y: { range: (u, lo, hi) => [0, hi * 1.1 || 1] } },
        axes: axes(spec, spec.labels),
        series: [{ label: "bin", value: (u, i) => (i == null ? "" : spec.labels[i]) }].concat(spec.series.map((s, k) => ({
          label: s.label,
          stroke: colours[k % colours.length],
          fill: colours[k % colours.length] + "99",
          paths: bars({ size: [0.4, 60], align: k === 0 ? -1 : 1 }),
          points: { show: false },
          value: (u, v) => (v == null ? "–" : (v * 100).toFixed(1) + "%"),
        }))),
      };
      data = [xs].concat(spec.series.map((s) => s.values));
    } else {
      opts = {
        width, height: 220,
        scales: { x: { time: spec.time !== false } },
        axes: axes(spec, null),
        series: [{}].concat(spec.series.map((s, k) => ({
          label: s.label,
          stroke: colours[k % colours.length],
          width: 2,
          dash: s.dash ? [6, 4] : undefined,
          spanGaps: false,
          points: { size: 5 },
        }))),
      };
      data = [spec.x].concat(spec.series.map((s) => s.values));
    }
    plot.textContent = "";
    charts.push({ chart: new uPlot(opts, data, plot), plot });
  }

  function resize() {
    for (const { chart, plot } of charts) chart.setSize({ width: Math.max(280, plot.clientWidth), height: chart.height });
  }

  // -- live ---------------------------------------------------------------------------------
  function quantile(buckets, before, q) {
    // buckets: [[le, cumulative count], ...] now and before; the q-quantile of the difference
    const prior = new Map(before.map(([le, c]) => [le, c]));
    const diff = buckets.map(([le, c]) => [le, c - (prior.get(le) || 0)]);
    const total = diff.length ? diff[diff.length - 1][1] : 0;
    if (total <= 0) return null;
    const want = q * total;
    let lastLe = 0, lastCount = 0;
    for (const [le, count] of diff) {  // le: the bucket's upper bound in seconds
      if (count >= want) {
        if (le === null || !isFinite(le)) return lastLe * 1000;  // +Inf arrives as null
        const span = count - lastCount;
        const frac = span > 0 ? (want - lastCount) / span : 1;
        return (lastLe + (le - lastLe) * frac) * 1000;
      }
      lastLe = le; lastCount = count;
    }
    return null;
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function live(table) {
    const url = table.dataset.live;
    const every = Math.max(1, Number(table.dataset.every) || 2) * 1000;
    const figure = document.querySelector("[data-live-chart]");
    const plotEl = figure && figure.querySelector(".plot");
    let previous = null;
    const history = new Map();
    const times = [];
    let chart = null;
    let chartKeys = "";

    async function tick() {
      let sample;
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search); return; }
        if (!response.ok) throw new Error("HTTP " + response.status);
        sample = await response.json();
      } catch (error) {
        table.dataset.state = "error";
        return;
      }
      table.dataset.state = "ok";
      const body = table.tBodies[0];
      const rows = [];
      if (previous) {
        const seconds = Math.max(0.001, sample.at - previous.at);
        const before = new Map(previous.series.map((s) => [s.model + "/" + s.version + "/" + s.variant, s]));
        times.push(sample.at);
        if (times.length > 90) times.shift();
        for (const s of sample.series) {
          const key = s.model + "/" + s.version + "/" + s.variant;
          const old = before.get(key) || { requests: 0, errors: 0, refused: 0, buckets: [] };
          const rate = (s.requests - old.requests) / seconds;
          rows.push({ s, key, rate, p95: quantile(s.buckets, old.buckets, 0.95), errors: (s.errors - old.errors) / seconds, refused: (s.refused - old.refused) / seconds });
          if (!history.has(key)) history.set(key, new Array(times.length - 1).fill(null));
        }
        for (const [key, values] of history) {
          const row = rows.find((r) => r.key === key);
          values.push(row ? row.rate : 0);
          while (values.length > times.length) values.shift();
        }
      }
      previous = sample;
      if (!rows.length) {
        if (!sample.series.length) {
          body.textContent = "";
          const tr = document.createElement("tr");
          cell(tr, "no predictions served by this process yet", "muted");
          tr.firstChild.colSpan = 8;
          body.appendChild(tr);
        }
        return;
      }
      body.textContent = "";
      for (const r of rows) {
        const tr = document.createElement("tr");
        tr.dataset.variant = r.key;
        cell(tr, r.s.model);
        cell(tr, "v" + r.s.version);
        cell(tr, r.s.variant);
        cell(tr, r.rate.toFixed(1), "num rate");
        cell(tr, r.p95 == null ? "–" : r.p95.toFixed(2), "num p95");
        cell(tr, r.errors.toFixed(2), "num errors");
        cell(tr, r.refused.toFixed(2), "num refused");
        cell(tr, String(r.s.requests), "num total");
        body.appendChild(tr);
      }
      if (plotEl && typeof uPlot !== "undefined" && times.length > 1) {
        const keys = Array.from(history.keys());
        const data = [times.slice()].concat(keys.map((k) => history.get(k).slice(-times.length)));
        if (!chart || chartKeys !== keys.join("|")) {
          const colours = palette();
          plotEl.textContent = "";
          chart = new uPlot({
            width: Math.max(280, plotEl.clientWidth || 600), height: 220,
            axes: axes({ y_label: "requests/s" }, null),
            series: [{}].concat(keys.map((k, i) => ({ label: k, stroke: colours[i % colours.length], width: 2 }))),
          }, data, plotEl);
          charts.push({ chart, plot: plotEl });
          chartKeys = keys.join("|");
        } else {
          chart.setData(data);
        }
      }
    }
    tick();
    setInterval(tick, every);
  }

  // the traffic split of a model, kept current while the page is open
  function watchSplit(box) {
    async function tick() {
      let deployment;
      try {
        const response = await fetch(box.dataset.watch, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) return;
        deployment = await response.json();
      } catch (error) {
        return;
      }
      const shown = JSON.stringify(deployment.variants);
      if (box.dataset.shown === shown) return;
      box.dataset.shown = shown;
      box.textContent = "";
      if (!deployment.variants.length) {
        const none = document.createElement("span");
        none.className = "muted";
        none.textContent = deployment.revision == null ? "not deployed" : "stopped";
        box.appendChild(none);
        return;
      }
      const list = document.createElement("ul");
      list.className = "split";
      list.dataset.split = "";
      for (const v of deployment.variants) {
        const item = document.createElement("li");
        const version = document.createElement("span");
        version.className = "ver";
        version.textContent = "v" + v.version;
        const role = document.createElement("span");
        role.className = "role";
        role.textContent = v.role;
        item.append(version, " ", role, " ");
        if (v.role !== "shadow") {
          const bar = document.createElement("progress");
          bar.max = 100;
          bar.value = v.weight;
          bar.setAttribute("aria-label", "share of v" + v.version);
          const share = document.createElement("span");
          share.className = "share";
          share.dataset.share = String(v.version);
          share.textContent = Number(v.weight.toPrecision(3)) + "%";
          item.append(bar, " ", share);
        } else {
          const copy = document.createElement("span");
          copy.className = "muted";
          copy.textContent = "copy of traffic";
          item.append(copy);
        }
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    setInterval(tick, 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-watch]").forEach(watchSplit);
    const toggle = document.querySelector("[data-theme-toggle]");
    if (toggle) toggle.addEventListener("click", () => {
      const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      localStorage.setItem("shipyard-theme", root.dataset.theme);
      location.reload();
    });
    document.querySelectorAll("[data-chart]").forEach(draw);
    const table = document.querySelector("[data-live]");
    if (table) live(table);
    let pending = null;
    window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(resize, 150); });
  });
})();
