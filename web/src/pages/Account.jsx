// The signed-in user's wallet: balance, statement lines, and the agreements they are party to.
import { useEffect, useState } from 'react';
import { api } from '../api.js';

export default function AccountPage({ user }) {
  const [statement, setStatement] = useState(null);
  const [agreements, setAgreements] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    if (!user) return;
    const account = `user:${user.name}`;
    api(`/api/statement?account=${encodeURIComponent(account)}`).then(setStatement).catch((e) => setError(e.message));
    api(`/api/agreements?party=${encodeURIComponent(user.name)}`).then((r) => setAgreements(r.agreements)).catch((e) => setError(e.message));
  }, [user]);
  if (!user) return <div className="page muted">Sign in with a token to see your statement and agreements.</div>;
  return (
    <div className="page" data-testid="account">
      <h2>{user.name}</h2>
      {error ? <div className="error">{error}</div> : null}
      {statement ? (
        <>
          <p>Balance of <code>{statement.account}</code>: <b data-testid="balance">{statement.balance}</b> µcr</p>
          <h3>Statement</h3>
          {statement.lines.length ? (
            <table className="table small" data-testid="statement">
              <thead><tr>{Object.keys(statement.lines[0]).slice(0, 8).map((k) => <th key={k}>{k}</th>)}</tr></thead>
              <tbody>
                {statement.lines.map((line, i) => (
                  <tr key={line.id || i}>{Object.keys(statement.lines[0]).slice(0, 8).map((k) => <td key={k}>{typeof line[k] === 'object' ? JSON.stringify(line[k]) : String(line[k] ?? '')}</td>)}</tr>
                ))}
              </tbody>
            </table>
          ) : <p className="muted">No lines yet.</p>}
        </>
      ) : null}
      <h3>Agreements</h3>
      {agreements?.length ? (
        <table className="table small" data-testid="agreements">
          <thead><tr><th>id</th><th>model</th><th>state</th><th>version</th><th>parties</th></tr></thead>
          <tbody>
            {agreements.map((a) => (
              <tr key={`${a.id}-${a.version}`}><td><code>{String(a.id).slice(0, 12)}</code></td><td>{a.model || a.terms?.model}</td><td>{a.state}</td><td>{a.version}</td>
                <td>{JSON.stringify(a.parties || a.terms?.parties || a.terms?.shares || '')}</td></tr>
            ))}
          </tbody>
        </table>
      ) : <p className="muted">No agreements.</p>}
    </div>
  );
}
