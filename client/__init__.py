"""maskfarm's client library and CLI. Needs only grpcio and protobuf (+ numpy/pillow)."""
