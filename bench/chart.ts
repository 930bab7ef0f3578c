/**
 * bench/chart.ts — draws the memory and sweep figures as one SVG picture, with no library.
 *
 * An SVG file is text: a few <line>, <polyline>, <circle> and <text> elements with coordinates.
 * We draw two panels side by side, both with online sessions on a logarithmic x axis:
 *
 *   ┌ RSS (MB) ─────────────────┐  ┌ sweep pass (µs, log) ───────┐
 *   │  our registry ●───●───●   │  │  scan every session  ●──●──● │
 *   │  bare Map     ○───○───○   │  │  our sweeper         ●──●──● │
 *   └── 10 k   100 k   1 M ────┘  └── 10 k   100 k   1 M ───────┘
 *
 * Layout:
 *   - sizes and colours
 *   - one panel
 *   - the picture
 */

import type { SizePoint } from './memory.ts';
import { formatCount } from './common.ts';

// ============================================================================================
// Sizes and colours
// ============================================================================================

const PANEL_WIDTH = 420;
const PANEL_HEIGHT = 300;
/** Room around the plot area of a panel for the axis labels and the legend. */
const MARGIN = { left: 64, right: 16, top: 40, bottom: 44 };
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#7f7f7f'];

type Series = { name: string; values: number[]; dashed?: boolean };
/** A horizontal line across a panel, e.g. a target. */
type Guide = { value: number; label: string };

/** Escapes the few characters that mean something in XML. */
function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A round step for a linear axis near `rough`: 1, 2 or 5 times a power of ten. */
function roundStep(rough: number): number {
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const multiple of [1, 2, 5]) if (multiple * power >= rough) return multiple * power;
  return 10 * power;
}

// ============================================================================================
// One panel
// ============================================================================================

/** One chart: `xs` on a log axis, every series' values on a linear or a log y axis. `offsetX`
 * places the panel inside the picture. Returns SVG elements as text. */
