"""Generated code for proto/spool/v1/queue.proto: messages in `queue_pb2`, the stub in
`queue_pb2_grpc`. The other files here are written by ../../../generate.py; do not edit them."""
