// Reference runtime: TensorFlow.js (pure-JS CPU backend) runs a graph model on inputs from a JSON
// file and writes the requested node outputs. Usage: node run.js MODEL.json INPUTS.json OUT.json [node ...]
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfc = require('@tensorflow/tfjs-converter');
const fs = require('fs');
const path = require('path');
async function main() {
  const [modelPath, inputsPath, outPath, ...nodes] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const model = JSON.parse(fs.readFileSync(modelPath));
  const specs = []; const buffers = [];
  for (const group of model.weightsManifest) {
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelPath), p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const gm = await tfc.loadGraphModel(tf.io.fromMemory({modelTopology: model.modelTopology, weightSpecs: specs, weightData}));
  const inputs = JSON.parse(fs.readFileSync(inputsPath));  // {name, dtype, shape, cases: [[flat values], ...]}
  const results = [];
  for (const values of inputs.cases) {
    const x = tf.tensor(values, inputs.shape, inputs.dtype);
    const feed = {}; feed[inputs.name] = x;
    const outs = gm.execute(feed, nodes.length ? nodes : undefined);
    const list = Array.isArray(outs) ? outs : [outs];
    results.push(list.map(t => ({shape: t.shape, values: Array.from(t.dataSync())})));
  }
  fs.writeFileSync(outPath, JSON.stringify(results));
}
main().catch(e => { console.error(e); process.exit(1); });
