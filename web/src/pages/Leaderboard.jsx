// A suite's leaderboard: ranked held-out submissions and the quality/cost Pareto plot.
import { useEffect, useState } from 'react';
import { api } from '../api.js';

function front(points) {
  // Non-dominated: no other point is at least as good on score and at most as costly, and better on one.
  return points.filter((p) => !points.some((q) => q !== p && q.score >= p.score && q.cost_per_task <= p.cost_per_task
    && (q.score > p.score || q.cost_per_task < p.cost_per_task)));
}

function Pareto({ submissions }) {
  const W = 520;
  const H = 300;
  const pad = 44;
  if (!submissions.length) return <div className="muted">No submissions on this split yet: run `iollm path search --submit`.</div>;
  const maxCost = Math.max(...submissions.map((s) => s.cost_per_task), 1);
  const x = (c) => pad + (c / maxCost) * (W - 2 * pad);
  const y = (s) => H - pad - s * (H - 2 * pad);
  const best = front(submissions).sort((a, b) => a.cost_per_task - b.cost_per_task);
  return (
    <svg width={W} height={H} className="pareto" data-testid="pareto">
      <line x1={pad} y1={H - pad} x2={W - pad} y2={H - pad} stroke="#888" />
      <line x1={pad} y1={pad} x2={pad} y2={H - pad} stroke="#888" />
      <text x={W / 2} y={H - 8} textAnchor="middle">cost per task (µcr)</text>
      <text x={12} y={H / 2} transform={`rotate(-90 12 ${H / 2})`} textAnchor="middle">score</text>
      <text x={pad} y={H - pad + 14} textAnchor="middle" fontSize="10">0</text>
      <text x={W - pad} y={H - pad + 14} textAnchor="middle" fontSize="10">{Math.round(maxCost)}</text>
      <text x={pad - 6} y={pad + 4} textAnchor="end" fontSize="10">1</text>
      <polyline fill="none" stroke="#2b7" strokeWidth="2" points={best.map((s) => `${x(s.cost_per_task)},${y(s.score)}`).join(' ')} />
      {submissions.map((s) => (
        <circle key={s.id} cx={x(s.cost_per_task)} cy={y(s.score)} r={best.includes(s) ? 6 : 4} fill={s.record ? '#e80' : best.includes(s) ? '#2b7' : '#67a'}>
          <title>{`#${s.id} by ${s.designer}: score ${s.score.toFixed(3)}, ${s.cost_per_task.toFixed(0)} µcr/task`}</title>
        </circle>
      ))}
    </svg>
  );
}

export default function LeaderboardPage({ suites, arg }) {
  const suite = arg || suites[0]?.name || '';
  const [board, setBoard] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    if (!suite) return;
    setBoard(null);
    api(`/api/leaderboard/${suite}`).then(setBoard).catch((e) => setError(e.message));
  }, [suite]);
  return (
    <div className="page" data-testid="leaderboard">
      <div className="row">
        <label>suite{' '}
          <select value={suite} onChange={(e) => { window.location.hash = `#/leaderboard/${e.target.value}`; }}>
            {suites.map((s) => <option key={s.name} value={s.name}>{s.name}</option>)}
          </select>
        </label>
        {board?.fingerprint ? <span className="muted">held-out split {board.fingerprint.slice(0, 12)} · margin {board.margin}</span> : null}
      </div>
      {error ? <div className="error">{error}</div> : null}
      {board ? (
        <>
          <Pareto submissions={board.submissions} />
          {board.holder ? <p>Record holder: <b>{board.holder.designer}</b> with {board.holder.score.toFixed(3)}</p> : null}
          <table className="table">
            <thead><tr><th>#</th><th>designer</th><th>score</th><th>95% CI</th><th>µcr/task</th><th>tasks</th><th>graph</th><th>when</th></tr></thead>
            <tbody>
              {board.submissions.map((s) => (
                <tr key={s.id} className={s.record ? 'record' : ''}>
                  <td>{s.rank}</td><td>{s.designer}</td><td>{s.score.toFixed(3)}</td>
                  <td>{s.ci_low.toFixed(2)}–{s.ci_high.toFixed(2)}</td><td>{s.cost_per_task.toFixed(0)}</td><td>{s.n_tasks}</td>
                  <td><code>{s.graph_hash.slice(0, 10)}</code> {s.graph?.name}</td><td>{s.created_at.slice(0, 19)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
    </div>
  );
}
