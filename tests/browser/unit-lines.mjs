// A reporter for `node --test` (--test-reporter=./unit-lines.mjs): one line per test,
// "client unit <suite> <test>: ok" or ": FAILED" with the error, in the "<check>: ok"
// form that scripts/test.sh counts. Suites (describe) get no line of their own.
const clean = (s) => s.toLowerCase().replace(/[^a-z0-9 ]+/g, ' ').replace(/\s+/g, ' ').trim();

export default async function* lines(source) {
  const suites = []; // the names of the enclosing describe blocks, by nesting
  for await (const { type, data } of source) {
    if (type === 'test:start') suites[data.nesting] = data.name;
    if (type !== 'test:pass' && type !== 'test:fail') continue;
    if (data.details?.type === 'suite') continue;
    const name = clean(['client unit', ...suites.slice(0, data.nesting), data.name].join(' '));
    if (type === 'test:pass') {
      yield `${name}: ok\n`;
    } else {
      const err = data.details?.error;
      const cause = err?.cause ?? err;
      yield `${name}: FAILED\n${String(cause?.stack ?? cause ?? err).replace(/^/gm, '    ')}\n`;
    }
  }
}
