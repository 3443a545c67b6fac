#!/usr/bin/env node
/**
 * vopctl: the operator CLI of vop-controller.
 *
 *   vopctl apply -f FILE [--dry-run]          create or update Links and LinkPolicies (YAML, many documents; - = stdin)
 *   vopctl get links|agents|policies [NAME]   table; -o json|yaml|wide|name; -l SELECTOR; --agent NAME (links)
 *   vopctl describe link|agent|policy NAME    spec, conditions, per-device stats
 *   vopctl delete link|policy NAME | -f FILE  [--resource-version RV]
 *   vopctl watch links|agents                 snapshot, then changes (-o json: one object per line)
 *   vopctl console LINK [--device D] [--write]  attach to a console through the controller (Ctrl-] detaches)
 *   vopctl cordon|uncordon|drain AGENT
 *   vopctl status                             each replica: who leads, the store and its identity
 *   vopctl adopt [AGENT...] [--dry-run]       after a lost store: take over the links agents in a conflict run
 *
 * and, for any vop server (controller or agent), without grpcurl or .proto files (api-schema.ts):
 *
 *   vopctl list [SERVICE]                     the services in the API schema, or a service's methods
 *   vopctl describe SYMBOL                    a service, method, message, enum or field as proto source
 *   vopctl call SERVICE/METHOD [-d JSON|@FILE|@-] [--emit-defaults]   one unary or server-streaming call
 *
 * Server: --server, $VOPCTL_SERVER, the config file, else the controller's admin Unix
 * socket unix:/run/vop/controller.sock (a path or unix:PATH is a socket, HOST:PORT is
 * TCP, with --tls-* for mutual TLS); several controller replicas comma-separated (calls go
 * to the leader, through a failover: connection.ts). Exit codes:
 * see exit-codes.ts and docs/controller.md.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';

import type {
  AttachConsoleRequest,
  AttachConsoleResponse,
  GetLinkStatsResponse,
  WatchAgentsResponse,
  WatchLinksResponse,
} from '../../../lib/proto/controller';
import {
  AgentPhase,
  ConditionStatus,
  LinkPhase,
  DeviceKind,
  WatchEventType,
  type Agent,
  type Condition,
  type Link,
  type LinkPolicy,
} from '../../../lib/proto/types';
import { parseSelector, SelectorSyntaxError } from '../../../lib/src/selector';
import { VOP_VERSION } from '../../../lib/src/version';
import { ApiSchema } from './api-schema';
import { connect, DEFAULT_TIMEOUT_MS, resolveTarget, toCliError, type Connection } from './connection';
import { CliError, EXIT } from './exit-codes';
import { callMethod, encodeRequest, readRequestText } from './generic-call';
import { parseManifests, readManifestText } from './manifest';
import { age, enumName, render, table, toJson, type Kind, type OutputFormat } from './output';

const USAGE = `usage: vopctl [--server unix:PATH|HOST:PORT[,...]] [--tls-ca F --tls-cert F --tls-key F] [--timeout SECONDS] COMMAND
commands:
  apply -f FILE [--dry-run]
  get links|agents|policies [NAME] [-o table|wide|json|yaml|name] [-l SELECTOR] [--agent NAME]
  describe link|agent|policy NAME
  delete link|policy NAME [--resource-version RV] | delete -f FILE
  watch links|agents [-l SELECTOR] [-o json]
  console LINK [--device NAME] [--write]
  cordon|uncordon|drain AGENT
  status                              each replica given: who leads, the store and its identity
  adopt [AGENT...] [--dry-run]        agents in a store identity conflict: take over the links they run
generic, for the controller or an agent (--server unix:/run/vop/agent.sock):
  list [SERVICE]
  describe SYMBOL                     e.g. vop.controller.v1.ControllerService, vop.types.v1.LinkSpec
  call SERVICE/METHOD [-d JSON|@FILE|@-] [--emit-defaults]
`;

const out = (s: string): boolean => process.stdout.write(s);

const RESOURCE_WORDS = ['link', 'links', 'agent', 'agents', 'policy', 'policies', 'linkpolicy', 'linkpolicies'];

/** True for the resource types of get/describe/delete (anything else after describe is a schema symbol). */
function isResourceWord(word: string): boolean {
  return RESOURCE_WORDS.includes(word);
}

