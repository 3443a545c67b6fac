/**
 * TCP ends in a network namespace for the guest tests: node runs inside the namespace (busybox's
 * small nc, as a listener, kept only the first KiB from another busybox nc on this machine).
 * TCP_LISTEN prints what it received on stdout; TCP_SEND writes stdin to the address and waits
 * for the close.
 */
import { type ChildProcess, spawn } from 'node:child_process';

export const TCP_LISTEN = `const s=require('net').createServer(c=>{c.pipe(process.stdout);c.on('end',()=>s.close())});s.listen(+process.argv[1],()=>console.error('listening'))`;
export const TCP_SEND = `const ch=[];process.stdin.on('data',d=>ch.push(d)).on('end',()=>{const c=require('net').connect(+process.argv[2],process.argv[1],()=>c.end(Buffer.concat(ch)));c.on('close',()=>process.exit(0))})`;

/** A command in the namespace, its stdout collected as bytes. */
export function nsSpawn(
  ns: string,
  args: readonly string[],
  stdin?: Buffer,
): { done: Promise<Buffer>; proc: ChildProcess; stderr: () => string } {
  const proc = spawn('ip', ['netns', 'exec', ns, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let err = '';
  proc.stdout?.on('data', (c: Buffer) => chunks.push(c));
  proc.stderr?.setEncoding('utf8').on('data', (c: string) => (err += c));
  const done = new Promise<Buffer>((resolve, reject) => {
    proc.once('exit', (code) =>
      code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`${args.join(' ')}: exit ${code}: ${err}`)),
    );
  });
  if (stdin) proc.stdin?.end(stdin);
  else proc.stdin?.end();
  return { done, proc, stderr: () => err };
}
