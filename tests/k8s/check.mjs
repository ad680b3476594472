// Offline checks of deploy/k8s, with no cluster:
//   node tests/k8s/check.mjs [--server=BUILD/loracle-server]
// 1. Renders every overlay (deploy/k8s/overlays/*) with the kustomize subset the manifests use
//    (resources, labels, images, strategic-merge patches); where `kubectl` is installed, its
//    `kubectl kustomize` must render the same objects.
// 2. Validates every object against the Kubernetes API schemas (npm kubernetes-models 4.5.1, the
//    Kubernetes 1.32 OpenAPI) and the Prometheus Operator's (npm
//    @kubernetes-models/prometheus-operator 4.4.4): types, formats, required fields, and, from
//    the same packages' type declarations, no unknown field (a typo such as `readinesProbe`,
//    which the API server rejects or drops).
// 3. Checks what loracle needs of them: every LORACLE_* variable is a server flag whose value the
//    real binary accepts (with --server), threads match the CPU request, grace periods cover
//    preStop + --shutdown_grace_s, serving replicas do not train, one trainer owns its jobs
//    volume, the store volume is ReadWriteMany and mounted where the image serves it, every
//    Service, the HPA, the PDB and the ServiceMonitor select what exists.
// 4. Self-test: a few broken variants of the rendered objects must each fail a check.
// Prints a line per check and "N passed, N failed"; exits 1 when any failed.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const k8s = path.join(root, "deploy/k8s");
const serverArg = process.argv.find((a) => a.startsWith("--server="));
const server = serverArg ? serverArg.slice("--server=".length) : "";
const modules = path.join(here, "node_modules");
if (!fs.existsSync(path.join(modules, "kubernetes-models"))) {
  console.error(`check.mjs: ${modules} is missing: run deploy/install-deps.sh (it runs npm ci there)`);
  process.exit(1);
}
const { default: YAML } = await import(path.join(modules, "yaml/dist/index.js"));

let passed = 0;
let failed = 0;
function report(ok, what, detail = "") {
  if (ok) {
    passed++;
    console.log(`ok    ${what}`);
  } else {
    failed++;
    console.log(`FAIL  ${what}${detail ? `\n      ${detail.replace(/\n/g, "\n      ")}` : ""}`);
  }
}

// ---------------------------------------------------------------------------------------------
// 1. A kustomize subset.

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const clone = (v) => JSON.parse(JSON.stringify(v));
const id = (o) => `${o.kind}/${o.metadata?.name}`;

// Strategic-merge keys of the lists the manifests patch (as in the Kubernetes API's
// x-kubernetes-patch-merge-key); other lists are replaced, as SMP does.
const mergeKeys = {
  containers: "name",
  initContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
  imagePullSecrets: "name",
  volumeClaimTemplates: null,
};

function strategicMerge(base, patch) {
  if (!isObject(base) || !isObject(patch)) return clone(patch);
  const out = clone(base);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else if (Array.isArray(value) && Array.isArray(out[key]) && mergeKeys[key]) {
      const k = mergeKeys[key];
      const merged = out[key].map(clone);
      for (const item of value) {
        const at = merged.findIndex((b) => b[k] === item[k]);
        if (at >= 0) merged[at] = strategicMerge(merged[at], item);
        else merged.push(clone(item));
      }
      out[key] = merged;
    } else {
      out[key] = key in out ? strategicMerge(out[key], value) : clone(value);
    }
  }
  return out;
}

function podSpecs(o) {
  const spec = o.spec?.template?.spec ?? o.spec?.jobTemplate?.spec?.template?.spec;
  return spec ? [spec] : [];
}

