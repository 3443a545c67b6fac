/**
 * Package grpc.reflection.v1 (proto/third_party/grpc/reflection/v1/reflection.proto). Generated code,
 * re-exported. (v1alpha has the same messages; lib/src/reflection.ts serves both paths with these.)
 */
export * from '../gen/grpc/reflection/v1/reflection';
