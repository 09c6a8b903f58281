// Score rows with an exported shipyard model in a web page (or Node), with onnxruntime-web.
//
//   import * as ort from "onnxruntime-web";            // or from your copy of its dist/
//   import { EdgeModel } from "./run.mjs";
//   const model = await EdgeModel.load(ort, "./");    // this export's folder, as a URL
//   const answers = await model.predict([{ transaction_amount: 12.5, ... }]);
//
// Every file is checked against the SHA-256 in manifest.json before the model loads. Each
// answer is shaped as the server shapes it: score, label and threshold (binary), label, score
// and probabilities (multiclass), value (regression). A value the server would refuse is an
// Error naming the row and the column, so nothing is answered here that it could not log.
//
// This file is shipyard's optimize/runner.mjs, copied into browser exports as run.mjs; it
// needs nothing but onnxruntime-web, given to `load`.

const ARRAYS = {
  "<f4": ["float32", (n) => new Float32Array(n)],
  "<f8": ["float64", (n) => new Float64Array(n)],
  "<i8": ["int64", (n) => new BigInt64Array(n)],
  "<i4": ["int32", (n) => new Int32Array(n)],
  "|b1": ["bool", (n) => new Uint8Array(n)],
  "|O": ["string", (n) => new Array(n).fill("")],
};

export class ExportCorrupted extends Error {}

async function sha256(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new ExportCorrupted(`${url} could not be read (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

function problem(value, kind) {
  if (kind === "string") return typeof value === "string" ? null : "must be a string";
  if (kind === "bool") return typeof value === "boolean" ? null : "must be true or false";
  if (typeof value !== "number") return "must be a number";
  if ((kind === "int64" || kind === "int32") && !Number.isInteger(value)) return "must be an integer";
  if (kind === "int32" && (value < -(2 ** 31) || value >= 2 ** 31)) return "is out of the 32-bit integer range";
  return null;
}

export class EdgeModel {
  constructor(ort, session, spec, manifest) {
    this.ort = ort;
    this.session = session;
    this.spec = spec;
    this.manifest = manifest;
    this.task = spec.task;
    this.classes = spec.classes;
    this.threshold = spec.threshold ?? 0.5;
  }

  // `base`: the export folder's URL; `read(name)` may replace fetch (Node: read the file).
  static async load(ort, base = "./", { read } = {}) {
    const root = base.endsWith("/") ? base : `${base}/`;
    const get = read ?? ((name) => fetchBytes(root + name));
    const text = (bytes) => JSON.parse(new TextDecoder().decode(bytes));
    const manifest = text(await get("manifest.json"));
    const files = {};
    for (const name of ["model.onnx", "signature.json"]) {
      const bytes = await get(name);
      const expected = manifest.files[name]?.sha256;
      const actual = await sha256(bytes);
      if (actual !== expected) {
        throw new ExportCorrupted(
          `${name} does not match manifest.json (sha256 ${actual}, expected ${expected}): ` +
            "the export was changed or damaged; export it again",
        );
      }
      files[name] = bytes;
    }
    const session = await ort.InferenceSession.create(files["model.onnx"]);
    return new EdgeModel(ort, session, text(files["signature.json"]), manifest);
  }

  get name() {
    return this.spec.name;
  }

  get version() {
    return this.spec.version;
  }

  columnsOf(rows) {
    const out = {};
    for (const { name, type, nullable } of this.spec.signature.columns) {
      out[name] = rows.map((row, index) => {
        let value = row[name];
        if (value === undefined && !nullable) throw new Error(`row ${index} has no '${name}'`);
        if (value === undefined || value === null || Number.isNaN(value)) {
          if (!nullable) throw new Error(`row ${index}: '${name}' may not be null`);
          if (type.startsWith("float")) return NaN;
          if (type === "string") return "";
          throw new Error(`row ${index}: '${name}' has no value`);
        }
        const why = problem(value, type);
        if (why) throw new Error(`row ${index}: '${name}' ${why}, not ${JSON.stringify(value)}`);
        return value;
      });
    }
    return out;
  }

  feeds(columns, n) {
    const plan = this.spec.plan;
    const feeds = {};
    const fill = (dtype, values) => {
      const [kind, make] = ARRAYS[dtype];
      const data = make(values.length);
      values.forEach((v, i) => {
        data[i] = kind === "int64" ? BigInt(v) : kind === "bool" ? (v ? 1 : 0) : v;
      });
      return [kind, data];
    };
    if (plan.mode === "matrix") {
      const spec = plan.inputs[0];
      const k = plan.order.length;
      const values = new Array(n * k);
      plan.order.forEach((column, j) => {
        columns[column].forEach((v, i) => {
          values[i * k + j] = v;
        });
      });
      const [kind, data] = fill(spec.dtype, values);
      feeds[spec.name] = new this.ort.Tensor(kind, data, [n, k]);
      return feeds;
    }
    for (const spec of plan.inputs) {
      const [kind, data] = fill(spec.dtype, columns[spec.name]);
      feeds[spec.name] = new this.ort.Tensor(kind, data, spec.rank === 2 ? [n, 1] : [n]);
    }
    return feeds;
  }

  async raw(rows) {
    const n = rows.length;
    const results = await this.session.run(this.feeds(this.columnsOf(rows), n));
    const output = results[this.spec.output];
    const values = Array.from(output.data, Number);
    if (this.task === "regression") return values;
    const width = output.dims.length > 1 ? output.dims[1] : 1;
    const matrix = [];
    for (let i = 0; i < n; i++) {
      const row = values.slice(i * width, (i + 1) * width);
      matrix.push(width === 1 ? [1 - row[0], row[0]] : row);
    }
    return matrix;
  }

  async predict(rows) {
    if (rows.length === 0) return [];
    const raw = await this.raw(rows);
    if (this.task === "regression") return raw.map((value) => ({ value }));
    const classes = this.classes ?? raw[0].map((_, i) => i);
    if (this.task === "binary") {
      return raw.map((p) => ({
        score: p[1],
        label: p[1] >= this.threshold ? classes[1] : classes[0],
        threshold: this.threshold,
      }));
    }
    return raw.map((p) => {
      const best = p.indexOf(Math.max(...p));
      return {
        label: classes[best],
        score: p[best],
        probabilities: Object.fromEntries(classes.map((c, i) => [String(c), p[i]])),
      };
    });
  }
}