function renderKustomization(dir) {
  const file = path.join(dir, "kustomization.yaml");
  const k = YAML.parse(fs.readFileSync(file, "utf8"));
  const known = ["apiVersion", "kind", "resources", "labels", "images", "patches"];
  for (const key of Object.keys(k)) {
    if (!known.includes(key)) throw new Error(`${file}: "${key}" is outside the checker's subset`);
  }
  let objects = [];
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    if (fs.statSync(p).isDirectory()) objects.push(...renderKustomization(p));
    else objects.push(...YAML.parseAllDocuments(fs.readFileSync(p, "utf8")).map((d) => d.toJS()));
  }
  objects = objects.filter((o) => o);
  for (const patch of k.patches ?? []) {
    if (!patch.path || patch.target) throw new Error(`${file}: only patches: [{path}] are checked`);
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(path.join(dir, patch.path), "utf8"))) {
      const p = doc.toJS();
      const at = objects.findIndex((o) => o.kind === p.kind && o.metadata.name === p.metadata.name);
      if (at < 0) throw new Error(`${file}: patch ${patch.path} matches no object (${id(p)})`);
      objects[at] = strategicMerge(objects[at], p);
    }
  }
  for (const l of k.labels ?? []) {
    if (l.includeSelectors || l.includeTemplates) throw new Error(`${file}: labels on metadata only`);
    for (const o of objects) o.metadata.labels = { ...(o.metadata.labels ?? {}), ...l.pairs };
  }
  for (const image of k.images ?? []) {
    for (const o of objects) {
      for (const spec of podSpecs(o)) {
        for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
          const m = /^([^:@]+)(?::([^@]+))?$/.exec(c.image);
          if (!m || m[1] !== image.name) continue;
          c.image = `${image.newName ?? m[1]}${image.newTag ?? m[2] ? `:${image.newTag ?? m[2]}` : ""}`;
        }
      }
    }
  }
  return objects;
}

// Lists compared as multisets: kustomize orders merged list items its own way.
function canonical(v) {
  if (Array.isArray(v)) {
    const items = v.map(canonical);
    return items.every(isObject) ? items.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) : items;
  }
  if (isObject(v)) {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]));
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// 2. Schemas: kubernetes-models' validate() and an unknown-field check from its .d.ts files.

const kinds = {
  "v1/Service": ["kubernetes-models/v1/Service.mjs", "Service"],
  "v1/PersistentVolumeClaim": ["kubernetes-models/v1/PersistentVolumeClaim.mjs", "PersistentVolumeClaim"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment.mjs", "Deployment"],
  "apps/v1/StatefulSet": ["kubernetes-models/apps/v1/StatefulSet.mjs", "StatefulSet"],
  "policy/v1/PodDisruptionBudget": ["kubernetes-models/policy/v1/PodDisruptionBudget.mjs", "PodDisruptionBudget"],
  "autoscaling/v2/HorizontalPodAutoscaler": [
    "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler.mjs",
    "HorizontalPodAutoscaler",
  ],
  "monitoring.coreos.com/v1/ServiceMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.mjs",
    "ServiceMonitor",
  ],
};

