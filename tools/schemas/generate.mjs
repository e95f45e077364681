// Turns the TypeScript models of pinned @kubernetes-models packages into JSON schemas; driven by
// scripts/gen_schemas.py (reads [{module, type, alias}] as JSON on stdin, prints {alias: schema}).
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createFormatter,
  createParser,
  createProgram,
  SchemaGenerator,
} from "ts-json-schema-generator";

const here = dirname(fileURLToPath(import.meta.url));
const wanted = JSON.parse(readFileSync(0, "utf8"));
const entry = join(here, ".entry.ts");
writeFileSync(
  entry,
  wanted
    .map(
      (w) =>
        `import type { ${w.type} as _${w.alias} } from "${w.module}";\n` +
        `export interface ${w.alias} extends _${w.alias} {}\n`,
    )
    .join(""),
);
try {
  const config = {
    path: entry,
    tsconfig: join(here, "tsconfig.json"),
    skipTypeCheck: true,
    jsDoc: "none",
    additionalProperties: false,
    topRef: false,
    expose: "export",
    sortProps: true,
  };
  const program = createProgram(config);
  // one generator per `expose` mode (see CrdKind.expose in scripts/gen_schemas.py)
  const generators = {};
  const generatorFor = (expose = "export") => {
    if (!generators[expose]) {
      const c = { ...config, expose };
      generators[expose] = new SchemaGenerator(
        program,
        createParser(program, c),
        createFormatter(c),
        c,
      );
    }
    return generators[expose];
  };
  const out = {};
  for (const w of wanted) {
    out[w.alias] = generatorFor(w.expose).createSchema(w.alias);
  }
  process.stdout.write(JSON.stringify(out));
} finally {
  rmSync(entry, { force: true });
}
