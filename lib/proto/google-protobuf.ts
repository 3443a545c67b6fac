/**
 * Package google.protobuf: the well-known types vop's messages use (Any, Duration, Timestamp).
 * Generated code, re-exported by name: each generated file also exports its own protobufPackage and
 * helper types.
 */
export { Any } from '../gen/google/protobuf/any';
export { Duration } from '../gen/google/protobuf/duration';
export { Timestamp } from '../gen/google/protobuf/timestamp';
