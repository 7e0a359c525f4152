// The shell: sign-in with a token, navigation between pages (hash routes, so /ui/ serves every page).
import { lazy, Suspense, useCallback, useEffect, useState } from 'react';
import { api, token } from './api.js';
import EditorPage from './editor/Editor.jsx';

const ModelsPage = lazy(() => import('./pages/Models.jsx'));
const LeaderboardPage = lazy(() => import('./pages/Leaderboard.jsx'));
const ComputePage = lazy(() => import('./pages/Compute.jsx'));
const AccountPage = lazy(() => import('./pages/Account.jsx'));

const PAGES = [
  ['editor', 'Editor'],
  ['models', 'Models'],
  ['leaderboard', 'Leaderboard'],
  ['compute', 'Providers & jobs'],
  ['account', 'Account'],
];

function useRoute() {
  const read = () => {
    const [page, ...rest] = window.location.hash.replace(/^#\/?/, '').split('/');
    return { page: page || 'editor', arg: decodeURIComponent(rest.join('/')) };
  };
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const onHash = () => setRoute(read());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return route;
}

function SignIn({ user, onChange }) {
  const [draft, setDraft] = useState('');
  const [error, setError] = useState('');
  const submit = async (e) => {
    e.preventDefault();
    token.set(draft.trim());
    try {
      const who = await api('/api/whoami');
      setError('');
      setDraft('');
      onChange(who);
    } catch (err) {
      token.set('');
      setError(err.message);
      onChange(null);
    }
  };
  if (user) {
    return (
      <div className="signin">
        <span data-testid="signed-in">signed in as <b>{user.name}</b>{user.is_admin ? ' (admin)' : ''}</span>
        <button onClick={() => { token.set(''); onChange(null); }}>Sign out</button>
      </div>
    );
  }
  return (
    <form className="signin" onSubmit={submit}>
      <input type="password" aria-label="token" placeholder="token (node token: HOME/token)" value={draft} onChange={(e) => setDraft(e.target.value)} />
      <button type="submit">Sign in</button>
      {error ? <span className="error" data-testid="signin-error">{error}</span> : null}
    </form>
  );
}

export default function App() {
  const route = useRoute();
  const [user, setUser] = useState(null);
  const [catalog, setCatalog] = useState(null);
  const [error, setError] = useState('');

  const refresh = useCallback(async () => {
    try {
      setCatalog(await api('/api/editor/catalog'));
      setError('');
    } catch (e) {
      setError(e.message);
    }
  }, []);

  useEffect(() => {
    if (token.get()) api('/api/whoami').then(setUser).catch(() => token.set(''));
  }, []);
  useEffect(() => {
    refresh();
  }, [user, refresh]);

  let page;
  if (!catalog) page = <div className="page muted">{error || 'Loading…'}</div>;
  else if (route.page === 'models') page = <ModelsPage arg={route.arg} />;
  else if (route.page === 'leaderboard') page = <LeaderboardPage suites={catalog.suites} arg={route.arg} />;
  else if (route.page === 'compute') page = <ComputePage user={user} />;
  else if (route.page === 'account') page = <AccountPage user={user} />;
  else page = <EditorPage user={user?.name} catalog={catalog} />;

  return (
    <div className="app">
      <header className="top">
        <span className="brand">iollm</span>
        <nav>
          {PAGES.map(([id, label]) => (
            <a key={id} href={`#/${id}`} className={route.page === id ? 'active' : ''}>{label}</a>
          ))}
        </nav>
        <SignIn user={user} onChange={setUser} />
      </header>
      <main>
        <Suspense fallback={<div className="page muted">Loading…</div>}>{page}</Suspense>
      </main>
    </div>
  );
}