function panel(
  offsetX: number,
  title: string,
  xs: number[],
  series: Series[],
  logY: boolean,
  formatY: (value: number) => string,
  guide?: Guide,
): string {
  const plotLeft = offsetX + MARGIN.left;
  const plotRight = offsetX + PANEL_WIDTH - MARGIN.right;
  const plotTop = MARGIN.top;
  const plotBottom = PANEL_HEIGHT - MARGIN.bottom;

  // x: log10 of the session count, padded half a decade on each side so points sit inside.
  const xMin = Math.log10(Math.min(...xs)) - 0.3;
  const xMax = Math.log10(Math.max(...xs)) + 0.3;
  const xAt = (x: number) =>
    plotLeft + ((Math.log10(x) - xMin) / (xMax - xMin)) * (plotRight - plotLeft);

  // y: from 0 (linear) or the decade below the smallest value (log) up to a round number above
  // the largest value (and the guide line).
  const all = series.flatMap((line) => line.values).filter((value) => value > 0);
  const largest = Math.max(...all, guide?.value ?? 0);
  const linearStep = roundStep(largest / 5);
  const yMin = logY ? Math.floor(Math.log10(Math.min(...all))) : 0;
  const yMax = logY
    ? Math.ceil(Math.log10(largest))
    : Math.ceil((largest * 1.05) / linearStep) * linearStep;
  const yScaled = (value: number) => (logY ? Math.log10(Math.max(value, 10 ** yMin)) : value);
  const yAt = (value: number) =>
    plotBottom - ((yScaled(value) - yMin) / (yMax - yMin)) * (plotBottom - plotTop);

  const parts: string[] = [];
  parts.push(`<text x="${offsetX + PANEL_WIDTH / 2}" y="20" text-anchor="middle" ` +
    `font-weight="bold">${escapeXml(title)}</text>`);
  // Axes.
  parts.push(`<line x1="${plotLeft}" y1="${plotBottom}" x2="${plotRight}" y2="${plotBottom}" ` +
    `stroke="#333"/>`);
  parts.push(`<line x1="${plotLeft}" y1="${plotTop}" x2="${plotLeft}" y2="${plotBottom}" ` +
    `stroke="#333"/>`);
  // x ticks: one per measured size.
  for (const x of xs) {
    parts.push(`<line x1="${xAt(x)}" y1="${plotBottom}" x2="${xAt(x)}" y2="${plotBottom + 5}" ` +
      `stroke="#333"/>`);
    parts.push(`<text x="${xAt(x)}" y="${plotBottom + 18}" text-anchor="middle">` +
      `${formatCount(x)}</text>`);
  }
  parts.push(`<text x="${(plotLeft + plotRight) / 2}" y="${PANEL_HEIGHT - 8}" ` +
    `text-anchor="middle">online sessions</text>`);
  // y ticks with light grid lines: each power of ten (log), or every round step (linear).
  const yTicks = logY
    ? Array.from({ length: yMax - yMin + 1 }, (_, i) => 10 ** (yMin + i))
    : Array.from({ length: Math.round(yMax / linearStep) + 1 }, (_, i) => i * linearStep);
  for (const tick of yTicks) {
    const y = yAt(tick);
    parts.push(`<line x1="${plotLeft}" y1="${y}" x2="${plotRight}" y2="${y}" stroke="#ddd"/>`);
    parts.push(`<text x="${plotLeft - 6}" y="${y + 4}" text-anchor="end">` +
      `${escapeXml(formatY(tick))}</text>`);
  }
  if (guide !== undefined) {
    const y = yAt(guide.value);
    parts.push(`<line x1="${plotLeft}" y1="${y}" x2="${plotRight}" y2="${y}" stroke="#ff7f0e" ` +
      `stroke-width="1.5" stroke-dasharray="2 3"/>`);
    parts.push(`<text x="${plotRight - 4}" y="${y - 5}" text-anchor="end" fill="#ff7f0e">` +
      `${escapeXml(guide.label)}</text>`);
  }
  // The lines, each with a dot per measurement, and a legend in the top left corner.
  series.forEach((line, index) => {
    const colour = COLOURS[index % COLOURS.length];
    const points = xs.map((x, i) => `${xAt(x).toFixed(1)},${yAt(line.values[i]).toFixed(1)}`);
    const dash = line.dashed ? ' stroke-dasharray="6 4"' : '';
    parts.push(`<polyline fill="none" stroke="${colour}" stroke-width="2"${dash} ` +
      `points="${points.join(' ')}"/>`);
    for (const point of points) {
      const [cx, cy] = point.split(',');
      parts.push(`<circle cx="${cx}" cy="${cy}" r="3.5" fill="${colour}"/>`);
    }
    const legendY = plotTop + 8 + index * 16;
    parts.push(`<line x1="${plotLeft + 10}" y1="${legendY - 4}" x2="${plotLeft + 30}" ` +
      `y2="${legendY - 4}" stroke="${colour}" stroke-width="2"${dash}/>`);
    parts.push(`<text x="${plotLeft + 36}" y="${legendY}">${escapeXml(line.name)}</text>`);
  });
  return parts.join('\n  ');
}

// ============================================================================================
// The picture
// ============================================================================================

/** The whole SVG document for the memory and sweep measurements. */
export function memoryAndSweepChart(points: SizePoint[]): string {
  const sessions = points.map((point) => point.sessions);
  const left = panel(0, 'Process RSS', sessions, [
    { name: 'our registry', values: points.map((point) => point.rssBytes / 1e6) },
    {
      name: 'bare Map token → name',
      values: points.map((point) => point.bareRssBytes / 1e6),
      dashed: true,
    },
  ], false, (megabytes) => `${megabytes.toFixed(0)} MB`, {
    value: 400,
    label: 'target at 1 M: 400 MB',
  });
  const right = panel(PANEL_WIDTH, 'One sweeper pass, nobody expires', sessions, [
    {
      name: 'scan every session (naive)',
      values: points.map((point) => point.fullScanMs * 1000),
      dashed: true,
    },
    {
      name: 'our sweeper, after heartbeats',
      values: points.map((point) => point.sweepSteadyMs * 1000),
    },
    {
      name: 'our sweeper, before any hello',
      values: points.map((point) => point.sweepBeforeHellosMs * 1000),
    },
  ], true, (micros) => (micros >= 1000 ? `${micros / 1000} ms` : `${micros} µs`));
  const width = 2 * PANEL_WIDTH;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${PANEL_HEIGHT}" ` +
    `viewBox="0 0 ${width} ${PANEL_HEIGHT}" font-family="sans-serif" font-size="12">
  <rect width="100%" height="100%" fill="white"/>
  ${left}
  ${right}
</svg>
`;
}
