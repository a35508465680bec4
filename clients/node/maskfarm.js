'use strict';
// maskfarm's gRPC API from Node.js, loaded at run time from the repository's .proto.
//
// Messages are plain objects with the .proto's own field names (keepCase: job_id,
// include_masks), enums as their names ('JOB_STATE_SUCCEEDED'), 64-bit integers as
// strings, bytes as Buffers, unset fields as their defaults (unset messages as null),
// and a WatchJobEvent says which of its oneof members it holds in `event` ('job' or
// 'frame'). proto3 `optional` fields show their synthetic oneof too (_threshold: 'threshold').

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_PATH = path.join(__dirname, '..', '..', 'protos', 'maskfarm', 'v1', 'segmentation.proto');
const DEFAULT_TARGET = 'localhost:50051';
const DEFAULT_TIMEOUT_S = 30;
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024; // the server's default limit, both ways

const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { Segmentation } = grpc.loadPackageDefinition(packageDefinition).maskfarm.v1;

function deadlineIn(seconds) {
  return seconds == null ? Infinity : new Date(Date.now() + seconds * 1000);
}

class MaskfarmClient {
  // target: HOST:PORT (default $MASKFARM_TARGET, else localhost:50051); timeoutS: the
  // deadline of each unary call; token: sent as 'authorization: Bearer <token>' (default
  // $MASKFARM_TOKEN); credentials: grpc.credentials for TLS (default plaintext).
  constructor(target = process.env.MASKFARM_TARGET || DEFAULT_TARGET, {
    timeoutS = DEFAULT_TIMEOUT_S,
    token = process.env.MASKFARM_TOKEN,
    credentials = grpc.credentials.createInsecure(),
  } = {}) {
    this.timeoutS = timeoutS;
    this.metadata = new grpc.Metadata();
    if (token) this.metadata.set('authorization', `Bearer ${token}`);
    this.stub = new Segmentation(target, credentials, {
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    });
  }

  // SubmitJobRequest -> Job (QUEUED).
  submitJob(request) {
    return this.#unary('SubmitJob', request);
  }

  // -> GetJobResponse; with includeMasks, the finished frames from firstFrame on.
  getJob(jobId, { includeMasks = false, firstFrame = 0, maxFrames = 0 } = {}) {
    return this.#unary('GetJob', {
      job_id: jobId, include_masks: includeMasks, first_frame: firstFrame, max_frames: maxFrames,
    });
  }

  // -> Job.
  cancelJob(jobId) {
    return this.#unary('CancelJob', { job_id: jobId });
  }

  // Async iterator over the job's WatchJobEvents; ends after the terminal Job. No deadline
  // unless timeoutS is given: a watch lasts as long as its job.
  async* watchJob(jobId, { fromFrame = 0, timeoutS = null } = {}) {
    const call = this.stub.WatchJob({ job_id: jobId, from_frame: fromFrame }, this.metadata,
      { deadline: deadlineIn(timeoutS) });
    try {
      yield* call;
    } finally {
      call.cancel(); // the caller stopped early: end the stream (no-op once it has ended)
    }
  }

  close() {
    this.stub.close();
  }

  #unary(method, request) {
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadata, { deadline: deadlineIn(this.timeoutS) },
        (error, response) => (error ? reject(error) : resolve(response)));
    });
  }
}

module.exports = { MaskfarmClient, grpc };
