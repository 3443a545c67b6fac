/** The vop release version, read from package.json once. */
import { readFileSync } from 'node:fs';

import { repoPath } from './paths';

export const VOP_VERSION: string = (JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as { version: string })
  .version;
