"""maskfarm's gRPC front end: validation, job store writes, watch streams. Never imports torch."""
