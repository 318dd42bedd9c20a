// Builds the AssemblyScript examples in one Node process (the compiler and Binaryen warm up
// once instead of once per example): node build.mjs <out-dir> [example...]
// Writes <out-dir>/assemblyscript-<example>.wasm; exits 1 if any example fails.
import asc from "assemblyscript/asc";
import { resolve } from "node:path";

const [outDir, ...args] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node build.mjs <out-dir> [example...]");
  process.exit(2);
}
const examples = args.length ? args : ["hello", "redis3", "fib", "kv", "counter"];
// Flags: -O3s (speed, then size); the incremental runtime frees memory (the stub runtime
// never does, so a pooled instance grows without bound); abort reports through the SDK.
const flags = ["-O3s", "--runtime", "incremental", "--use", "abort=guest/index/abort"];

let failed = false;
for (const example of examples) {
  const out = resolve(outDir, `assemblyscript-${example}.wasm`);
  const { error, stderr } = await asc.main([`${example}/index.ts`, ...flags, "-o", out]);
  if (error) {
    failed = true;
    console.error(`assemblyscript ${example}: ${error.message}\n${stderr.toString()}`);
  }
}
process.exit(failed ? 1 : 0);
