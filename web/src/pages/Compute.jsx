// The compute pool, live: providers with their state and capacity, and the signed-in user's jobs.
import { useEffect, useState } from 'react';
import { api } from '../api.js';

function usePoll(path, ms, enabled = true) {
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    if (!enabled) return undefined;
    let stop = false;
    const tick = async () => {
      try {
        const value = await api(path);
        if (!stop) { setData(value); setError(''); }
      } catch (e) {
        if (!stop) setError(e.message);
      }
    };
    tick();
    const timer = setInterval(tick, ms);
    return () => { stop = true; clearInterval(timer); };
  }, [path, ms, enabled]);
  return [data, error];
}

function cell(value) {
  if (value == null) return '';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function Table({ rows, columns, testid }) {
  return (
    <table className="table small" data-testid={testid}>
      <thead><tr>{columns.map((c) => <th key={c}>{c}</th>)}</tr></thead>
      <tbody>{rows.map((r, i) => <tr key={r.id || i}>{columns.map((c) => <td key={c} className={c === 'state' ? `state ${r[c]}` : ''}>{cell(r[c]).slice(0, 80)}</td>)}</tr>)}</tbody>
    </table>
  );
}

export default function ComputePage({ user }) {
  const [providers, providerError] = usePoll('/api/providers', 2000);
  const [jobs, jobError] = usePoll('/api/jobs', 2000, Boolean(user));
  const [cluster] = usePoll('/api/cluster', 5000);
  return (
    <div className="page" data-testid="compute">
      <h2>Providers</h2>
      {cluster ? <p className="muted">scheduler {cluster.scheduler} · {Object.keys(cluster.workers || {}).length} workers · updates every 2 s</p> : null}
      {providerError ? <div className="error">{providerError}</div> : null}
      {providers ? (providers.providers.length
        ? <Table testid="providers" rows={providers.providers} columns={Object.keys(providers.providers[0]).filter((k) => !['key', 'public_key', 'benchmark'].includes(k)).slice(0, 9)} />
        : <p className="muted">No providers yet: on another machine run <code>iollm provider join</code>.</p>) : null}
      <h2>Jobs</h2>
      {!user ? <p className="muted">Sign in to see your jobs.</p> : null}
      {jobError ? <div className="error">{jobError}</div> : null}
      {jobs ? (jobs.jobs.length
        ? <Table testid="jobs" rows={jobs.jobs} columns={Object.keys(jobs.jobs[0]).filter((k) => !['spec', 'result'].includes(k)).slice(0, 9)} />
        : <p className="muted">No jobs yet.</p>) : null}
    </div>
  );
}
