// RateChart draws changes per second per entity type over the last five
// minutes with Chart.js (vendored, loaded as a classic script before the
// modules). Changes are counted by their commit second; the chart is
// redrawn once a second, without animation.

const WINDOW = 300; // seconds
const PALETTE = ['#0969da', '#1a7f37', '#cf222e', '#8250df', '#bf8700', '#1b7c83', '#bc4c00', '#6e7781', '#a40e26', '#116329', '#4c2889', '#0550ae'];

export class RateChart {
  constructor(canvas, onError) {
    this.canvas = canvas;
    this.counts = new Map(); // type -> Map(second -> n)
    this.colors = new Map();
    if (typeof window.Chart !== 'function') {
      onError('The chart library did not load.');
      return;
    }
    this.chart = new window.Chart(canvas, {
      type: 'line',
      data: {labels: [], datasets: []},
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: {mode: 'nearest', intersect: false},
        elements: {point: {radius: 0}, line: {borderWidth: 2, tension: 0}},
        scales: {
          x: {type: 'linear', min: -WINDOW, max: 0, ticks: {stepSize: 60, callback: (v) => (v === 0 ? 'now' : `${v / 60} min`)}},
          y: {beginAtZero: true, title: {display: true, text: 'changes/s'}},
        },
        plugins: {legend: {position: 'bottom', labels: {boxWidth: 12}}},
      },
    });
    this.timer = setInterval(() => this.draw(), 1000);
  }

  add(type, committedAt) {
    let t = Date.parse(committedAt);
    if (!Number.isFinite(t)) t = Date.now();
    const sec = Math.floor(Math.min(t, Date.now()) / 1000);
    if (sec <= Math.floor(Date.now() / 1000) - WINDOW) return;
    let m = this.counts.get(type);
    if (!m) { m = new Map(); this.counts.set(type, m); }
    m.set(sec, (m.get(sec) || 0) + 1);
  }

  draw() {
    if (!this.chart) return;
    const now = Math.floor(Date.now() / 1000);
    const datasets = [];
    for (const [type, m] of [...this.counts].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      for (const s of m.keys()) if (s <= now - WINDOW) m.delete(s);
      if (!m.size) { this.counts.delete(type); continue; }
      if (!this.colors.has(type)) this.colors.set(type, PALETTE[this.colors.size % PALETTE.length]);
      const data = [];
      // The current second is still filling: end at the last whole one.
      for (let s = now - WINDOW + 1; s < now; s++) data.push({x: s - now + 1, y: m.get(s) || 0});
      datasets.push({label: type, data, borderColor: this.colors.get(type), backgroundColor: this.colors.get(type)});
    }
    this.chart.data.datasets = datasets;
    this.chart.update('none');
  }

  clear() {
    this.counts.clear();
    if (this.chart) { this.chart.data.datasets = []; this.chart.update('none'); }
  }
}
