// Publish the drawn workflow as the model path/NAME (POST /api/paths), callable like any model.
import { useState } from 'react';
import { api } from '../api.js';

export default function PublishPanel({ name, current }) {
  const [target, setTarget] = useState(name);
  const [done, setDone] = useState(null);
  const [error, setError] = useState('');
  const publish = async () => {
    setError('');
    try {
      setDone(await api('/api/paths', { method: 'POST', body: { name: target, graph: current() } }));
    } catch (e) {
      setError(e.message);
    }
  };
  return (
    <div className="panel-body" data-testid="publish-panel">
      <label className="field"><span>publish as path/</span>
        <input value={target} onChange={(e) => setTarget(e.target.value)} />
      </label>
      <button className="primary" onClick={publish}>Publish</button>
      {error ? <div className="error">{error}</div> : null}
      {done ? (
        <div className="ok">
          Published <b>{done.model}</b> ({done.commit.slice(0, 12)}). Call it like any model:
          <pre>{`curl ${location.origin}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
  -d '{"model": "${done.model}", "messages": [{"role": "user", "content": "What is 2 plus 3?"}]}'`}</pre>
        </div>
      ) : null}
    </div>
  );
}
