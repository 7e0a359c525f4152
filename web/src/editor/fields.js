// The parameters each node kind has (see _check_node in src/iollm/paths/graph.py), for the side panel.
const ROLE_OPTIONS = ['', 'planner', 'solver', 'critic', 'refiner', 'verifier', 'aggregator'];
const SAMPLING = [
  { key: 'params.max_tokens', label: 'max tokens', type: 'number' },
  { key: 'params.temperature', label: 'temperature', type: 'number', step: 0.1 },
];

export const FIELDS = {
  model: [
    { key: 'model', label: 'model', type: 'model' },
    { key: 'role', label: 'role', type: 'select', options: ROLE_OPTIONS },
    { key: 'prompt', label: 'prompt ({{input}}, {{node_id}})', type: 'textarea' },
    { key: 'system', label: 'system', type: 'textarea' },
    ...SAMPLING,
  ],
  vote: [
    { key: 'model', label: 'model', type: 'model' },
    { key: 'k', label: 'samples k', type: 'number' },
    { key: 'mode', label: 'mode', type: 'select', options: ['majority', 'normalized'] },
    { key: 'temperature', label: 'sample temperature', type: 'number', step: 0.1 },
    { key: 'prompt', label: 'prompt', type: 'textarea' },
    ...SAMPLING.slice(0, 1),
  ],
  cascade: [
    { key: 'models', label: 'models, cheapest first (one per line)', type: 'lines' },
    { key: 'check', label: 'check', type: 'select', options: ['agreement', 'format', 'python', 'logprob'] },
    { key: 'samples', label: 'samples (agreement)', type: 'number' },
    {
      key: 'threshold',
      label: 'threshold (agreement: share of samples that agree; logprob: a log-probability ≤ 0, or a list, one per escalation)',
      type: 'json',
      rows: 1,
    },
    { key: 'metric', label: 'metric (logprob)', type: 'select', options: ['', 'mean', 'min'] },
    { key: 'pattern', label: 'pattern (format)', type: 'text' },
    { key: 'test', label: 'test code (python)', type: 'textarea' },
    { key: 'prompt', label: 'prompt (or one per stage)', type: 'textarea' },
    {
      key: 'stages',
      label: 'stages (JSON, one per model: {"prompt", "params", "program": true answers with what its code prints})',
      type: 'json',
      rows: 6,
    },
    ...SAMPLING.slice(0, 1),
  ],
  route: [
    { key: 'on', label: 'match on', type: 'text' },
    { key: 'rules', label: 'rules (JSON [{branch, pattern}])', type: 'json' },
    { key: 'default', label: 'default branch', type: 'text' },
  ],
  python: [{ key: 'code', label: 'code (stdout is the output)', type: 'textarea', rows: 8 }],
  output: [],
};

export function getPath(config, key) {
  return key.split('.').reduce((v, k) => (v == null ? undefined : v[k]), config);
}

export function setPath(config, key, value) {
  const [head, ...rest] = key.split('.');
  const next = { ...config };
  if (rest.length) {
    const inner = setPath(next[head] || {}, rest.join('.'), value);
    if (Object.keys(inner).length) next[head] = inner;
    else delete next[head];
  } else if (value === undefined || value === '') delete next[head];
  else next[head] = value;
  return next;
}