// TypeScript declaration types, parsed just far enough: members of object types by name.
class Types {
  constructor() {
    this.files = new Map();
  }
  // { imports: name -> file, aliases: exported -> local, decls: local -> type text }
  file(f) {
    if (this.files.has(f)) return this.files.get(f);
    const text = fs.readFileSync(f, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
    const imports = new Map();
    for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
      const target = m[2].startsWith(".")
        ? path.resolve(path.dirname(f), m[2])
        : path.join(modules, m[2]);
      for (const n of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
        const [orig, local] = n.split(/\s+as\s+/);
        imports.set(local ?? orig, { file: `${target}.d.ts`, name: orig });
      }
    }
    const aliases = new Map();
    for (const m of text.matchAll(/export\s*\{([^}]*)\}\s*;/g)) {
      for (const n of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
        const [orig, exported] = n.split(/\s+as\s+/);
        aliases.set(exported ?? orig, orig);
      }
    }
    const decls = new Map();
    for (const m of text.matchAll(/export\s+interface\s+(\w+)(?:\s+extends\s+[\w,\s]+)?\s*\{/g)) {
      decls.set(m[1], this.braced(text, m.index + m[0].length - 1));
    }
    for (const m of text.matchAll(/export\s+declare\s+type\s+(\w+)\s*=\s*([^;]+);/g)) {
      decls.set(m[1], m[2]);
    }
    const entry = { imports, aliases, decls, f };
    this.files.set(f, entry);
    return entry;
  }
  braced(text, open) {
    let depth = 0;
    for (let i = open; i < text.length; i++) {
      if (text[i] === "{") depth++;
      else if (text[i] === "}" && --depth === 0) return text.slice(open, i + 1);
    }
    throw new Error("unbalanced braces");
  }
  // The declaration `name` visible in file f: [declaring file, type text].
  resolve(f, name) {
    const e = this.file(f);
    const local = e.aliases.get(name) ?? name;
    if (e.decls.has(local)) return [e, e.decls.get(local)];
    if (e.imports.has(local)) {
      const imp = e.imports.get(local);
      return this.resolve(imp.file, imp.name);
    }
    return null;  // a class or a primitive alias: not checked
  }
  // Parses a type expression into {kind: object|array|union|ref|any, ...}.
  parse(src) {
    let i = 0;
    const ws = () => {
      while (i < src.length && /\s/.test(src[i])) i++;
    };
    const union = () => {
      const alts = [primary()];
      ws();
      while (src[i] === "|" || src[i] === "&") {
        i++;
        alts.push(primary());
        ws();
      }
      return alts.length === 1 ? alts[0] : { kind: "union", alts };
    };
    const primary = () => {
      ws();
      let t;
      if (src[i] === "{") {
        t = members();
      } else if (src[i] === "(") {
        i++;
        t = union();
        ws();
        i++;
      } else if (src[i] === '"') {
        const j = src.indexOf('"', i + 1);
        i = j + 1;
        t = { kind: "any" };
      } else {
        const m = /^[\w.$]+/.exec(src.slice(i));
        if (!m) throw new Error(`cannot parse type at: ${src.slice(i, i + 40)}`);
        i += m[0].length;
        ws();
        if (m[0] === "Array" && src[i] === "<") {
          i++;
          const item = union();
          ws();
          i++;  // >
          t = { kind: "array", item };
        } else if (["string", "number", "boolean", "any", "unknown", "null", "object", "true", "false"].includes(m[0]) || /^-?\d/.test(m[0])) {
          t = { kind: "any" };
        } else {
          t = { kind: "ref", name: m[0] };
        }
      }
      ws();
      while (src.slice(i, i + 2) === "[]") {
        i += 2;
        t = { kind: "array", item: t };
        ws();
      }
      return t;
    };
    const members = () => {
      i++;  // {
      const fields = new Map();
      let index = null;
      for (;;) {
        ws();
        if (src[i] === "}") {
          i++;
          return { kind: "object", fields, index };
        }
        if (src[i] === "[") {
          i = src.indexOf("]", i) + 1;
          ws();
          i++;  // :
          index = union();
        } else {
          const m = /^"([^"]*)"|^(\w+)/.exec(src.slice(i));
          i += m[0].length;
          ws();
          if (src[i] === "?") i++;
          ws();
          i++;  // :
          fields.set(m[1] ?? m[2], union());
        }
        ws();
        if (src[i] === ";" || src[i] === ",") i++;
      }
    };
    const t = union();
    return t;
  }
  // Unknown fields of `value` under the type `text` declared in file e.
  unknown(value, text, e, where, out) {
    return this.walk(value, this.parse(text), e, where, out);
  }
  walk(value, t, e, where, out) {
    if (value === null || value === undefined) return;
    if (t.kind === "ref") {
      const r = this.resolve(e.f, t.name);
      if (r) this.unknown(value, r[1], r[0], where, out);
    } else if (t.kind === "array") {
      if (Array.isArray(value)) value.forEach((v, k) => this.walk(v, t.item, e, `${where}[${k}]`, out));
    } else if (t.kind === "object") {
      if (!isObject(value)) return;
      for (const [k, v] of Object.entries(value)) {
        if (t.fields.has(k)) this.walk(v, t.fields.get(k), e, `${where}.${k}`, out);
        else if (t.index) this.walk(v, t.index, e, `${where}.${k}`, out);
        else out.push(`${where}.${k}`);
      }
    } else if (t.kind === "union") {
      let best = null;
      for (const alt of t.alts) {
        const o = [];
        this.walk(value, alt, e, where, o);
        if (best === null || o.length < best.length) best = o;
      }
      out.push(...best);
    }
  }
}
const types = new Types();

