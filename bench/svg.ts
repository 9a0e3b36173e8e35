// svg.ts — hand-written SVG charts of the results, one per workload, stacked in one file: req/s
// (median) against connections, one line per target with min–max bars, one panel per message length
// (echo, js-echo) or pipeline depth (resp-get, resp-set), categorical x axis (connection counts are evenly
// spaced whatever their values), axis labels, gridlines and a legend.
import { WORKLOAD_ORDER, type Cell } from "./summary.ts";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];
const W = 820;
const H = 420;
const M = { left: 86, right: 170, top: 46, bottom: 62 };

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A round axis maximum and step: 1, 2 or 5 × 10^k, about five ticks. */
function niceAxis(max: number): { top: number; step: number } {
  if (max <= 0) return { top: 1, step: 0.2 };
  const rough = max / 5;
  const pow = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((k) => k * pow).find((s) => s >= rough)!;
  return { top: Math.ceil(max / step) * step, step };
}

function tickLabel(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

function panel(cells: Cell[], title: string, targets: string[], y0: number): string {
  const xs = [...new Set(cells.map((c) => c.connections))].sort((a, b) => a - b);
  const maxRate = Math.max(0, ...cells.map((c) => c.reqPerSec?.max ?? 0));
  const { top, step } = niceAxis(maxRate * 1.05);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const px = (i: number) => M.left + (xs.length === 1 ? plotW / 2 : (plotW * (i + 0.5)) / xs.length);
  const py = (v: number) => y0 + M.top + plotH - (plotH * v) / top;
  const out: string[] = [];
  out.push(`<text x="${W / 2}" y="${y0 + 26}" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`);
  for (let v = 0; v <= top + step / 2; v += step) {
    out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${py(v)}" y2="${py(v)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${M.left - 8}" y="${py(v) + 4}" text-anchor="end" font-size="12">${tickLabel(v)}</text>`);
  }
  out.push(`<line x1="${M.left}" x2="${M.left}" y1="${py(0)}" y2="${py(top)}" stroke="#333"/>`);
  out.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${py(0)}" y2="${py(0)}" stroke="#333"/>`);
  xs.forEach((x, i) => {
    out.push(`<text x="${px(i)}" y="${py(0) + 18}" text-anchor="middle" font-size="12">${x}</text>`);
  });
  out.push(`<text x="${M.left + plotW / 2}" y="${y0 + H - 16}" text-anchor="middle" font-size="13">connections (categorical axis)</text>`);
  const midY = y0 + M.top + plotH / 2;
  out.push(`<text x="20" y="${midY}" text-anchor="middle" font-size="13" transform="rotate(-90 20 ${midY})">` +
    `verified replies per second (median; bars: min–max)</text>`);
  targets.forEach((target, ti) => {
    const color = COLORS[ti % COLORS.length]!;
    const points = xs
      .map((x, i) => ({ i, cell: cells.find((c) => c.target === target && c.connections === x) }))
      .filter((p): p is { i: number; cell: Cell & { reqPerSec: NonNullable<Cell["reqPerSec"]> } } => p.cell?.reqPerSec != null);
    if (points.length === 0) return;
    const jitter = (ti - (targets.length - 1) / 2) * 4; // keep overlapping bars apart
    const path = points.map((p, k) => `${k === 0 ? "M" : "L"}${(px(p.i) + jitter).toFixed(1)},${py(p.cell.reqPerSec.median).toFixed(1)}`);
    out.push(`<path d="${path.join(" ")}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const p of points) {
      const x = px(p.i) + jitter;
      const r = p.cell.reqPerSec;
      out.push(`<line x1="${x}" x2="${x}" y1="${py(r.min)}" y2="${py(r.max)}" stroke="${color}" stroke-width="1.5"/>`);
      out.push(`<line x1="${x - 4}" x2="${x + 4}" y1="${py(r.min)}" y2="${py(r.min)}" stroke="${color}"/>`);
      out.push(`<line x1="${x - 4}" x2="${x + 4}" y1="${py(r.max)}" y2="${py(r.max)}" stroke="${color}"/>`);
      out.push(`<circle cx="${x}" cy="${py(r.median)}" r="3.5" fill="${color}"><title>${esc(target)}: ` +
        `${Math.round(r.median)} req/s (min ${Math.round(r.min)}, max ${Math.round(r.max)})</title></circle>`);
    }
    const ly = y0 + M.top + 10 + ti * 22;
    const lx = M.left + plotW + 20;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<circle cx="${lx + 12}" cy="${ly}" r="3.5" fill="${color}"/>`);
    out.push(`<text x="${lx + 32}" y="${ly + 4}" font-size="12">${esc(target)}</text>`);
  });
  return out.join("\n");
}

interface Panel {
  title: string;
  cells: Cell[];
  targets: string[];
}

/** One panel per length (echo) or pipeline depth (resp), workloads in order; targets per workload. */
export function svgChart(cells: Cell[], targets: string[]): string {
  const panels: Panel[] = [];
  for (const workload of WORKLOAD_ORDER) {
    const these = cells.filter((c) => c.workload === workload);
    const names = targets.filter((t) => these.some((c) => c.target === t));
    if (workload === "echo" || workload === "js-echo") {
      const what = workload === "echo" ? "Echo" : "JS handler echo (js-echo)";
      for (const len of [...new Set(these.map((c) => c.length))].sort((a, b) => a - b)) {
        panels.push({ title: `${what} throughput vs connections (${len}-byte messages)`, cells: these.filter((c) => c.length === len), targets: names });
      }
    } else {
      for (const p of [...new Set(these.map((c) => c.pipeline))].sort((a, b) => a - b)) {
        const mine = these.filter((c) => c.pipeline === p);
        panels.push({ title: `${workload} throughput vs connections (pipeline ${p}, ${mine[0]!.length}-byte values)`, cells: mine, targets: names });
      }
    }
  }
  const height = H * Math.max(1, panels.length);
  const body = panels.map((p, i) => panel(p.cells, p.title, p.targets, i * H)).join("\n");
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" ` +
    `font-family="Helvetica, Arial, sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${body}\n</svg>\n`
  );
}
