// Per-node live state (run status, streamed text, badges, validation problems) kept outside React Flow's
// node objects: a streamed token re-renders only its own node, not the whole canvas.
import { useSyncExternalStore } from 'react';

const state = new Map();
const listeners = new Map();
const EMPTY = {};

function notify(id) {
  (listeners.get(id) || []).forEach((fn) => fn());
  (listeners.get('*') || []).forEach((fn) => fn());
}

export const nodeState = {
  get: (id) => state.get(id) || EMPTY,
  all: () => state,
  patch(id, change) {
    state.set(id, { ...(state.get(id) || EMPTY), ...change });
    notify(id);
  },
  clear(keys) {
    const ids = [...state.keys()];
    ids.forEach((id) => {
      const current = { ...state.get(id) };
      keys.forEach((k) => delete current[k]);
      state.set(id, current);
      notify(id);
    });
  },
  subscribe(id, fn) {
    if (!listeners.has(id)) listeners.set(id, new Set());
    listeners.get(id).add(fn);
    return () => listeners.get(id).delete(fn);
  },
};

export function useNodeState(id) {
  return useSyncExternalStore(
    (fn) => nodeState.subscribe(id, fn),
    () => nodeState.get(id),
  );
}

let version = 0;
export function useAnyNodeState() {
  return useSyncExternalStore(
    (fn) => nodeState.subscribe('*', () => {
      version += 1;
      fn();
    }),
    () => version,
  );
}