function kindOf(word: string | undefined): Kind {
  switch (word) {
    case 'link':
    case 'links':
      return 'links';
    case 'agent':
    case 'agents':
      return 'agents';
    case 'policy':
    case 'policies':
    case 'linkpolicy':
    case 'linkpolicies':
      return 'policies';
    default:
      throw new CliError(
        `unknown resource type ${JSON.stringify(word ?? '')}: use links, agents or policies`,
        EXIT.USAGE,
      );
  }
}

function checkSelector(sel: string | undefined): string {
  if (sel === undefined) return '';
  try {
    parseSelector(sel);
  } catch (err) {
    if (err instanceof SelectorSyntaxError) throw new CliError(`invalid selector: ${err.message}`, EXIT.INVALID);
    throw err;
  }
  return sel;
}

function formatOf(o: string | undefined): OutputFormat {
  const f = o ?? 'table';
  if (!['table', 'wide', 'json', 'yaml', 'name'].includes(f))
    throw new CliError(`-o must be one of table, wide, json, yaml, name (got ${f})`, EXIT.USAGE);
  return f as OutputFormat;
}

async function listAll(
  conn: Connection,
  kind: Kind,
  selector: string,
  agent: string,
): Promise<(Link | Agent | LinkPolicy)[]> {
  const items: (Link | Agent | LinkPolicy)[] = [];
  let pageToken = '';
  do {
    if (kind === 'links') {
      const r = await conn.unary(
        (c) => c.listLinks.bind(c),
        {
          labelSelector: selector,
          agent,
          phase: LinkPhase.LINK_PHASE_UNSPECIFIED,
          pageSize: 1000,
          pageToken,
        },
        { read: true },
      );
      items.push(...r.links);
      pageToken = r.nextPageToken;
    } else if (kind === 'agents') {
      const r = await conn.unary(
        (c) => c.listAgents.bind(c),
        {
          labelSelector: selector,
          rack: '',
          phase: AgentPhase.AGENT_PHASE_UNSPECIFIED,
          pageSize: 1000,
          pageToken,
        },
        { read: true },
      );
      items.push(...r.agents);
      pageToken = r.nextPageToken;
    } else {
      const r = await conn.unary(
        (c) => c.listPolicies.bind(c),
        {
          labelSelector: selector,
          pageSize: 1000,
          pageToken,
        },
        { read: true },
      );
      items.push(...r.policies);
      pageToken = r.nextPageToken;
    }
  } while (pageToken !== '');
  return items;
}

async function getOne(conn: Connection, kind: Kind, name: string): Promise<Link | Agent | LinkPolicy> {
  const obj =
    kind === 'links'
      ? (await conn.unary((c) => c.getLink.bind(c), { name }, { read: true })).link
      : kind === 'agents'
        ? (await conn.unary((c) => c.getAgent.bind(c), { name }, { read: true })).agent
        : (await conn.unary((c) => c.getPolicy.bind(c), { name }, { read: true })).policy;
  if (!obj) throw new CliError(`the controller returned no object for ${kind} ${name}`, EXIT.ERROR);
  return obj;
}

function conditionsTable(cs: readonly Condition[]): string {
  if (cs.length === 0) return '  (none yet)\n';
  return table([
    ['  TYPE', 'STATUS', 'REASON', 'AGE', 'MESSAGE'],
    ...cs.map((c) => [
      `  ${c.type}`,
      enumName(ConditionStatus, c.status, 'CONDITION_STATUS_'),
      c.reason,
      age(c.lastTransitionTime),
      c.message,
    ]),
  ]);
}

