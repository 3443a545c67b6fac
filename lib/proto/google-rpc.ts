/**
 * Package google.rpc (proto/third_party/google/rpc/*.proto): the rich error model every vop server
 * returns (Status with ErrorInfo and BadRequest details). Generated code, re-exported by name: each
 * generated file also exports its own protobufPackage and helper types.
 */
export { Code } from '../gen/google/rpc/code';
export {
  BadRequest,
  BadRequest_FieldViolation,
  DebugInfo,
  ErrorInfo,
  ErrorInfo_MetadataEntry,
  Help,
  Help_Link,
  LocalizedMessage,
  PreconditionFailure,
  PreconditionFailure_Violation,
  QuotaFailure,
  QuotaFailure_Violation,
  RequestInfo,
  ResourceInfo,
  RetryInfo,
} from '../gen/google/rpc/error_details';
export { Status } from '../gen/google/rpc/status';
