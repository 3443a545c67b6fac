/** Package grpc.health.v1 (proto/third_party/grpc/health/v1/health.proto). Generated code, re-exported. */
export * from '../gen/grpc/health/v1/health';
