// A search's quality/cost plot, hand-drawn in SVG: every evaluated path as a point (search split), the
// Pareto front highlighted and joined, the chosen path ringed; and the front as a table whose rows open
// their path on the canvas. Reads the result defensively: a missing figure drops a point, never the plot.
const W = 380;
const H = 250;
const PAD = { left: 46, right: 14, top: 14, bottom: 40 };

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const fixed = (v, digits) => (num(v) === null ? '–' : v.toFixed(digits));

// Search-split figures of a front entry (final results nest them under "search"; findings too).
function figures(entry) {
  const s = entry?.search || entry || {};
  return { quality: num(s.quality), cost: num(s.cost) };
}

// Points no other point beats on quality at no more cost (2-D: quality up, cost down), cheapest first.
function staircase(points) {
  const keep = points.filter((p) => !points.some((q) => q !== p && q.quality >= p.quality && q.cost <= p.cost
    && (q.quality > p.quality || q.cost < p.cost)));
  return keep.sort((a, b) => a.cost - b.cost);
}

function ticks(max) {
  return [0, max / 2, max];
}

export function SearchPlot({ result, onOpen }) {
  const front = new Set((result?.pareto || []).map((p) => p?.name));
  const chosen = result?.best?.name;
  const byName = new Map();
  (result?.candidates || []).forEach((c) => {
    const f = figures(c);
    if (c?.name && f.quality !== null && f.cost !== null) byName.set(c.name, { name: c.name, template: c.template, n: c.n, ...f });
  });
  (result?.pareto || []).forEach((p) => { // a front member the candidate list lacks still gets its point
    const f = figures(p);
    if (p?.name && !byName.has(p.name) && f.quality !== null && f.cost !== null) byName.set(p.name, { name: p.name, template: p.template, ...f });
  });
  const points = [...byName.values()];
  if (!points.length) return <div className="muted" data-testid="search-pareto-empty">No path evaluated yet.</div>;

  const maxCost = Math.max(...points.map((p) => p.cost), 1);
  const x = (c) => PAD.left + (c / maxCost) * (W - PAD.left - PAD.right);
  const y = (q) => H - PAD.bottom - Math.max(0, Math.min(1, q)) * (H - PAD.top - PAD.bottom);
  const line = staircase(points.filter((p) => front.has(p.name)));
  const steps = line.flatMap((p, i) => (i === 0 ? [[p.cost, p.quality]] : [[p.cost, line[i - 1].quality], [p.cost, p.quality]]));
  const best = points.find((p) => p.name === chosen);
  const open = (name) => {
    const entry = (result?.pareto || []).find((p) => p?.name === name) || (result?.best?.name === name ? result.best : null);
    if (entry?.graph && onOpen) onOpen(entry);
  };

  return (
    <svg viewBox={`0 0 ${W} ${H}`} width="100%" style={{ maxWidth: W }} className="pareto" data-testid="search-pareto" role="img"
      aria-label="quality against cost of every evaluated path">
      <line x1={PAD.left} y1={H - PAD.bottom} x2={W - PAD.right} y2={H - PAD.bottom} stroke="#888" />
      <line x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={H - PAD.bottom} stroke="#888" />
      {ticks(maxCost).map((t) => (
        <text key={`x${t}`} x={x(t)} y={H - PAD.bottom + 13} textAnchor="middle" fontSize="10">{Math.round(t)}</text>
      ))}
      {[0, 0.5, 1].map((t) => (
        <text key={`y${t}`} x={PAD.left - 5} y={y(t) + 3} textAnchor="end" fontSize="10">{t}</text>
      ))}
      <text x={(W + PAD.left) / 2} y={H - 6} textAnchor="middle" fontSize="11">cost per task (µcr/task)</text>
      <text x={12} y={(H - PAD.bottom) / 2} transform={`rotate(-90 12 ${(H - PAD.bottom) / 2})`} textAnchor="middle" fontSize="11">
        quality (share right, search split)
      </text>
      {steps.length > 1 ? (
        <polyline fill="none" stroke="#2b7" strokeWidth="2" points={steps.map(([c, q]) => `${x(c)},${y(q)}`).join(' ')} />
      ) : null}
      {points.map((p) => {
        const onFront = front.has(p.name);
        return (
          <circle key={p.name} data-testid="point" data-name={p.name} data-front={onFront ? 'true' : 'false'}
            data-chosen={p.name === chosen ? 'true' : 'false'} cx={x(p.cost)} cy={y(p.quality)} r={onFront ? 5 : 3.5}
            fill={onFront ? '#2b7' : '#67a'} fillOpacity={onFront ? 1 : 0.6}
            style={onFront ? { cursor: 'pointer' } : undefined} onClick={onFront ? () => open(p.name) : undefined}>
            <title>{`${p.name} (${p.template || '?'}): quality ${fixed(p.quality, 3)}${p.n ? ` over ${p.n} tasks` : ''}, ${fixed(p.cost, 0)} µcr/task${onFront ? ' · on the front (click to open)' : ''}`}</title>
          </circle>
        );
      })}
      {best ? (
        <g data-testid="chosen-mark">
          <circle cx={x(best.cost)} cy={y(best.quality)} r={9} fill="none" stroke="#e80" strokeWidth="2" />
          <text x={x(best.cost)} y={y(best.quality) - 12} textAnchor="middle" fontSize="10" fill="#b60">chosen</text>
        </g>
      ) : null}
    </svg>
  );
}

export function FrontTable({ result, onOpen }) {
  const rows = (result?.pareto || []).filter((p) => p?.name);
  if (!rows.length) return null;
  const chosen = result?.best?.name;
  return (
    <table className="table small front" data-testid="search-front">
      <thead><tr><th>front path</th><th title="search split">quality</th><th title="score on the held-out split (95% CI)">held-out</th><th>µcr/task</th><th /></tr></thead>
      <tbody>
        {rows.map((p) => {
          const f = figures(p);
          const held = p.heldout || {};
          return (
            <tr key={p.name} className={p.name === chosen ? 'record' : ''} data-testid={`front-${p.name}`}>
              <td title={p.template}>{p.name}{p.name === chosen ? ' (chosen)' : ''}</td>
              <td>{fixed(f.quality, 3)}</td>
              <td title={num(held.score) === null ? 'no held-out figures' : `95% CI ${fixed(held.ci_low, 2)}–${fixed(held.ci_high, 2)} over ${held.n ?? '?'} tasks`}>
                {fixed(held.score, 3)}
              </td>
              <td>{fixed(f.cost, 0)}</td>
              <td><button disabled={!p.graph} onClick={() => onOpen(p)} data-testid={`open-${p.name}`}>Open</button></td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
