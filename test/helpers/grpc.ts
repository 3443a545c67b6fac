/** gRPC client helpers for tests: promisified unary calls with deadlines, status decoding. */
import { credentials, type ChannelCredentials, type Client, type Metadata, type ServiceError } from '@grpc/grpc-js';

import { BadRequest, ErrorInfo, Status } from '../../lib/proto/google-rpc';

export const insecure: ChannelCredentials = credentials.createInsecure();

type UnaryMethod<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: { deadline: number },
  cb: (err: ServiceError | null, res?: Res) => void,
) => unknown;

/** Calls a generated client's unary method with a deadline. */
export function call<Req, Res>(
  client: Client,
  method: UnaryMethod<Req, Res>,
  req: Req,
  md: Metadata,
  timeoutMs = 10_000,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, req, md, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res as Res);
    });
  });
}

export interface DecodedStatus {
  code: number;
  message: string;
  reason: string | null;
  fieldViolations: { field: string; description: string }[];
}

/** Decodes grpc-status-details-bin of a failed call. */
export function decodeStatus(err: ServiceError): DecodedStatus {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  const out: DecodedStatus = { code: err.code, message: err.details, reason: null, fieldViolations: [] };
  if (!(raw instanceof Buffer)) return out;
  const st = Status.decode(raw);
  for (const d of st.details) {
    if (d.typeUrl.endsWith('/google.rpc.ErrorInfo')) out.reason = ErrorInfo.decode(d.value).reason;
    if (d.typeUrl.endsWith('/google.rpc.BadRequest')) {
      out.fieldViolations.push(
        ...BadRequest.decode(d.value).fieldViolations.map((v) => ({ field: v.field, description: v.description })),
      );
    }
  }
  return out;
}

export async function expectGrpcError(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail');
}
