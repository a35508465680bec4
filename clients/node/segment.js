#!/usr/bin/env node
'use strict';
// node segment.js FRAME... --prompt P [--prompt P2 ...] [--union] [--target HOST:PORT] [--out DIR]
//
// Submits image files as one job, streams the masks back as each frame finishes and
// writes them as OUT/<prompt-slug>/<frame-stem>.png (union/ for the union), the names
// `maskfarm segment` uses. The frames travel in one message, so together they must stay
// under the server's limit (64 MiB by default). Exit codes: 0 done, 1 the job failed or
// the server could not be reached, 2 bad arguments, unreadable files or an invalid
// request. Ctrl-C cancels the job.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { MaskfarmClient, grpc } = require('./maskfarm');

const USAGE = 'usage: node segment.js FRAME... --prompt P [--prompt P2 ...] [--union] [--target HOST:PORT] [--out DIR]';

// 'Red car!' -> 'red-car'; a prompt with no letters or digits becomes 'prompt'.
function promptSlug(prompt) {
  return prompt.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'prompt';
}

// One folder per prompt, in order, unique (a repeated slug gets -2, -3, ...); then 'union'.
function promptFolders(prompts, union) {
  const taken = new Map(union ? [['union', 1]] : []);
  const folders = prompts.map((prompt) => {
    const slug = promptSlug(prompt);
    const count = (taken.get(slug) || 0) + 1;
    taken.set(slug, count);
    return count === 1 ? slug : `${slug}-${count}`;
  });
  return union ? [...folders, 'union'] : folders;
}

// Written whole, then renamed: never a half-written mask.
function writeFileWhole(file, data) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const partial = `${file}.partial`;
  fs.writeFileSync(partial, data);
  fs.renameSync(partial, file);
}

function parseCommandLine() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      prompt: { type: 'string', short: 'p', multiple: true },
      union: { type: 'boolean', default: false },
      target: { type: 'string', default: process.env.MASKFARM_TARGET || 'localhost:50051' },
      out: { type: 'string', short: 'o', default: 'masks' },
    },
  });
  if (positionals.length === 0 || !values.prompt) throw new Error('at least one FRAME and one --prompt are needed');
  return { frames: positionals, ...values };
}

async function segment({ frames, prompt: prompts, union, target, out }) {
  const request = {
    frames: frames.map((file) => ({ name: path.basename(file), data: fs.readFileSync(file) })),
    prompts,
    params: { union_mask: union },
    format: 'OUTPUT_FORMAT_PNG8',
    request_id: crypto.randomUUID(),
  };
  const folders = promptFolders(prompts, union);
  const client = new MaskfarmClient(target);
  const job = await client.submitJob(request);
  console.error(`job ${job.id}: ${frames.length} frames x ${prompts.length} prompts`);
  process.once('SIGINT', () => {
    console.error(`cancelling job ${job.id}`);
    client.cancelJob(job.id).finally(() => process.exit(130));
  });

  let last = job;
  for await (const event of client.watchJob(job.id)) {
    if (event.event === 'frame') {
      const stem = path.parse(frames[event.frame.frame_index]).name;
      event.frame.masks.forEach((mask, i) => writeFileWhole(path.join(out, folders[i], `${stem}.png`), mask.data));
    } else {
      last = event.job;
      console.error(`job ${last.id}: ${last.state}, ${last.progress.done_frames}/${last.progress.total_frames} frames`);
    }
  }
  client.close();
  if (last.state !== 'JOB_STATE_SUCCEEDED') {
    const reason = last.error ? `: ${last.error.code} ${last.error.message}` : '';
    throw new Error(`job ${last.id} ended ${last.state}${reason}`);
  }
}

// An unreadable frame file, or a request the server refused as invalid.
function isFixableInput(error) {
  return ['ENOENT', 'EISDIR', 'EACCES'].includes(error.code) || error.code === grpc.status.INVALID_ARGUMENT;
}

async function main() {
  let options;
  try {
    options = parseCommandLine();
  } catch (error) {
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  try {
    await segment(options);
    return 0;
  } catch (error) {
    console.error(`segment.js: ${error.message}`);
    return isFixableInput(error) ? 2 : 1;
  }
}

main().then((code) => process.exit(code));