async function describe(conn: Connection, kind: Kind, name: string): Promise<void> {
  const obj = await getOne(conn, kind, name);
  const json = toJson(kind, obj) as { meta?: unknown; spec?: unknown; status?: { conditions?: unknown } };
  const YAML = (await import('yaml')).default;
  const block = (v: unknown): string => `${YAML.stringify(v).trimEnd().replace(/^/gm, '  ')}\n`;
  out(`Name:        ${name}\nKind:        ${kind === 'links' ? 'Link' : kind === 'agents' ? 'Agent' : 'LinkPolicy'}\n`);
  out(`Meta:\n${block(json.meta ?? {})}`);
  out(`Spec:\n${block(json.spec ?? {})}`);
  const status = { ...(json.status ?? {}) };
  delete status.conditions;
  out(`Status:\n${block(status)}`);
  out(`Conditions:\n${conditionsTable(obj.status?.conditions ?? [])}`);
  if (kind === 'links') {
    out('Stats:\n');
    let stats: GetLinkStatsResponse;
    try {
      stats = await conn.unary((c) => c.getLinkStats.bind(c), { name }, { read: true });
    } catch (err) {
      out(`  unavailable: ${(err as Error).message}\n`);
      return;
    }
    for (const ep of stats.endpoints) {
      out(
        `  ${ep.agent} (${enumName({ 1: 'device', 2: 'driver' }, ep.role, '')}):${ep.error ? ` error: ${ep.error}` : ''}\n`,
      );
      for (const d of ep.devices) {
        out(`    device ${d.device} (${enumName(DeviceKind, d.kind, 'DEVICE_KIND_').toLowerCase()})\n`);
        const rows = [['      QUEUE', 'DIR', 'BUFFERS', 'BYTES', 'NOTIFY-SENT', 'SUPPRESSED', 'BROKEN']];
        for (const q of d.queues)
          rows.push([
            `      ${q.index}:${q.name}`,
            q.direction,
            String(q.buffers),
            String(q.bytes),
            String(q.notificationsSent),
            String(q.notificationsSuppressed),
            q.broken ? `yes (${q.brokenReason})` : 'no',
          ]);
        out(table(rows));
        const counters = Object.entries(d.counters);
        if (counters.length > 0) out(`      counters: ${counters.map(([k, v]) => `${k}=${String(v)}`).join(' ')}\n`);
      }
    }
  }
}

async function watch(conn: Connection, kind: Kind, selector: string, format: OutputFormat): Promise<void> {
  if (kind === 'policies') throw new CliError('watch supports links and agents', EXIT.USAGE);
  const stream =
    kind === 'links'
      ? (await conn.preferred()).watchLinks({ labelSelector: selector, agent: '', updatesOnly: false })
      : (await conn.preferred()).watchAgents({ labelSelector: selector, updatesOnly: false });
  process.on('SIGINT', () => stream.cancel());
  await new Promise<void>((resolve, reject) => {
    let header = false;
    stream.on('data', (ev: WatchLinksResponse | WatchAgentsResponse) => {
      const obj = 'link' in ev ? ev.link : ev.agent;
      const type = enumName(WatchEventType, ev.type, 'WATCH_EVENT_TYPE_');
      if (format === 'json') {
        out(
          JSON.stringify({ type, resourceVersion: ev.resourceVersion, object: obj ? toJson(kind, obj) : null }) + '\n',
        );
        return;
      }
      if (!obj) {
        if (ev.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED)
          out(`# synced at resourceVersion ${ev.resourceVersion}\n`);
        return;
      }
      const lines = render(kind, [obj], 'table').split('\n');
      if (!header) {
        out(`EVENT      ${lines[0] ?? ''}\n`);
        header = true;
      }
      out(`${type.padEnd(10)} ${lines[1] ?? ''}\n`);
    });
    stream.on('error', (err: ServiceError) =>
      err.code === GrpcStatus.CANCELLED ? resolve() : reject(toCliError(err, conn.server)),
    );
    stream.on('end', () => resolve());
  });
}

