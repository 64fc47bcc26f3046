// runInSandbox, the reusable entry point (Tinefile hooks will call it): piped stdio, exit
// code, the environment filter and the explicit hook-secrets channel; setup failures reject.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { hostConfigSchema } from '../src/host/config.js';
import { runInSandbox } from '../src/sandbox/helper.js';

let host: TestHost;
let fork: any;
let config: any;

test.before(() => {
  host = makeTestHost();
  host.run(['repo', 'create', 'app']);
  fork = host.run(['repo', 'fork', 'app', '--tag', 't1']).json.data;
  if (!fork) throw new Error('fork not created');
  config = hostConfigSchema.parse(JSON.parse(readFileSync(host.configPath, 'utf8')));
});
test.after.always(() => host?.cleanup());

async function collect(argv: string[], opts: Parameters<typeof runInSandbox>[3]) {
  const run = runInSandbox({ config }, fork, argv, { stdio: ['ignore', 'pipe', 'pipe'], forwardSignals: [], ...opts });
  let out = '';
  let err = '';
  run.child.stdout!.on('data', (d) => (out += d));
  run.child.stderr!.on('data', (d) => (err += d));
  const code = await run.exit;
  return { code, out, err };
}

test.serial('piped stdio and exit code; env filter drops TINE_SECRET_*, hookSecrets pass explicitly', async (t) => {
  const r = await collect(['sh', '-c', 'id -u; env | grep ^TINE_SECRET_ | sort; exit 4'], {
    env: { TINE_SECRET_SNEAKY: 'no', EXTRA: 'yes' },
    hookSecrets: { TINE_SECRET_DB: 'for-the-hook' },
  });
  t.is(r.code, 4, r.err);
  t.is(r.out, '7111\nTINE_SECRET_DB=for-the-hook\n');
  t.throws(() => runInSandbox({ config }, fork, ['true'], { hookSecrets: { PATH: '/evil' } }), { message: /hookSecrets/ });
});

test.serial('a sandbox that cannot be built rejects with SANDBOX_FAILED; nothing runs', async (t) => {
  const gone = { ...fork, path: `${fork.path}-missing` };
  const run = runInSandbox({ config }, gone, ['sh', '-c', `echo ran > ${fork.path}/should-not-exist`], { stdio: ['ignore', 'pipe', 'pipe'], forwardSignals: [] });
  const e = await t.throwsAsync(run.exit);
  t.is((e as any).code, 'SANDBOX_FAILED');
  t.regex(e!.message, /open_tree/);
  t.throws(() => readFileSync(`${fork.path}/should-not-exist`));
});