async function schemaErrors(o) {
  const key = `${o.apiVersion}/${o.kind}`;
  if (!kinds[key]) return [`no schema for ${key}`];
  const [module, name] = kinds[key];
  const Model = (await import(path.join(modules, module)))[name];
  const errors = [];
  try {
    new Model(clone(o)).validate();
  } catch (err) {
    errors.push(err.message);
  }
  const dts = path.join(modules, module.replace(/\.mjs$/, ".d.ts"));
  const r = types.resolve(dts, `I${name}`);
  if (!r) return [...errors, `no declaration I${name} in ${dts}`];
  const unknown = [];
  types.unknown(o, r[1], r[0], "", unknown);
  errors.push(...unknown.map((u) => `unknown field ${u.slice(1)}`));
  return errors;
}

// ---------------------------------------------------------------------------------------------
// 3. What loracle needs of its manifests.

const labelsMatch = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v) && Object.keys(selector ?? {}).length > 0;
const envOf = (c) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
const workloads = (objs) => objs.filter((o) => ["Deployment", "StatefulSet"].includes(o.kind));
const main = (w) => w.spec.template.spec.containers.find((c) => c.name === "loracle");

let flagCache = null;
function serverFlags() {
  if (flagCache || !server) return flagCache;
  const out = spawnSync(server, ["--helpfull"], { encoding: "utf8" });
  flagCache = new Set([...`${out.stdout}${out.stderr}`.matchAll(/^\s+--(\w+) \(/gm)].map((m) => m[1]));
  return flagCache;
}

// The binary parses LORACLE_* before anything else: a bad value exits 2 naming it. "" = accepted.
const refusals = new Map();
function serverRefuses(env) {
  if (!server) return "";
  const key = JSON.stringify(env);
  if (!refusals.has(key)) {
    const run = spawnSync(server, ["--version"], { env: { ...env, PATH: process.env.PATH }, encoding: "utf8" });
    refusals.set(key, run.status === 0 ? "" : run.stderr.trim() || `exit ${run.status}`);
  }
  return refusals.get(key);
}

function loracleErrors(objs) {
  const errors = [];
  const err = (m) => errors.push(m);
  const flags = serverFlags();
  const byKind = (k) => objs.filter((o) => o.kind === k);
  const deployment = byKind("Deployment").find((o) => o.metadata.name === "loracle");
  const trainer = byKind("StatefulSet").find((o) => o.metadata.name === "loracle-trainer");
  if (!deployment) err("no Deployment loracle (serving)");
  if (!trainer) err("no StatefulSet loracle-trainer");
  if (!deployment || !trainer) return errors;
  const store = byKind("PersistentVolumeClaim").find((p) => p.spec.accessModes?.includes("ReadWriteMany"));
  if (!store) err("no ReadWriteMany PersistentVolumeClaim for the shared adapter store");

  for (const w of workloads(objs)) {
    const c = main(w);
    const pod = w.spec.template.spec;
    if (!c) {
      err(`${id(w)}: no container named loracle`);
      continue;
    }
    const env = envOf(c);
    for (const name of Object.keys(env).filter((n) => n.startsWith("LORACLE_"))) {
      const flag = name.slice("LORACLE_".length).toLowerCase();
      if (flags && !flags.has(flag)) err(`${id(w)}: ${name} is not a loracle-server flag (--${flag})`);
    }
    const refused = serverRefuses(env);
    if (refused) err(`${id(w)}: loracle-server refuses its environment: ${refused}`);
    const threads = Number(env.LORACLE_THREADS);
    const cpu = Number(c.resources?.requests?.cpu);
    if (!(threads > 0) || threads !== cpu) {
      err(`${id(w)}: LORACLE_THREADS=${env.LORACLE_THREADS} must equal the CPU request (${c.resources?.requests?.cpu})`);
    }
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      const port = c[probe]?.grpc?.port;
      if (!c.ports?.some((p) => p.name === "grpc" && p.containerPort === port)) {
        err(`${id(w)}: ${probe} must be a gRPC probe on the grpc port`);
      }
    }
    const sleep = Number(c.lifecycle?.preStop?.exec?.command?.[1] ?? NaN);
    const grace = Number(env.LORACLE_SHUTDOWN_GRACE_S ?? 10);
    if (!(sleep > 0)) err(`${id(w)}: no preStop sleep (endpoints must drop the pod before SIGTERM)`);
    if (!(pod.terminationGracePeriodSeconds >= sleep + grace + 5)) {
      err(`${id(w)}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < preStop ${sleep} s + --shutdown_grace_s ${grace} s + 5 s`);
    }
    const storeMount = c.volumeMounts?.find((m) => m.mountPath === "/var/lib/loracle/adapters");
    const storeVolume = pod.volumes?.find((v) => v.name === storeMount?.name);
    if (!store || storeVolume?.persistentVolumeClaim?.claimName !== store.metadata.name) {
      err(`${id(w)}: /var/lib/loracle/adapters (the image's --adapters_dir) must mount the ReadWriteMany store`);
    }
  }
  const serving = envOf(main(deployment) ?? {});
  if (serving.LORACLE_TRAINING_WORKERS !== "0") err("Deployment/loracle: serving replicas must set LORACLE_TRAINING_WORKERS=0");
  const trainerEnv = envOf(main(trainer) ?? {});
  if (trainer.spec.replicas !== 1) err("StatefulSet/loracle-trainer: exactly 1 replica (one writer per jobs directory)");
  if (!(Number(trainerEnv.LORACLE_TRAINING_WORKERS) >= 1)) err("StatefulSet/loracle-trainer: LORACLE_TRAINING_WORKERS >= 1");
  const jobsMount = main(trainer)?.volumeMounts?.find((m) => m.mountPath === trainerEnv.LORACLE_JOBS_DIR);
  if (!jobsMount || !trainer.spec.volumeClaimTemplates?.some((t) => t.metadata.name === jobsMount.name)) {
    err("StatefulSet/loracle-trainer: LORACLE_JOBS_DIR must be on its own volumeClaimTemplate");
  }

  for (const s of byKind("Service")) {
    const targets = workloads(objs).filter((w) => labelsMatch(s.spec.selector, w.spec.template.metadata.labels));
    if (targets.length === 0) err(`${id(s)}: selects no workload's pods`);
    for (const p of s.spec.ports) {
      for (const w of targets) {
        if (!main(w)?.ports?.some((cp) => cp.name === p.targetPort)) err(`${id(s)}: targetPort ${p.targetPort} is not a port of ${id(w)}`);
      }
    }
  }
  if (!byKind("Service").some((s) => labelsMatch(s.spec.selector, trainer.spec.template.metadata.labels) && s.metadata.name === trainer.spec.serviceName)) {
    err("StatefulSet/loracle-trainer: its serviceName must be a Service selecting it");
  }
  for (const h of byKind("HorizontalPodAutoscaler")) {
    const t = h.spec.scaleTargetRef;
    if (!objs.some((o) => o.kind === t.kind && o.metadata.name === t.name)) err(`${id(h)}: scales ${t.kind}/${t.name}, which does not exist`);
    if (t.kind === "StatefulSet" && t.name === trainer.metadata.name) err(`${id(h)}: must not scale the trainer`);
  }
  if (byKind("HorizontalPodAutoscaler").length === 0) err("no HorizontalPodAutoscaler");
  const pdbs = byKind("PodDisruptionBudget");
  if (!pdbs.some((p) => labelsMatch(p.spec.selector.matchLabels, deployment.spec.template.metadata.labels))) {
    err("no PodDisruptionBudget selects the serving pods");
  }
  const monitors = byKind("ServiceMonitor");
  if (monitors.length === 0) err("no ServiceMonitor");
  for (const m of monitors) {
    const services = byKind("Service").filter((s) => labelsMatch(m.spec.selector.matchLabels, s.metadata.labels));
    if (services.length === 0) err(`${id(m)}: selects no Service`);
    for (const e of m.spec.endpoints) {
      if (!services.every((s) => s.spec.ports.some((p) => p.name === e.port))) err(`${id(m)}: endpoint port ${e.port} is not a port of its Services`);
    }
    const scraped = new Set(services.flatMap((s) => workloads(objs).filter((w) => labelsMatch(s.spec.selector, w.spec.template.metadata.labels)).map(id)));
    for (const w of workloads(objs)) if (!scraped.has(id(w))) err(`${id(m)}: does not scrape ${id(w)}`);
  }
  return errors;
}