async function consoleAttach(conn: Connection, link: string, device: string, write: boolean): Promise<void> {
  const call = (await conn.preferred()).attachConsole();
  const stdin = process.stdin;
  await new Promise<void>((resolve, reject) => {
    const restore = (): void => {
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
    };
    call.on('data', (m: AttachConsoleResponse) => {
      if (m.msg?.$case === 'attached') {
        process.stderr.write(
          `vopctl: attached to ${link}/${device || 'console'} on ${m.msg.value.agent}${m.msg.value.writer ? ' (writer)' : ' (read-only)'}; Ctrl-] detaches\n`,
        );
      } else if (m.msg?.$case === 'output') process.stdout.write(m.msg.value);
    });
    call.on('error', (err: ServiceError) => {
      restore();
      if (err.code === GrpcStatus.CANCELLED) resolve();
      else reject(toCliError(err, conn.server));
    });
    call.on('end', () => {
      restore();
      resolve();
    });
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', (chunk: Buffer) => {
      if (chunk.includes(0x1d)) {
        call.end();
        restore();
        resolve();
        return;
      }
      if (write) call.write({ msg: { $case: 'input', value: chunk } } satisfies AttachConsoleRequest);
    });
    stdin.on('end', () => call.end());
    call.write({
      msg: { $case: 'open', value: { link, device, write, replayBytes: 4096 } },
    } satisfies AttachConsoleRequest);
  });
}

/** One line per replica given; exit 6 when none answered. */
async function status(conn: Connection): Promise<number> {
  const rows = [['SERVER', 'ROLE', 'LEADER', 'STORE', 'CLUSTER-ID', 'GENERATION', 'REVISION', 'CONFLICTS']];
  let answered = 0;
  for (const { server, status: st, error } of await conn.statuses()) {
    if (!st) {
      rows.push([server, 'unreachable', '', '', '', '', '', '']);
      process.stderr.write(`vopctl: ${error ? toCliError(error, server).message : `${server}: no answer`}\n`);
      continue;
    }
    answered++;
    rows.push([
      server,
      st.leader ? 'leader' : 'follower',
      st.leader ? st.replica : st.leaderAddress || '(none)',
      st.storeKind,
      st.storeIdentity?.clusterId ?? '',
      String(st.storeIdentity?.generation ?? 0n),
      String(st.revision),
      st.leader ? String(st.agentsInConflict) : '',
    ]);
  }
  out(table(rows));
  return answered > 0 ? EXIT.OK : EXIT.UNAVAILABLE;
}

