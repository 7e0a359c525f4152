// One way to talk to the node: the signed-in token on every request, errors as the node words them.

const TOKEN_KEY = 'iollm.token';

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || '',
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

export class ApiError extends Error {
  constructor(message, status, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

function headers(json) {
  const out = {};
  const t = token.get();
  if (t) out.Authorization = `Bearer ${t}`;
  if (json) out['Content-Type'] = 'application/json';
  return out;
}

async function failure(reply) {
  let message = `${reply.status} ${reply.statusText}`;
  let param;
  try {
    const body = await reply.json();
    message = body.error?.message || body.detail || message;
    param = body.error?.param;
  } catch {
    /* not JSON: keep the status line */
  }
  if (reply.status === 401) message += ' (sign in with a token: the node token is in HOME/token)';
  return new ApiError(message, reply.status, param);
}

export async function api(path, { method = 'GET', body, text = false } = {}) {
  const reply = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!reply.ok) throw await failure(reply);
  return text ? reply.text() : reply.json();
}

// POST a body and call onEvent for every server-sent event until the stream ends.
export async function stream(path, body, onEvent, signal) {
  const reply = await fetch(path, { method: 'POST', headers: headers(true), body: JSON.stringify(body), signal });
  if (!reply.ok) throw await failure(reply);
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = chunk.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}

export function download(filename, content, type = 'application/json') {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