async function allErrors(objs) {
  const errors = [];
  for (const o of objs) errors.push(...(await schemaErrors(o)).map((e) => `${id(o)}: ${e}`));
  return [...errors, ...loracleErrors(objs)];
}

// ---------------------------------------------------------------------------------------------

const overlays = fs.readdirSync(path.join(k8s, "overlays")).sort();
report(overlays.length >= 2, `overlays: ${overlays.join(", ")}`);
const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" }).status === 0;
let cpu = null;
for (const overlay of overlays) {
  const dir = path.join(k8s, "overlays", overlay);
  let objs;
  try {
    objs = renderKustomization(dir);
  } catch (e) {
    report(false, `${overlay}: renders`, e.message);
    continue;
  }
  report(true, `${overlay}: renders ${objs.length} objects (${objs.map(id).join(", ")})`);
  if (overlay === "cpu") cpu = objs;
  if (kubectl) {
    const out = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
    const theirs = YAML.parseAllDocuments(out.stdout).map((d) => d.toJS()).filter((o) => o);
    const mine = new Map(objs.map((o) => [id(o), JSON.stringify(canonical(o))]));
    const diff = theirs.filter((o) => mine.get(id(o)) !== JSON.stringify(canonical(o))).map(id);
    report(out.status === 0 && theirs.length === objs.length && diff.length === 0,
      `${overlay}: kubectl kustomize renders the same objects`, out.stderr || `differ: ${diff.join(", ")}`);
  }
  for (const o of objs) {
    const errors = await schemaErrors(o);
    report(errors.length === 0, `${overlay}: ${id(o)} matches the ${o.apiVersion} schema`, errors.join("\n"));
  }
  const errors = loracleErrors(objs);
  report(errors.length === 0, `${overlay}: loracle's requirements${server ? " (flags checked by the binary)" : ""}`, errors.join("\n"));
}
if (!kubectl) console.log("note  kubectl not installed: the renderer was not compared with kustomize");

