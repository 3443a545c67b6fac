/**
 * Test-only hooks, off unless VOP_AGENT_TEST_HOOKS=1: SIGUSR2 blocks the JavaScript
 * event loop for VOP_AGENT_TEST_BLOCK_MS (default 3000) so tests can show that the
 * native data plane keeps moving while the agent's JavaScript is busy.
 */
import type { Logger } from '../../lib/src/logger';

export function installTestHooks(env: NodeJS.ProcessEnv, log: Logger): void {
  if (env.VOP_AGENT_TEST_HOOKS !== '1') return;
  const ms = Number(env.VOP_AGENT_TEST_BLOCK_MS ?? 3000);
  log.warn({ blockMs: ms }, 'test hooks enabled: SIGUSR2 blocks the event loop');
  process.on('SIGUSR2', () => {
    log.info({ ms }, 'blocking the event loop (test hook)');
    const until = Date.now() + ms;
    while (Date.now() < until) {
      // busy: nothing else in JavaScript runs
    }
    log.info('event loop unblocked (test hook)');
  });
}
