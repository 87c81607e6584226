// A host's live telemetry as Chart.js charts (the library Debian ships,
// loaded as `vendor/chart.min.js`): per-core CPU and memory over the last
// few minutes, and each disk's used and free space now. Fed with the
// agent's `tele_data` (PROTOCOL §13.3).

const POINTS = 90;
const GIB = 1024 ** 3;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function color(i, alpha = 1) {
  const hex = PALETTE[i % PALETTE.length];
  const [r, g, b] = [1, 3, 5].map((o) => parseInt(hex.slice(o, o + 2), 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

const common = {
  animation: false,
  responsive: true,
  maintainAspectRatio: false,
  interaction: { mode: "index", intersect: false },
  plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
};

export class HostCharts {
  /** Builds the charts on three canvases. */
  constructor(cpuCanvas, memCanvas, diskCanvas) {
    const Chart = window.Chart;
    this.cpu = new Chart(cpuCanvas, {
      type: "line",
      data: { labels: [], datasets: [] },
      options: { ...common, scales: { y: { min: 0, max: 100, title: { display: true, text: "CPU %" } }, x: { ticks: { maxTicksLimit: 6 } } } },
    });
    this.mem = new Chart(memCanvas, {
      type: "line",
      data: {
        labels: [],
        datasets: ["used", "buff/cache", "free"].map((label, i) => ({
          label, data: [], fill: true, borderColor: color(i), backgroundColor: color(i, 0.25), pointRadius: 0, tension: 0.2,
        })),
      },
      options: { ...common, scales: { y: { stacked: true, min: 0, title: { display: true, text: "GiB" } }, x: { ticks: { maxTicksLimit: 6 } } } },
    });
    this.disk = new Chart(diskCanvas, {
      type: "bar",
      data: {
        labels: [],
        datasets: [
          { label: "used", data: [], backgroundColor: color(3, 0.7) },
          { label: "free", data: [], backgroundColor: color(2, 0.5) },
        ],
      },
      options: { ...common, indexAxis: "y", scales: { x: { stacked: true, title: { display: true, text: "GiB" } }, y: { stacked: true } } },
    });
  }

  /** Adds one sample; charts move on by one point. */
  add(tele, at = new Date()) {
    const label = at.toLocaleTimeString();
    const cores = tele.ttl_cpu_usage;
    if (Array.isArray(cores)) {
      const sets = this.cpu.data.datasets;
      while (sets.length < cores.length) {
        const i = sets.length;
        sets.push({ label: `cpu${i}`, data: new Array(this.cpu.data.labels.length).fill(null), borderColor: color(i), backgroundColor: color(i, 0.1), pointRadius: 0, tension: 0.2, borderWidth: 1.5 });
      }
      push(this.cpu.data.labels, label);
      sets.forEach((set, i) => push(set.data, cores[i] === undefined ? null : Math.round(cores[i] * 1000) / 10));
      this.cpu.update("none");
    }
    const mem = tele.ttl_mem_usage;
    if (Array.isArray(mem)) {
      push(this.mem.data.labels, label);
      this.mem.data.datasets.forEach((set, i) => push(set.data, Math.round((mem[i] / GIB) * 100) / 100));
      this.mem.update("none");
    }
    const disks = tele.disk_util;
    if (disks && typeof disks === "object") {
      const names = Object.keys(disks).sort();
      this.disk.data.labels = names;
      this.disk.data.datasets[0].data = names.map((n) => Math.round((disks[n][0] / GIB) * 10) / 10);
      this.disk.data.datasets[1].data = names.map((n) => Math.round((disks[n][1] / GIB) * 10) / 10);
      this.disk.update("none");
    }
  }

  destroy() {
    this.cpu.destroy();
    this.mem.destroy();
    this.disk.destroy();
  }
}

function push(series, value) {
  series.push(value);
  while (series.length > POINTS) series.shift();
}
