// The README's "ten lines an app needs" type-check against the built package (dist/*.d.ts),
// so that they stay true as the API changes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

it('the ten lines of the readme type check against the package', () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const block = readme.match(/## The ten lines an app needs\n\n```js\n([\s\S]*?)```/)?.[1];
  assert.ok(block, 'README.md has the block');
  const lines = block.split('\n').filter((l) => l.trim() !== '');
  assert.ok(lines.length <= 10, `at most ten lines: ${lines.length}`);
  // What the app itself provides.
  const given = [
    'declare const email: string;',
    'declare const code: string;',
    'declare const tokenFromTheLink: string;',
    'declare function showApp(user: unknown): void;',
    'declare function showSignIn(): void;',
  ].join('\n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sesame-client-readme-'));
  try {
    const source = block.replace("from 'sesame-client'", `from ${JSON.stringify(path.join(root, 'dist/index.js'))}`);
    fs.writeFileSync(path.join(dir, 'app.ts'), `${given}\n${source}\nexport {};\n`);
    const compilerOptions = { noEmit: true, strict: true, target: 'es2022', module: 'es2022', moduleResolution: 'bundler', lib: ['es2022', 'dom'], types: [] };
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['app.ts'] }));
    const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], { encoding: 'utf8' });
    assert.equal(tsc.status, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
