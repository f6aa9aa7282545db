// Builds the package twice from src/: ES modules into dist/esm and
// CommonJS into dist/cjs, each with its type declarations, and marks each
// folder with its module type (package.json "type"), so `import` and
// `require()` both load real files of their own kind (the "exports" map).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync(join(here, 'dist'), { recursive: true, force: true });
const builds = [
  ['esm', 'module', ['--module', 'NodeNext']],
  // CommonJS output: tsc reads the "type" of the nearest package.json, so
  // the module kind is given explicitly.
  ['cjs', 'commonjs', ['--module', 'CommonJS', '--moduleResolution', 'Node10']],
];
for (const [dir, type, flags] of builds) {
  const out = join(here, 'dist', dir);
  execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.json'), '--outDir', out, ...flags], {
    stdio: 'inherit',
  });
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'package.json'), JSON.stringify({ type }) + '\n');
}
console.log('built dist/esm and dist/cjs');