/** AdoptAgents; exit 5 when a named agent could not be adopted. */
async function adopt(conn: Connection, agents: string[], dryRun: boolean): Promise<number> {
  const r = await conn.unary((c) => c.adoptAgents.bind(c), { agents, dryRun });
  if (r.agents.length === 0) {
    out('no agent is in a store identity conflict\n');
    return EXIT.OK;
  }
  let failed = 0;
  for (const a of r.agents) {
    if (a.error !== '') {
      failed++;
      process.stderr.write(`vopctl: agent/${a.agent} not adopted: ${a.error}\n`);
      continue;
    }
    out(
      `agent/${a.agent} adopted${dryRun ? ' (dry run)' : ''}: ${a.linksCreated.length} link(s) created, ${a.linksUpdated.length} updated, ${a.linksUnchanged.length} unchanged${a.linksCreated.length + a.linksUpdated.length > 0 ? ` (${[...a.linksCreated, ...a.linksUpdated].join(', ')})` : ''}\n`,
    );
  }
  return failed > 0 ? EXIT.CONFLICT : EXIT.OK;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        server: { type: 'string', short: 's' },
        'tls-ca': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        timeout: { type: 'string' },
        filename: { type: 'string', short: 'f' },
        output: { type: 'string', short: 'o' },
        selector: { type: 'string', short: 'l' },
        agent: { type: 'string' },
        device: { type: 'string' },
        write: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        'resource-version': { type: 'string' },
        data: { type: 'string', short: 'd' },
        'emit-defaults': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new CliError(`${(err as Error).message}\n${USAGE}`, EXIT.USAGE);
  }
  const { values, positionals } = parsed;
  if (values.version) {
    out(`vopctl ${VOP_VERSION}\n`);
    return EXIT.OK;
  }
  const [cmd, ...args] = positionals;
  if (values.help || cmd === undefined || cmd === 'help') {
    out(USAGE);
    return values.help || cmd === 'help' ? EXIT.OK : EXIT.USAGE;
  }
  const timeoutSec = values.timeout === undefined ? DEFAULT_TIMEOUT_MS / 1000 : Number(values.timeout);
  if (!Number.isFinite(timeoutSec) || timeoutSec <= 0)
    throw new CliError('--timeout must be a positive number of seconds', EXIT.USAGE);
  const format = formatOf(values.output);
  const selector = checkSelector(values.selector);
  const flags = {
    server: values.server,
    tlsCa: values['tls-ca'],
    tlsCert: values['tls-cert'],
    tlsKey: values['tls-key'],
    timeoutMs: timeoutSec * 1000,
  };

  // The generic commands work from the schema (proto/vop.binpb); only call dials, any server.
  if (cmd === 'list') {
    const schema = ApiSchema.load();
    if (args[0] === undefined)
      out(
        schema
          .serviceNames()
          .map((n) => `${n}\n`)
          .join(''),
      );
    else {
      const service = schema.resolveService(args[0]);
      out(
        schema
          .methodNames(service)
          .map((m) => `${service}.${m}\n`)
          .join(''),
      );
    }
    return EXIT.OK;
  }
  if (cmd === 'describe' && args[0] !== undefined && !isResourceWord(args[0])) {
    out(ApiSchema.load().describe(args[0]));
    return EXIT.OK;
  }
  if (cmd === 'call') {
    if (args[0] === undefined) throw new CliError('call needs SERVICE/METHOD (vopctl list shows them)', EXIT.USAGE);
    const method = ApiSchema.load().resolveMethod(args[0]);
    // The request is checked before anything is dialled: a bad one sends nothing.
    const request = encodeRequest(
      method.input,
      readRequestText(values.data, () => readFileSync(0, 'utf8')),
    );
    const abort = new AbortController();
    if (method.responseStream) process.once('SIGINT', () => abort.abort());
    await callMethod(resolveTarget(flags), method, request, {
      timeoutMs: method.responseStream && values.timeout === undefined ? undefined : timeoutSec * 1000,
      emitDefaults: values['emit-defaults'] ?? false,
      out,
      signal: abort.signal,
    });
    return EXIT.OK;
  }

  // Parse input files before connecting: a bad file changes nothing.
  const manifests =
    values.filename !== undefined && (cmd === 'apply' || cmd === 'delete')
      ? parseManifests(readManifestText(values.filename), values.filename)
      : undefined;
  if ((cmd === 'apply' || (cmd === 'delete' && args.length === 0)) && !manifests)
    throw new CliError(`${cmd} needs -f FILE`, EXIT.USAGE);

  const conn = connect(flags);
  try {
    switch (cmd) {
      case 'apply': {
        for (const m of manifests ?? []) {
          if (m.kind === 'Link') {
            const r = await conn.unary(
              (c) => c.applyLink.bind(c),
              { link: m.link, dryRun: values['dry-run'] ?? false },
              { idempotent: true },
            );
            out(
              `link/${r.link?.meta?.name ?? ''} ${r.changed ? (r.link?.meta?.generation === 1n ? 'created' : 'configured') : 'unchanged'}${values['dry-run'] ? ' (dry run)' : ''}\n`,
            );
          } else {
            const r = await conn.unary(
              (c) => c.applyPolicy.bind(c),
              { policy: m.policy, dryRun: values['dry-run'] ?? false },
              { idempotent: true },
            );
            out(
              `policy/${r.policy?.meta?.name ?? ''} ${r.changed ? (r.policy?.meta?.generation === 1n ? 'created' : 'configured') : 'unchanged'}${values['dry-run'] ? ' (dry run)' : ''}\n`,
            );
          }
        }
        return EXIT.OK;
      }
      case 'get': {
        const kind = kindOf(args[0]);
        const items =
          args[1] !== undefined
            ? [await getOne(conn, kind, args[1])]
            : await listAll(conn, kind, selector, values.agent ?? '');
        out(render(kind, items, format));
        if (items.length === 0 && (format === 'table' || format === 'wide'))
          process.stderr.write(`No ${kind} found.\n`);
        return EXIT.OK;
      }
      case 'describe': {
        const kind = kindOf(args[0]);
        if (args[1] === undefined) throw new CliError('describe needs a NAME', EXIT.USAGE);
        await describe(conn, kind, args[1]);
        return EXIT.OK;
      }
      case 'delete': {
        const rv = values['resource-version'] ?? '';
        const targets: [Kind, string][] = manifests
          ? manifests.map((m) =>
              m.kind === 'Link' ? ['links', m.link.meta?.name ?? ''] : ['policies', m.policy.meta?.name ?? ''],
            )
          : [[kindOf(args[0]), args[1] ?? '']];
        for (const [kind, name] of targets) {
          if (name === '') throw new CliError('delete needs a NAME', EXIT.USAGE);
          if (kind === 'agents') await conn.unary((c) => c.deleteAgent.bind(c), { name, force: false });
          else if (kind === 'links') await conn.unary((c) => c.deleteLink.bind(c), { name, resourceVersion: rv });
          else await conn.unary((c) => c.deletePolicy.bind(c), { name, resourceVersion: rv });
          out(`${kind === 'links' ? 'link' : kind === 'agents' ? 'agent' : 'policy'}/${name} deleted\n`);
        }
        return EXIT.OK;
      }
      case 'watch':
        await watch(conn, kindOf(args[0]), selector, format);
        return EXIT.OK;
      case 'console':
        if (args[0] === undefined) throw new CliError('console needs a LINK name', EXIT.USAGE);
        await consoleAttach(conn, args[0], values.device ?? '', values.write ?? false);
        return EXIT.OK;
      case 'cordon':
      case 'uncordon':
      case 'drain': {
        const name = args[0];
        if (name === undefined) throw new CliError(`${cmd} needs an AGENT name`, EXIT.USAGE);
        if (cmd === 'drain') {
          const r = await conn.unary((c) => c.drainAgent.bind(c), { name });
          out(`agent/${name} drained${r.links.length > 0 ? `; removing links in order: ${r.links.join(', ')}` : ''}\n`);
        } else {
          if (cmd === 'cordon') await conn.unary((c) => c.cordonAgent.bind(c), { name });
          else await conn.unary((c) => c.uncordonAgent.bind(c), { name });
          out(`agent/${name} ${cmd}ed\n`);
        }
        return EXIT.OK;
      }
      case 'status':
        return await status(conn);
      case 'adopt':
        return await adopt(conn, args, values['dry-run'] ?? false);
      default:
        throw new CliError(`unknown command "${cmd}"\n${USAGE}`, EXIT.USAGE);
    }
  } finally {
    conn.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`vopctl: ${err.message}\n`);
      process.exitCode = err.code;
    } else {
      process.stderr.write(
        `vopctl: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exitCode = EXIT.ERROR;
    }
  },
);
