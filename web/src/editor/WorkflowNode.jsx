// One node on the canvas: kind, id, model or role, live status, token/cost/latency badges, the streamed
// output, and a red outline with the reason when validation finds a problem with it.
import { memo } from 'react';
import { Handle, Position } from '@xyflow/react';
import { useNodeState } from './store.js';

function summary(kind, config) {
  if (kind === 'model') return [config.role ? `role ${config.role}` : null, config.model].filter(Boolean).join(' · ');
  if (kind === 'vote') return `${config.model || '?'} × ${config.k}`;
  if (kind === 'cascade') return (config.models || []).join(' → ');
  if (kind === 'route') return `branches: ${(config.rules || []).map((r) => r.branch).join(', ')} | ${config.default}`;
  if (kind === 'python') return 'python';
  return 'answer';
}

function WorkflowNode({ id, data, selected }) {
  const live = useNodeState(id);
  const problems = live.problems || [];
  const classes = ['wf-node', `kind-${data.kind}`];
  if (selected) classes.push('selected');
  if (problems.length) classes.push('invalid');
  if (live.status) classes.push(`status-${live.status}`);
  const trace = live.trace;
  return (
    <div className={classes.join(' ')} data-testid={`node-${id}`} data-status={live.status || ''} title={problems.join('\n')}>
      <Handle type="target" position={Position.Left} />
      <div className="wf-head">
        <span className="wf-kind">{data.kind}</span>
        <span className="wf-id">{id}</span>
        {live.status ? <span className={`wf-status ${live.status}`}>{live.fromCache ? 'cached' : live.status}</span> : null}
      </div>
      <div className="wf-summary">{summary(data.kind, data.config)}</div>
      {live.text ? <div className="wf-output" data-testid={`output-${id}`}>{live.text.slice(-160)}</div> : null}
      {trace ? (
        <div className="wf-badges" data-testid={`badges-${id}`}>
          <span title="prompt + completion tokens" className="badge tokens">{trace.prompt_tokens}+{trace.completion_tokens} tok</span>
          <span title="micro-credits" className="badge cost">{trace.cost} µcr</span>
          <span title="seconds" className="badge time">{trace.seconds.toFixed(2)} s</span>
        </div>
      ) : null}
      {problems.length ? <div className="wf-problem" data-testid={`problem-${id}`}>⚠ {problems[0]}</div> : null}
      {data.kind !== 'output' ? <Handle type="source" position={Position.Right} /> : null}
    </div>
  );
}

export default memo(WorkflowNode);