// Each broken variant must be caught: the checks above can fail.
if (cpu) {
  const mutate = (f) => {
    const objs = clone(cpu);
    f(objs);
    return objs;
  };
  const find = (objs, kind, name) => objs.find((o) => o.kind === kind && (!name || o.metadata.name === name));
  const serving = (objs) => main(find(objs, "Deployment", "loracle"));
  const broken = {
    "a misspelt field": (o) => { serving(o).readinesProbe = serving(o).readinessProbe; delete serving(o).readinessProbe; },
    "a bad quantity": (o) => { serving(o).resources.requests.memory = "3 gigs"; },
    "threads above the CPU request": (o) => { serving(o).env.find((e) => e.name === "LORACLE_THREADS").value = "8"; },
    "a grace period shorter than the drain": (o) => { find(o, "Deployment", "loracle").spec.template.spec.terminationGracePeriodSeconds = 10; },
    "a serving replica that trains": (o) => { serving(o).env.find((e) => e.name === "LORACLE_TRAINING_WORKERS").value = "1"; },
    "two trainers": (o) => { find(o, "StatefulSet").spec.replicas = 2; },
    "a misspelt ServiceMonitor field": (o) => { find(o, "ServiceMonitor").spec.endpoints[0].intervall = "15s"; },
    "a ServiceMonitor that selects nothing": (o) => { find(o, "ServiceMonitor").spec.selector.matchLabels = { app: "nope" }; },
    "a Service port that is not the container's": (o) => { find(o, "Service", "loracle").spec.ports[0].targetPort = "grcp"; },
    "a store volume that is ReadWriteOnce": (o) => { find(o, "PersistentVolumeClaim").spec.accessModes = ["ReadWriteOnce"]; },
  };
  if (server) {
    broken["an environment variable that is no flag"] = (o) => { serving(o).env.push({ name: "LORACLE_THREDS", value: "4" }); };
    broken["a flag value the server refuses"] = (o) => { serving(o).env.find((e) => e.name === "LORACLE_STORE_POLL_S").value = "often"; };
  }
  for (const [what, f] of Object.entries(broken)) {
    const errors = await allErrors(mutate(f));
    report(errors.length > 0, `self-test: ${what} is caught${errors.length ? ` (${errors[0].slice(0, 100)})` : ""}`);
  }
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
